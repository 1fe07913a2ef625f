"""GitLab source: merged MRs, approvals with their real times, pipelines, protection, deployments.

Judges nothing; maps GitLab's payloads into the same evidence the GitHub and git sources give:

* **Changes.** The first-parent history of each controlled branch (REST, ``first_parent=true``)
  is attributed to merged MRs by merge commit, squash commit, or (fast-forward/rebase merges)
  the MR's own commits; anything else is a direct push. An MR "merged as part of another MR"
  has no landing of its own: it is listed in the landing change's ``absorbed`` and shares its
  verdict, never counted twice.
* **Approvals** come from GitLab's activity notes ("approved this merge request", with the real
  time), checked against the approvers still recorded at merge (an approval GitLab reset on a
  push, or that was revoked, is a dismissal). The commit an approval covers is the MR **version**
  head at that moment — versions record real push times, so "approved before the last push"
  needs no guessing. Versions are fetched (REST) only for MRs with pushes after creation.
* **Pushers** are participants (push notes); so are the authors of commits later rebased away
  (from earlier versions).
* **Pipelines** of the MR head become checks; **protected branches** and the project's approval
  settings become a protection snapshot (re-taken at every collect, so they are known over time);
  **deployments** (and their approvals) become deployment evidence.

GraphQL batches the MR evidence (one request per 50 MRs); REST serves configuration, history and
deployments. Rate limits and retries are the shared HTTP client's.
"""

from __future__ import annotations

import fnmatch
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec

from changeproof.errors import SourceError
from changeproof.evidence import (
    Actor,
    Change,
    CheckResult,
    CommitInfo,
    Coverage,
    Deployment,
    DeploymentApproval,
    FileChange,
    ProtectionRule,
    ProtectionSnapshot,
    Provenance,
    Review,
    TimelineEvent,
)
from changeproof.locker import Locker, Signer
from changeproof.settings import Settings
from changeproof.sources.gitlab.queries import MERGED_MRS
from changeproof.sources.http import HttpClient
from changeproof.store import Store, Writer

COAUTHOR_RE = re.compile(r"^Co-authored-by:\s*(.+?)\s*<([^>]+)>\s*$", re.M | re.I)
SHORT_SHA_RE = re.compile(r"\b([0-9a-f]{7,40})\b")
TICKET_RE = re.compile(r"\b[A-Z][A-Z0-9]+-\d+\b")
PIPELINE_STATUS = {
    "success": "success",
    "failed": "failure",
    "canceled": "cancelled",
    "canceling": "cancelled",
    "skipped": "skipped",
    "manual": "action_required",
}
DEPLOY_STATUS = {
    "success": "success",
    "failed": "failure",
    "canceled": "failure",
    "running": "in_progress",
    "created": "queued",
    "blocked": "queued",
}
PAGE = 50


