"""An in-memory GitLab served through httpx.MockTransport: the real client stack talks to it.

Response bodies start from the GitLab API examples in tests/fixtures/gitlab (copied from the
gitlab4j corpus, see SOURCES.md there) and override the fields each scenario needs. The model
keeps a first-parent history per project and answers the REST and GraphQL calls the GitLab
source makes, counting requests.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "gitlab"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
GQL_PAGE = 100  # nested connection size the GitLab source asks for


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


_counter = itertools.count(1)


def sha(seed: str) -> str:
    return hashlib.sha1(f"{seed}-{next(_counter)}".encode()).hexdigest()


@dataclass(frozen=True)
class User:
    username: str
    name: str = ""
    email: str = ""
    bot: bool = False

    def gql(self) -> dict[str, Any]:
        return {"username": self.username, "name": self.name or self.username, "bot": self.bot}

    def rest(self) -> dict[str, Any]:
        return {
            "id": abs(hash(self.username)) % 10_000,
            "username": self.username,
            "name": self.name or self.username,
            "state": "active",
        }


@dataclass
class Commit:
    sha: str
    author: User
    committer: User
    message: str
    at: datetime
    parents: list[str] = field(default_factory=list)

    def gql(self) -> dict[str, Any]:
        return {
            "sha": self.sha,
            "message": self.message,
            "authorName": self.author.name or self.author.username,
            "authorEmail": self.author.email or f"{self.author.username}@example.com",
            "committerName": self.committer.name or self.committer.username,
            "committerEmail": self.committer.email or f"{self.committer.username}@example.com",
            "authoredDate": iso(self.at),
            "committedDate": iso(self.at),
            "author": {"username": self.author.username},
        }

    def rest(self) -> dict[str, Any]:
        return {
            "id": self.sha,
            "short_id": self.sha[:8],
            "title": self.message.split("\n", 1)[0],
            "message": self.message,
            "author_name": self.author.name or self.author.username,
            "author_email": self.author.email or f"{self.author.username}@example.com",
            "committer_name": self.committer.name or self.committer.username,
            "committer_email": self.committer.email or f"{self.committer.username}@example.com",
            "authored_date": iso(self.at),
            "committed_date": iso(self.at),
            "parent_ids": self.parents,
        }


@dataclass
class MR:
    iid: int
    title: str
    author: User
    commits: list[Commit]
    merged_at: datetime
    merge_user: User
    target: str = "main"
    description: str = "Risk: low\nTesting: CI\nRollback: revert"
    merge_commit_sha: str | None = None
    squash_commit_sha: str | None = None
    approvals: list[tuple[User, datetime]] = field(default_factory=list)
    unapprovals: list[tuple[User, datetime]] = field(default_factory=list)
    pushes: list[tuple[User, datetime, list[Commit]]] = field(default_factory=list)
    versions: list[tuple[int, datetime, str, list[Commit]]] = field(default_factory=list)
    approved_by: list[User] = field(default_factory=list)
    pipeline: dict[str, Any] | None = None
    labels: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=lambda: ["app/main.py"])

    def node(self) -> dict[str, Any]:
        base = fixture("merge-request.json")
        notes = (
            [
                {
                    "system": True,
                    "body": "approved this merge request",
                    "createdAt": iso(t),
                    "author": u.gql(),
                }
                for u, t in self.approvals
            ]
            + [
                {
                    "system": True,
                    "body": "unapproved this merge request",
                    "createdAt": iso(t),
                    "author": u.gql(),
                }
                for u, t in self.unapprovals
            ]
            + [
                {
                    "system": True,
                    "body": f"added {len(cs)} commit{'s' if len(cs) > 1 else ''}\n\n<ul>"
                    + "".join(f"<li>{c.sha[:8]} - {c.message}</li>" for c in cs)
                    + "</ul>",
                    "createdAt": iso(t),
                    "author": u.gql(),
                }
                for u, t, cs in self.pushes
            ]
        )
        notes.sort(key=lambda n: str(n["createdAt"]))
        head = self.commits[-1].sha
        return {
            "iid": str(self.iid),
            "title": self.title,
            "description": self.description,
            "webUrl": f"https://gitlab.example.com/acme/app/-/merge_requests/{self.iid}",
            "createdAt": base["created_at"],
            "mergedAt": iso(self.merged_at),
            "sourceBranch": f"feature-{self.iid}",
            "targetBranch": self.target,
            "squash": self.squash_commit_sha is not None,
            "mergeCommitSha": self.merge_commit_sha,
            "squashCommitSha": self.squash_commit_sha,
            "diffHeadSha": head,
            "author": self.author.gql(),
            "mergeUser": self.merge_user.gql(),
            "labels": {"nodes": [{"title": x} for x in self.labels]},
            "approvedBy": {"nodes": [u.gql() for u in self.approved_by]},
            "commits": {
                "pageInfo": {"hasNextPage": False},
                "nodes": [c.gql() for c in self.commits],
            },
            "diffStats": [{"path": f, "additions": 3, "deletions": 1} for f in self.files],
            "diffStatsSummary": {"fileCount": len(self.files)},
            "headPipeline": self.pipeline,
            "notes": {
                "pageInfo": {"hasNextPage": len(notes) > GQL_PAGE},
                "nodes": notes[:GQL_PAGE],
            },
        }


@dataclass
class Project:
    id: int
    path: str
    history: list[Commit] = field(default_factory=list)  # first-parent, oldest first
    mrs: list[MR] = field(default_factory=list)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    author_approval: bool = False
    committers_approval_disabled: bool = True
    reset_on_push: bool = True
    approvals_required: int = 1
    pipeline_must_succeed: bool = True
    clock: datetime = T0

    def tick(self, minutes: int = 7) -> datetime:
        self.clock += timedelta(minutes=minutes)
        return self.clock

    # --- building scenarios ---------------------------------------------------------------

    def initial(self, who: User) -> Commit:
        c = Commit(sha("init"), who, who, "initial commit", self.tick())
        self.history.append(c)
        return c

    def branch_commits(self, who: User, n: int = 1, committer: User | None = None) -> list[Commit]:
        base = self.history[-1].sha if self.history else None
        out: list[Commit] = []
        for k in range(n):
            parent = out[-1].sha if out else base
            out.append(
                Commit(
                    sha(f"c{k}"),
                    who,
                    committer or who,
                    f"work {k}",
                    self.tick(),
                    [parent] if parent else [],
                )
            )
        return out

    def merge(
        self,
        iid: int,
        author: User,
        *,
        commits: list[Commit] | None = None,
        approvers: list[User] = (),  # type: ignore[assignment]
        method: str = "merge",
        merger: User | None = None,
        pipeline: str = "success",
        **kw: Any,
    ) -> MR:
        cs = commits or self.branch_commits(author)
        for u in approvers:
            kw.setdefault("approvals", []).append((u, self.tick(2)))
        kw.setdefault("approved_by", list(approvers))
        merged_at = self.tick()
        mr = MR(iid, f"Change {iid}", author, cs, merged_at, merger or author, **kw)
        head = cs[-1]
        if method == "merge":
            m = Commit(
                sha("m"),
                mr.merge_user,
                mr.merge_user,
                f"Merge branch '{iid}' into 'main'\n\nSee merge request acme/app!{iid}",
                merged_at,
                [self.history[-1].sha, head.sha],
            )
            mr.merge_commit_sha = m.sha
            self.history.append(m)
        elif method == "squash":
            s = Commit(
                sha("s"), author, mr.merge_user, f"Change {iid}", merged_at, [self.history[-1].sha]
            )
            mr.squash_commit_sha = s.sha
            self.history.append(s)
        else:  # fast-forward: the MR's own commits land
            self.history.extend(cs)
        fin = pipeline and {
            "iid": str(iid),
            "sha": head.sha,
            "status": pipeline.upper(),
            "startedAt": iso(merged_at - timedelta(minutes=5)),
            "finishedAt": iso(merged_at - timedelta(minutes=1)),
            "jobs": {
                "nodes": [
                    {
                        "name": "test",
                        "status": pipeline.upper(),
                        "startedAt": iso(merged_at - timedelta(minutes=5)),
                        "finishedAt": iso(merged_at - timedelta(minutes=1)),
                        "allowFailure": False,
                    }
                ]
            },
        }
        mr.pipeline = fin or None
        self.mrs.append(mr)
        return mr

    def direct_push(self, who: User, message: str = "hotfix") -> Commit:
        c = Commit(sha("d"), who, who, message, self.tick(), [self.history[-1].sha])
        self.history.append(c)
        return c

    def deploy(self, env: str, commit: str, who: User, approver: User | None = None) -> None:
        d = copy.deepcopy(fixture("deployment.json"))
        at = self.tick()
        d.update(
            {
                "id": len(self.deployments) + 1000,
                "iid": len(self.deployments) + 1,
                "sha": commit,
                "status": "success",
                "created_at": iso(at),
                "updated_at": iso(at + timedelta(minutes=2)),
                "user": who.rest(),
            }
        )
        d["environment"] = {**d["environment"], "name": env}
        d["deployable"] = {
            **d["deployable"],
            "status": "success",
            "finished_at": iso(at + timedelta(minutes=2)),
        }
        if approver is not None:
            d["approvals"] = [
                {
                    "user": approver.rest(),
                    "status": "approved",
                    "created_at": iso(at - timedelta(minutes=1)),
                    "comment": "ok",
                }
            ]
        self.deployments.append(d)


class FakeGitLab:
    """Routes requests to the model; counts them; optional failures injected per path."""

    def __init__(self, *, token: str = "glpat-test") -> None:
        self.projects: dict[str, Project] = {}
        self.token = token
        self.requests: list[str] = []
        self.fail_next: dict[str, list[int]] = {}
        self.page_size = 100

    def project(self, path: str = "acme/app") -> Project:
        p = Project(id=len(self.projects) + 1, path=path)
        self.projects[path] = p
        return p

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # --- routing ----------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        # raw_path keeps %2F inside project paths ("acme%2Fapp") as GitLab sees it
        path = request.url.raw_path.decode().split("?", 1)[0]
        self.requests.append(f"{request.method} {path}")
        for prefix, codes in self.fail_next.items():
            if path.startswith(prefix) and codes:
                return httpx.Response(codes.pop(0), json={"message": "injected"})
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return httpx.Response(401, json={"message": "401 Unauthorized"})
        if path == "/api/graphql":
            return self._graphql(json.loads(request.content))
        prefix = "/api/v4/"
        if not path.startswith(prefix):
            return httpx.Response(404, text="<html>not found</html>")
        parts = path[len(prefix) :].split("/")
        q = dict(request.url.params)
        if parts[0] != "projects" or len(parts) < 2:
            return httpx.Response(404, json={"message": "404 Not Found"})
        ident = urllib.parse.unquote(parts[1])
        proj = self.projects.get(ident) or next(
            (p for p in self.projects.values() if str(p.id) == ident), None
        )
        if proj is None:
            return httpx.Response(404, json={"message": "404 Project Not Found"})
        rest = parts[2:]
        if not rest:
            return self._json(
                {
                    "id": proj.id,
                    "path_with_namespace": proj.path,
                    "default_branch": "main",
                    "only_allow_merge_if_pipeline_succeeds": proj.pipeline_must_succeed,
                }
            )
        if rest == ["protected_branches"]:
            pb = fixture("protected-branch.json")
            pb.update(
                {
                    "name": "main",
                    "push_access_levels": [{"access_level": 0}],
                    "allow_force_push": False,
                }
            )
            return self._json([pb])
        if rest == ["approvals"]:
            cfg = fixture("project-approvals-config.json")
            cfg.update(
                {
                    "approvals_before_merge": proj.approvals_required,
                    "merge_requests_author_approval": proj.author_approval,
                    "merge_requests_disable_committers_approval": proj.committers_approval_disabled,
                    "reset_approvals_on_push": proj.reset_on_push,
                }
            )
            return self._json(cfg)
        if rest == ["approval_rules"]:
            rule = fixture("approval-rule.json")
            rule.update({"approvals_required": proj.approvals_required, "protected_branches": []})
            return self._json([rule])
        if rest[:2] == ["repository", "commits"] and len(rest) == 2:
            return self._history(proj, q, request)
        if rest[:2] == ["repository", "commits"] and rest[-1] == "diff":
            return self._json(
                [
                    {
                        "new_path": "hotfix.txt",
                        "old_path": "hotfix.txt",
                        "new_file": False,
                        "renamed_file": False,
                        "deleted_file": False,
                    }
                ]
            )
        if rest[0] == "merge_requests" and rest[2] in ("commits", "notes"):
            mr = next(m for m in proj.mrs if m.iid == int(rest[1]))
            if rest[2] == "commits":
                return self._paged([c.rest() for c in mr.commits], q, request)
            rest_notes = [
                {
                    "system": n["system"],
                    "body": n["body"],
                    "created_at": n["createdAt"],
                    "author": n["author"],
                }
                for n in mr.node()["notes"]["nodes"]
            ]
            return self._paged(rest_notes, q, request)
        if rest[0] == "merge_requests" and rest[2] == "versions":
            mr = next(m for m in proj.mrs if m.iid == int(rest[1]))
            if len(rest) == 3:
                return self._json(
                    [
                        {
                            "id": vid,
                            "head_commit_sha": head,
                            "created_at": iso(t),
                            "state": "collected",
                        }
                        for vid, t, head, _ in reversed(mr.versions)
                    ]
                )
            vid = int(rest[3])
            for v, t, head, cs in mr.versions:
                if v == vid:
                    return self._json(
                        {
                            "id": v,
                            "head_commit_sha": head,
                            "created_at": iso(t),
                            "commits": [c.rest() for c in cs],
                        }
                    )
        if rest == ["deployments"]:
            items = proj.deployments
            after = q.get("updated_after")
            if after:
                items = [d for d in items if d["updated_at"] > after]
            return self._paged(items, q, request)
        return httpx.Response(404, json={"message": "404 Not Found"})

    def _json(self, data: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.Response(200, json=data, headers=headers or {})

    def _paged(self, items: list[Any], q: dict[str, str], request: httpx.Request) -> httpx.Response:
        per = min(int(q.get("per_page", 20)), self.page_size)
        page = int(q.get("page", 1))
        chunk = items[(page - 1) * per : page * per]
        headers = {}
        if page * per < len(items):
            nq = {**q, "page": str(page + 1), "per_page": str(per)}
            url = request.url.copy_with(query=urllib.parse.urlencode(nq).encode())
            headers["link"] = f'<{url}>; rel="next"'
        return self._json(chunk, headers)

    def _history(self, proj: Project, q: dict[str, str], request: httpx.Request) -> httpx.Response:
        ref = q.get("ref_name", "main")
        commits = list(reversed(proj.history))  # newest first, as GitLab answers
        if ".." in ref:
            start = ref.split("..", 1)[0]
            idx = next((i for i, c in enumerate(commits) if c.sha == start), len(commits))
            commits = commits[:idx]
        return self._paged([c.rest() for c in commits], q, request)

    def _graphql(self, body: dict[str, Any]) -> httpx.Response:
        v = body["variables"]
        proj = self.projects.get(v["fullPath"])
        if proj is None:
            return self._json({"data": {"project": None}})
        mrs = sorted(
            (m for m in proj.mrs if m.target in (v.get("branches") or [m.target])),
            key=lambda m: m.merged_at,
        )
        if v.get("mergedAfter"):
            cut = datetime.fromisoformat(v["mergedAfter"])
            mrs = [m for m in mrs if m.merged_at >= cut]
        start = int(v["after"]) if v.get("after") else 0
        first = int(v.get("first") or 50)
        page = mrs[start : start + first]
        more = start + first < len(mrs)
        return self._json(
            {
                "data": {
                    "project": {
                        "mergeRequests": {
                            "pageInfo": {
                                "hasNextPage": more,
                                "endCursor": str(start + first) if more else None,
                            },
                            "nodes": [m.node() for m in page],
                        }
                    }
                }
            }
        )