def _dt(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _user(u: dict[str, Any] | None) -> Actor | None:
    if not u or not (u.get("username") or u.get("name")):
        return None
    login = u.get("username")
    name = login or ""
    # GitLab project/group access tokens act as users named project_<id>_bot…/group_<id>_bot…
    bot = (
        bool(u.get("bot"))
        or name.endswith("[bot]")
        or (name.startswith(("project_", "group_")) and "_bot" in name)
    )
    return Actor(login=login, name=u.get("name"), type="bot" if bot else "user")


def gitlab_error_mapper(api_url: str) -> Callable[[httpx.Response, str], SourceError | None]:
    def mapper(resp: httpx.Response, url: str) -> SourceError | None:
        if resp.status_code == 401:
            return SourceError(
                f"GitLab at {api_url} rejected the token (401 Unauthorized)",
                expected="a personal, group or project access token with the read_api scope",
                hint="create one under User settings → Access tokens with scope read_api and "
                "pass it in CHANGEPROOF_GITLAB_TOKEN (or the variable named by --token-env)",
            )
        if resp.status_code == 403:
            return SourceError(
                f"GitLab refused {url} (403 Forbidden): the token lacks a scope or access",
                expected="the read_api scope and at least Reporter access to the project",
                hint="grant read_api (and Reporter or higher on the project), then collect again",
            )
        if resp.status_code == 404:
            return SourceError(
                f"GitLab has no {url} (404): the project does not exist or the token cannot see it",
                expected="a project path like group/subgroup/project that the token can read",
                hint="check the path in [gitlab] projects or --project, and the token's access",
            )
        return None

    return mapper


@dataclass
class ProjectResult:
    project: str
    branches: list[str]
    changes: int = 0
    direct_pushes: int = 0
    merge_requests: int = 0
    absorbed: int = 0
    deployments: int = 0
    versions_fetched: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class _MR:
    node: dict[str, Any]
    raw_sha: str
    commit_shas: set[str]

    @property
    def iid(self) -> int:
        return int(self.node["iid"])


class GitLabSource:
    """Collect GitLab projects into the store. One instance per run; thread-safe client."""

    name = "gitlab"
    capabilities = frozenset(
        {"history", "attribution", "reviews", "checks", "files", "protection", "deployments"}
    )

    def __init__(self, client: HttpClient, settings: Settings, *, graphql_url: str) -> None:
        self.client = client
        self.settings = settings
        self.graphql_url = graphql_url

    # --- helpers ---------------------------------------------------------------------------

    def _get(self, path: str, **params: Any) -> tuple[Any, bytes]:
        resp = self.client.request("GET", path, params=params or None, kind="rest")
        return resp.json(), resp.content

    def _pages(self, path: str, **params: Any) -> list[tuple[list[Any], bytes]]:
        out = []
        for resp, items in self.client.paginate(path, params=params, per_page=100):
            out.append((items, resp.content))
        return out

    # --- collection ------------------------------------------------------------------------

    def collect_project(
        self,
        store: Store,
        signer: Signer,
        path: str,
        *,
        since: datetime | None,
        now: datetime,
        progress: Callable[[int], None] | None = None,
    ) -> ProjectResult:
        enc = urllib.parse.quote(path, safe="")
        project, _ = self._get(f"projects/{enc}")
        if not isinstance(project, dict) or "id" not in project:
            raise SourceError(
                f"GitLab's answer for project {path} is not a project",
                expected="a GitLab API (…/api/v4) answering GET /projects/:id",
                hint="check --api-url ends with /api/v4",
            )
        pid = project["id"]
        repo = str(project.get("path_with_namespace") or path)
        result = ProjectResult(project=repo, branches=[])
        protection, config_raw, unreadable = self._protection(pid, project)
        branches = self._controlled_branches(repo, project, protection)
        result.branches = branches
        if unreadable:
            result.notes.append(
                "approval settings not readable with this token/tier: "
                + ", ".join(unreadable)
                + " (judged from what is readable; CM-CFG-1 reports it)"
            )
        # one transaction per branch: another collector of this project waits for this one,
        # then starts from its cursors (PostgreSQL; see Store.hold)
        with store.hold("gitlab", repo):
            for branch in branches:
                with store.writer(Locker(signer)) as w:
                    self._collect_branch(
                        store, w, repo, pid, branch, project, protection, config_raw, since, now,
                        result,
                    )  # fmt: skip
                if progress is not None:
                    progress(1)
            with store.writer(Locker(signer)) as w:
                result.deployments += self._deployments(store, w, repo, pid, now)
        return result

    def _controlled_branches(
        self, repo: str, project: dict[str, Any], protection: dict[str, Any]
    ) -> list[str]:
        names = {str(project.get("default_branch") or "main")}
        names.update(
            b["name"] for b in protection.get("protected_branches", []) if "*" not in b["name"]
        )
        return sorted(n for n in names if self.settings.is_controlled(repo, n))

    def _protection(
        self, pid: int, project: dict[str, Any]
    ) -> tuple[dict[str, Any], bytes, list[str]]:
        data: dict[str, Any] = {"project": project}
        raws: list[bytes] = []
        unreadable: list[str] = []
        for key, path in (
            ("protected_branches", f"projects/{pid}/protected_branches"),
            ("approvals", f"projects/{pid}/approvals"),
            ("approval_rules", f"projects/{pid}/approval_rules"),
        ):
            try:
                value, raw = self._get(path)
            except SourceError as exc:
                if "403" in exc.what or "404" in exc.what:
                    unreadable.append(key)
                    continue
                raise
            data[key] = value
            raws.append(raw)
        return data, b"\n".join(raws), unreadable

    def _snapshot(
        self, repo: str, branch: str, protection: dict[str, Any], raw_sha: str, now: datetime
    ) -> ProtectionSnapshot:
        project = protection["project"]
        approvals = protection.get("approvals") or {}
        rules = protection.get("approval_rules") or []
        pb = next(
            (
                b
                for b in protection.get("protected_branches", [])
                if fnmatch.fnmatchcase(branch, b["name"])
            ),
            None,
        )
        readable = "approvals" in protection and "protected_branches" in protection
        layers: tuple[ProtectionRule, ...] = ()
        if pb is not None:
            # rules apply to this branch when scoped to it, or to every branch (no scope)
            required = int(approvals.get("approvals_before_merge") or 0)
            for rule in rules:
                scoped = [b.get("name") for b in rule.get("protected_branches") or []]
                if not scoped or any(fnmatch.fnmatchcase(branch, s) for s in scoped if s):
                    required = max(required, int(rule.get("approvals_required") or 0))
            push_levels = [lvl.get("access_level") for lvl in pb.get("push_access_levels", [])]
            requires_pr = bool(push_levels) and all(lvl == 0 for lvl in push_levels)
            checks: tuple[tuple[str, str | None], ...] = ()
            if project.get("only_allow_merge_if_pipeline_succeeds"):
                checks = (("pipeline", "gitlab"),)
            layers = (
                ProtectionRule(
                    layer="gitlab",
                    requires_pr=requires_pr,
                    required_approvals=required,
                    dismiss_stale=bool(approvals.get("reset_approvals_on_push")),
                    require_code_owner_review=bool(pb.get("code_owner_approval_required")),
                    required_checks=checks,
                    allow_force_push=bool(pb.get("allow_force_push")),
                    allow_deletion=False,
                    author_approval_allowed=approvals.get("merge_requests_author_approval"),
                    committer_approval_allowed=(
                        None
                        if "merge_requests_disable_committers_approval" not in approvals
                        else not approvals["merge_requests_disable_committers_approval"]
                    ),
                    reset_approvals_on_push=approvals.get("reset_approvals_on_push"),
                    overriding_approvers_allowed=(
                        None
                        if "disable_overriding_approvers_per_merge_request" not in approvals
                        else not approvals["disable_overriding_approvers_per_merge_request"]
                    ),
                ),
            )
        return ProtectionSnapshot(
            repo=repo,
            branch=branch,
            layers=layers,
            readable=readable,
            provenance=Provenance(
                source="gitlab", occurred_at=now, collected_at=now, raw_sha256=raw_sha
            ),
        )

    def _collect_branch(
        self,
        store: Store,
        w: Writer,
        repo: str,
        pid: int,
        branch: str,
        project: dict[str, Any],
        protection: dict[str, Any],
        config_raw: bytes,
        since: datetime | None,
        now: datetime,
        result: ProjectResult,
    ) -> None:
        cfg_sha = w.put_raw(config_raw or b"{}", kind="gitlab.config", source="gitlab")
        w.put(self._snapshot(repo, branch, protection, cfg_sha, now))
        scope = f"{repo}:{branch}"
        cursor = _Cursor.load(store.cursor("gitlab", scope))
        merged_after = cursor.merged_at or since
        mrs = self._merged_mrs(w, repo, branch, merged_after)
        result.merge_requests += len(mrs)
        history, hist_raw = self._history(pid, branch, cursor.tip, since)
        hist_sha = w.put_raw(hist_raw or b"[]", kind="gitlab.history", source="gitlab")
        by_merge: dict[str, _MR] = {}
        by_commit: dict[str, _MR] = {}
        for each in mrs.values():
            for key in ("mergeCommitSha", "squashCommitSha"):
                if each.node.get(key):
                    by_merge[each.node[key]] = each
            for sha in each.commit_shas:
                by_commit.setdefault(sha, each)
        # pass 1: attribute every first-parent commit to exactly one MR, or to nobody
        plan: list[tuple[list[dict[str, Any]], _MR | None]] = []
        landed: set[int] = set()
        i = 0
        while i < len(history):
            c = history[i]
            mr: _MR | None = by_merge.get(c["id"])
            group = [c]
            if mr is None and c["id"] in by_commit:
                mr = by_commit[c["id"]]
                while (
                    i + len(group) < len(history)
                    and by_commit.get(history[i + len(group)]["id"]) is mr
                ):
                    group.append(history[i + len(group)])
            i += len(group)
            if mr is not None and mr.iid in landed:
                mr = None  # an MR lands once; a second landing is not that MR
            if mr is not None:
                landed.add(mr.iid)
            plan.append((group, mr))
        # MRs merged as part of another MR: their commits landed through that MR
        absorbed: dict[int, list[str]] = {}
        for cand in mrs.values():
            if cand.iid in landed or not cand.commit_shas:
                continue
            host = next(
                (
                    o
                    for o in mrs.values()
                    if o.iid in landed and o is not cand and cand.commit_shas <= o.commit_shas
                ),
                None,
            )
            if host is not None:
                absorbed.setdefault(host.iid, []).append(f"{repo}!{cand.iid}")
                result.absorbed += 1
        # pass 2: the evidence
        seq0 = cursor.seq
        for n, (group, landing) in enumerate(plan):
            if landing is not None:
                change = self._mr_change(repo, branch, landing, group, pid, now, result)
                if landing.iid in absorbed:
                    change = msgspec.structs.replace(
                        change, absorbed=tuple(sorted(absorbed[landing.iid]))
                    )
            else:
                change = self._direct_push(repo, branch, group, pid, hist_sha, now)
                if change.change_type == "direct_push":
                    result.direct_pushes += 1
            w.put(change, seq=(seq0 + n) * 1000)
            result.changes += 1
        n = len(plan)
        tip = history[-1]["id"] if history else cursor.tip
        merge_times = [t for m in mrs.values() if (t := _dt(m.node.get("mergedAt"))) is not None]
        last_merge = max(merge_times) if merge_times else cursor.merged_at
        w.set_cursor(
            "gitlab",
            scope,
            _Cursor(tip=tip, merged_at=last_merge, seq=seq0 + n).dump(),
        )
        w.put(
            Coverage(
                id=f"gitlab:{repo}:{branch}:{tip}",
                source="gitlab",
                repo=repo,
                branch=branch,
                start=since,
                end=now,
                complete=True,
                provenance=Provenance(
                    source="gitlab", occurred_at=now, collected_at=now, raw_sha256=hist_sha
                ),
            )
        )

    # --- GraphQL: merged MRs -----------------------------------------------------------------

    def _merged_mrs(
        self, w: Writer, repo: str, branch: str, merged_after: datetime | None
    ) -> dict[int, _MR]:
        out: dict[int, _MR] = {}
        after: str | None = None
        while True:
            variables: dict[str, Any] = {
                "fullPath": repo,
                "branches": [branch],
                "after": after,
                "first": PAGE,
                "mergedAfter": (merged_after - timedelta(seconds=1)).isoformat()
                if merged_after
                else None,
            }
            data = self.client.graphql(self.graphql_url, MERGED_MRS, variables, kind="graphql")
            if not isinstance(data, dict) or data.get("errors"):
                msgs = (
                    [e.get("message", "?") for e in (data or {}).get("errors", [])]
                    if isinstance(data, dict)
                    else []
                )
                raise SourceError(
                    f"GitLab GraphQL refused the merged-MR query for {repo}: "
                    + ("; ".join(msgs) or "no data"),
                    expected="GitLab 15.8 or newer with GraphQL enabled",
                    hint="check --api-url and the token's read_api scope",
                )
            conn = ((data.get("data") or {}).get("project") or {}).get("mergeRequests")
            if conn is None:
                raise SourceError(
                    f"GitLab GraphQL returned no project {repo}",
                    hint="check the project path and the token's access",
                )
            raw = msgspec.json.encode(data)
            raw_sha = w.put_raw(raw, kind="gitlab.graphql.merge_requests", source="gitlab")
            for node in conn.get("nodes") or []:
                shas = {c["sha"] for c in ((node.get("commits") or {}).get("nodes") or [])}
                out[int(node["iid"])] = _MR(node, raw_sha, shas)
            info = conn.get("pageInfo") or {}
            if not info.get("hasNextPage"):
                return out
            after = info.get("endCursor")

    # --- REST: history, versions, deployments ------------------------------------------------

    def _history(
        self, pid: int, branch: str, tip: str | None, since: datetime | None
    ) -> tuple[list[dict[str, Any]], bytes]:
        params: dict[str, Any] = {
            "first_parent": "true",
            "ref_name": f"{tip}..{branch}" if tip else branch,
        }
        if since and not tip:
            params["since"] = since.isoformat()
        commits: list[dict[str, Any]] = []
        raws: list[bytes] = []
        for items, raw in self._pages(f"projects/{pid}/repository/commits", **params):
            commits.extend(items)
            raws.append(raw)
        commits.reverse()  # oldest first
        return commits, b"\n".join(raws)

    def _versions(self, pid: int, iid: int, result: ProjectResult) -> list[dict[str, Any]]:
        result.versions_fetched += 1
        value, _ = self._get(f"projects/{pid}/merge_requests/{iid}/versions")
        return sorted(value or [], key=lambda v: v.get("created_at") or "")

    def _version_commits(self, pid: int, iid: int, vid: int) -> list[dict[str, Any]]:
        value, _ = self._get(f"projects/{pid}/merge_requests/{iid}/versions/{vid}")
        return list((value or {}).get("commits") or [])

    def _deployments(self, store: Store, w: Writer, repo: str, pid: int, now: datetime) -> int:
        scope = f"{repo}:deployments"
        cursor = store.cursor("gitlab", scope)
        params: dict[str, Any] = {"order_by": "updated_at", "sort": "asc"}
        if cursor:
            params["updated_after"] = cursor
        count = 0
        last = cursor
        for items, raw in self._pages(f"projects/{pid}/deployments", **params):
            raw_sha = w.put_raw(raw, kind="gitlab.deployments", source="gitlab")
            for d in items:
                env = (d.get("environment") or {}).get("name")
                started = _dt(d.get("created_at"))
                if not env or not d.get("sha") or started is None:
                    continue
                deployable = d.get("deployable") or {}
                status = DEPLOY_STATUS.get(
                    str(d.get("status") or deployable.get("status")), "queued"
                )
                prov = Provenance(
                    source="gitlab",
                    occurred_at=started,
                    collected_at=now,
                    raw_sha256=raw_sha,
                    url=(d.get("environment") or {}).get("external_url"),
                )
                w.put(
                    Deployment(
                        id=f"gitlab:{repo}:{d['id']}",
                        repo=repo,
                        environment=env,
                        commit_sha=d["sha"],
                        status=status,  # type: ignore[arg-type]
                        started_at=started,
                        finished_at=_dt(deployable.get("finished_at")),
                        actor=_user(d.get("user")),
                        system="gitlab",
                        provenance=prov,
                    )
                )
                for k, ap in enumerate(d.get("approvals") or []):
                    approver = _user(ap.get("user"))
                    at = _dt(ap.get("created_at"))
                    if approver is None or at is None:
                        continue
                    w.put(
                        DeploymentApproval(
                            id=f"gitlab:{repo}:{d['id']}:{k}",
                            repo=repo,
                            environment=env,
                            commit_sha=d["sha"],
                            approver=approver,
                            approved_at=at,
                            state="rejected" if ap.get("status") == "rejected" else "approved",
                            comment=ap.get("comment") or "",
                            provenance=prov,
                        )
                    )
                count += 1
                last = d.get("updated_at") or last
        if last:
            w.set_cursor("gitlab", scope, last)
        return count

    # --- mapping ------------------------------------------------------------------------------

    def _commit(self, c: dict[str, Any], *, rest: bool = False) -> CommitInfo:
        if rest:
            author = Actor(name=c.get("author_name") or None, email=c.get("author_email") or None)
            committer = Actor(
                name=c.get("committer_name") or None, email=c.get("committer_email") or None
            )
            authored, committed = _dt(c.get("authored_date")), _dt(c.get("committed_date"))
            sha, parents = c["id"], tuple(c.get("parent_ids") or ())
        else:
            login = (c.get("author") or {}).get("username")
            author = Actor(
                login=login, name=c.get("authorName") or None, email=c.get("authorEmail") or None
            )
            committer = Actor(
                name=c.get("committerName") or c.get("authorName") or None,
                email=c.get("committerEmail") or c.get("authorEmail") or None,
            )
            authored, committed = _dt(c.get("authoredDate")), _dt(c.get("committedDate"))
            sha, parents = c["sha"], ()
        msg = c.get("message") or ""
        return CommitInfo(
            sha=sha,
            parents=parents,
            author=author,
            committer=committer,
            authored_at=authored or datetime(1970, 1, 1, tzinfo=UTC),
            committed_at=committed or authored or datetime(1970, 1, 1, tzinfo=UTC),
            message=msg,
            co_authors=tuple(Actor(name=n, email=e) for n, e in COAUTHOR_RE.findall(msg)),
        )

    def _mr_change(
        self,
        repo: str,
        branch: str,
        mr: _MR,
        group: list[dict[str, Any]],
        pid: int,
        now: datetime,
        result: ProjectResult,
    ) -> Change:
        n = mr.node
        merged_at = _dt(n.get("mergedAt")) or _dt(group[-1].get("committed_date")) or now
        head = n.get("diffHeadSha")
        commits = [self._commit(c) for c in ((n.get("commits") or {}).get("nodes") or [])]
        if ((n.get("commits") or {}).get("pageInfo") or {}).get("hasNextPage"):
            # more than one GraphQL page of commits: take them all from REST, never truncate
            commits = [
                self._commit(c, rest=True)
                for items, _ in self._pages(f"projects/{pid}/merge_requests/{mr.iid}/commits")
                for c in items
            ]
        notes = [x for x in ((n.get("notes") or {}).get("nodes") or []) if x.get("system")]
        if ((n.get("notes") or {}).get("pageInfo") or {}).get("hasNextPage"):
            notes = [
                {
                    "system": True,
                    "body": x.get("body"),
                    "createdAt": x.get("created_at"),
                    "author": x.get("author"),
                }
                for items, _ in self._pages(
                    f"projects/{pid}/merge_requests/{mr.iid}/notes", sort="asc"
                )
                for x in items
                if x.get("system")
            ]
        pushes = [x for x in notes if _is_push_note(x.get("body") or "")]
        timeline = [
            TimelineEvent(type="push", at=t, actor=_user(x.get("author")), detail=_first_line(x))
            for x in pushes
            if (t := _dt(x.get("createdAt"))) is not None
        ]
        versions: list[dict[str, Any]] = []
        if pushes:
            versions = self._versions(pid, mr.iid, result)
            current = {c.sha for c in commits}
            seen = set(current)
            for v in versions:
                vhead = v.get("head_commit_sha")
                if vhead and vhead not in current and v.get("id") is not None:
                    # a version whose head is gone was rebased away: its authors took part
                    for rc in self._version_commits(pid, mr.iid, int(v["id"])):
                        if rc.get("id") and rc["id"] not in seen:
                            seen.add(rc["id"])
                            commits.append(self._commit(rc, rest=True))
        reviews = _reviews(n, notes, versions, head, merged_at)
        timeline.extend(
            TimelineEvent(type="review_dismissed", at=r.dismissed_at, actor=r.dismissed_by)
            for r in reviews
            if r.dismissed_at is not None and r.dismissed_by is not None
        )
        pipeline = n.get("headPipeline")
        checks: list[CheckResult] = []
        if pipeline:
            sha = pipeline.get("sha") or head or group[-1]["id"]
            checks.append(
                CheckResult(
                    name="pipeline",
                    conclusion=PIPELINE_STATUS.get(str(pipeline.get("status")).lower(), "pending"),  # type: ignore[arg-type]
                    commit_sha=sha,
                    started_at=_dt(pipeline.get("startedAt")),
                    completed_at=_dt(pipeline.get("finishedAt")),
                    app="gitlab",
                    kind="pipeline",
                )
            )
            for job in (pipeline.get("jobs") or {}).get("nodes") or []:
                checks.append(
                    CheckResult(
                        name=str(job.get("name")),
                        conclusion=PIPELINE_STATUS.get(str(job.get("status")).lower(), "pending"),  # type: ignore[arg-type]
                        commit_sha=sha,
                        started_at=_dt(job.get("startedAt")),
                        completed_at=_dt(job.get("finishedAt")),
                        app="gitlab",
                        kind="job",
                    )
                )
        files = tuple(
            FileChange(path=f["path"], additions=f.get("additions"), deletions=f.get("deletions"))
            for f in n.get("diffStats") or []
        )
        total = (n.get("diffStatsSummary") or {}).get("fileCount")
        landed = tuple(c["id"] for c in group)
        if (
            n.get("mergeCommitSha") == group[-1]["id"]
            and len(group[-1].get("parent_ids") or ()) > 1
        ):
            ctype, method = "merge", "merge"
        elif n.get("squashCommitSha") == group[-1]["id"]:
            ctype, method = "squash", "squash"
        else:
            ctype, method = "rebase", "fast_forward"
        text = f"{n.get('title') or ''}\n{n.get('description') or ''}"
        return Change(
            repo=repo,
            branch=branch,
            number=mr.iid,
            change_type=ctype,  # type: ignore[arg-type]
            platform="gitlab",
            merged_at=merged_at,
            merge_sha=group[-1]["id"],
            landed_shas=landed,
            base_sha=(group[0].get("parent_ids") or [None])[0],
            head_sha=head,
            title=n.get("title") or "",
            body=n.get("description") or "",
            author=_user(n.get("author")),
            merged_by=_user(n.get("mergeUser")),
            merge_method=method,  # type: ignore[arg-type]
            head_ref=n.get("sourceBranch"),
            commits=tuple(commits),
            reviews=tuple(reviews),
            timeline=tuple(sorted(timeline, key=lambda e: e.at)),
            checks=tuple(checks),
            files=files,
            files_total=int(total) if total is not None else len(files),
            labels=tuple(x["title"] for x in ((n.get("labels") or {}).get("nodes") or [])),
            tickets=tuple(sorted(set(TICKET_RE.findall(text)))),
            provenance=Provenance(
                source="gitlab",
                occurred_at=merged_at,
                collected_at=now,
                raw_sha256=mr.raw_sha,
                url=n.get("webUrl"),
            ),
        )

    def _direct_push(
        self,
        repo: str,
        branch: str,
        group: list[dict[str, Any]],
        pid: int,
        hist_sha: str,
        now: datetime,
    ) -> Change:
        c = group[-1]
        info = self._commit(c, rest=True)
        files: tuple[FileChange, ...] | None
        try:
            diff, _ = self._get(f"projects/{pid}/repository/commits/{c['id']}/diff")
            files = tuple(
                FileChange(
                    path=d["new_path"],
                    previous_path=d.get("old_path") if d.get("renamed_file") else None,
                    status="renamed"
                    if d.get("renamed_file")
                    else "added"
                    if d.get("new_file")
                    else "deleted"
                    if d.get("deleted_file")
                    else "modified",
                )
                for d in diff or []
            )
        except SourceError:
            files = None
        ctype = "initial" if not c.get("parent_ids") else "direct_push"
        return Change(
            repo=repo,
            branch=branch,
            change_type=ctype,  # type: ignore[arg-type]
            platform="gitlab",
            merged_at=info.committed_at,
            merge_sha=c["id"],
            landed_shas=(c["id"],),
            base_sha=(c.get("parent_ids") or [None])[0],
            title=(c.get("title") or info.message.split("\n", 1)[0]),
            body=info.message,
            author=info.author,
            merged_by=info.committer,
            commits=(info,),
            reviews=None,
            files=files,
            files_total=len(files) if files is not None else None,
            provenance=Provenance(
                source="gitlab",
                occurred_at=info.committed_at,
                collected_at=now,
                raw_sha256=hist_sha,
            ),
        )


def _first_line(note: dict[str, Any]) -> str:
    return str(note.get("body") or "").split("\n", 1)[0][:200]


def _is_push_note(body: str) -> bool:
    low = body.lower()
    return (low.startswith("added ") and " commit" in low) or "force-pushed" in low


def _reviews(
    node: dict[str, Any],
    notes: list[dict[str, Any]],
    versions: list[dict[str, Any]],
    head: str | None,
    merged_at: datetime,
) -> list[Review]:
    """Approvals with their real times and the version head each one covered."""
    final = {
        (u.get("username") or "").lower(): u
        for u in ((node.get("approvedBy") or {}).get("nodes") or [])
    }
    events: list[tuple[datetime, str, dict[str, Any]]] = []
    for x in notes:
        body = (x.get("body") or "").strip().lower()
        at = _dt(x.get("createdAt"))
        if at is None:
            continue
        if body.startswith("approved this merge request"):
            events.append((at, "approve", x))
        elif body.startswith("unapproved this merge request"):
            events.append((at, "unapprove", x))
        elif _is_push_note(body):
            events.append((at, "push", x))
    events.sort(key=lambda e: e[0])
    heads = [
        (t, v["head_commit_sha"])
        for v in versions
        if (t := _dt(v.get("created_at"))) is not None and v.get("head_commit_sha")
    ]

    def head_at(t: datetime) -> str | None:
        if not heads:
            return head  # a single version: the head never changed
        best: str | None = None
        for vt, sha in heads:
            if vt <= t:
                best = str(sha)
        return best or str(heads[0][1])

    reviews: list[Review] = []
    latest: dict[str, tuple[datetime, dict[str, Any]]] = {}
    for at, what, x in events:
        login = ((x.get("author") or {}).get("username") or "").lower()
        if what == "approve" and login:
            latest[login] = (at, x)
    for login, (at, x) in latest.items():
        actor = _user(x.get("author"))
        if actor is None:
            continue
        dismissed_at: datetime | None = None
        dismissed_by: Actor | None = None
        if login not in final:
            # GitLab no longer counts it at merge: reset by a later push, or revoked
            for t, what, y in events:
                if t > at and what in ("push", "unapprove"):
                    dismissed_at, dismissed_by = t, _user(y.get("author"))
                    break
            if dismissed_at is None:
                dismissed_at = at
        reviews.append(
            Review(
                reviewer=actor,
                state="APPROVED",
                submitted_at=at,
                commit_sha=head_at(at),
                dismissed_at=dismissed_at,
                dismissed_by=dismissed_by,
                source="platform",
            )
        )
    for login, u in final.items():
        if login and login not in latest:
            actor = _user(u)
            if actor is not None:
                # approved, but the time (and so the commit) is unknown: fail closed
                reviews.append(
                    Review(
                        reviewer=actor, state="APPROVED", submitted_at=merged_at, commit_sha=None
                    )
                )
    return reviews


class _Cursor(msgspec.Struct, frozen=True):
    tip: str | None = None
    merged_at: datetime | None = None
    seq: int = 0

    @staticmethod
    def load(text: str | None) -> _Cursor:
        if not text:
            return _Cursor()
        return msgspec.json.decode(text, type=_Cursor)

    def dump(self) -> str:
        return msgspec.json.encode(self).decode()
