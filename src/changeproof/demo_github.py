"""A generated GitHub organisation served over a local replay: offline demo, tests, benchmark.

Three parts with a small API:

* :class:`RepoBuilder` — builds one repository's history the way GitHub would record it:
  merged PRs (merge, squash, rebase, merge queue) with reviews, timeline, commits, checks and
  files; direct pushes; deployments with approvals; protection and rulesets (REST bodies shaped
  like GitHub's OpenAPI examples).
* :func:`generate_org` — a deterministic organisation of many repositories built with it.
* :class:`GitHubReplay` — answers the GitHub source's GraphQL operations and REST calls from an
  :class:`Org` (ETags, pagination, point costs, optional latency and injected faults). Use
  :meth:`GitHubReplay.transport` for an in-process ``httpx`` transport or :class:`ReplayServer`
  for a real loopback HTTP server (``with ReplayServer(replay) as url: …``).

The replay understands exactly the operations in ``changeproof.sources.github.queries``; those
are validated against GitHub's published schema by the test suite.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import msgspec

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _oid(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()  # noqa: S324 - ids only


def _user(login: str) -> dict[str, Any]:
    typename = "Bot" if login.endswith("[bot]") else "User"
    return {
        "__typename": typename,
        "login": login.removesuffix("[bot]") if typename == "Bot" else login,
    }


def _git_actor(login: str, when: datetime) -> dict[str, Any]:
    if login == "web-flow":
        return {
            "name": "GitHub",
            "email": "noreply@github.com",
            "date": iso(when),
            "user": {"login": "web-flow"},
        }
    return {
        "name": login.title(),
        "email": f"{login}@users.noreply.github.com",
        "date": iso(when),
        "user": {"login": login},
    }


@dataclass
class Repo:
    owner: str
    name: str
    default_branch: str = "main"
    branches: dict[str, str] = field(default_factory=dict)  # name → tip oid
    commits: dict[str, dict[str, Any]] = field(default_factory=dict)  # oid → history node
    prs: list[dict[str, Any]] = field(default_factory=list)
    pr_files_rest: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    run_approvals: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    run_logs: dict[int, bytes] = field(default_factory=dict)
    classic: dict[str, dict[str, Any]] = field(default_factory=dict)  # branch → REST body
    rulesets: list[dict[str, Any]] = field(default_factory=list)
    environments: list[dict[str, Any]] = field(default_factory=list)
    retention_days: int | None = 90
    rule_suites: list[dict[str, Any]] = field(default_factory=list)
    admin_readable: bool = True

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class Org:
    login: str
    repos: dict[str, Repo] = field(default_factory=dict)
    audit_log: list[dict[str, Any]] | None = None  # None: not readable (403), like non-Enterprise
    teams: dict[str, list[str]] = field(default_factory=dict)
    org_rulesets: list[dict[str, Any]] = field(default_factory=list)
    admin_readable: bool = True  # the token administers the organisation (org-level lists)

    def add(self, repo: Repo) -> Repo:
        self.repos[repo.full_name] = repo
        return repo


class RepoBuilder:
    """Builds one repository's history; every call advances a deterministic clock."""

    def __init__(self, org: Org, name: str, *, branch: str = "main", start: datetime = T0) -> None:
        self.repo = org.add(Repo(owner=org.login, name=name, default_branch=branch))
        self.org = org
        self.branch = branch
        self.clock = start
        self.next_number = 1
        self.next_run = 1000
        self.next_deploy = 1
        root = self._commit("Initial commit", "founder", "founder", [], files=None)
        self.repo.branches[branch] = root

    # --- primitives ------------------------------------------------------------------------

    def tick(self, minutes: int = 7) -> datetime:
        self.clock += timedelta(minutes=minutes)
        return self.clock

    def _commit(
        self, message: str, author: str, committer: str, parents: list[str], *,
        files: Any = None, signed: str | None = "VALID", associated: list[int] | None = None,
        record: bool = True,
    ) -> str:  # fmt: skip
        when = self.tick(1)
        oid = _oid(self.repo.full_name, message, when.isoformat(), *parents)
        node = {
            "oid": oid,
            "committedDate": iso(when),
            "authoredDate": iso(when),
            "message": message,
            "author": _git_actor(author, when),
            "committer": _git_actor(committer, when),
            "signature": {
                "state": signed,
                "isValid": signed == "VALID",
                "wasSignedByGitHub": committer == "web-flow",
                "signer": {"login": author},
            }
            if signed
            else None,
            "parents": {"nodes": [{"oid": p} for p in parents]},
            "_assoc": list(associated or []),
        }
        if record:
            self.repo.commits[oid] = node
        self._last_node = node
        return oid

    @property
    def tip(self) -> str:
        return self.repo.branches[self.branch]

    # --- landings --------------------------------------------------------------------------

    def merge_pr(
        self,
        *,
        author: str = "alice",
        method: str = "squash",
        reviews: list[tuple[str, str, str]] | None = None,
        dismissed: list[tuple[str, str]] | None = None,
        merged_by: str | None = None,
        commits: int = 1,
        files: list[tuple[str, str, str | None]] | None = None,
        changed_files: int | None = None,
        checks: list[tuple[str, str, str]] | None = None,
        labels: list[str] | None = None,
        title: str | None = None,
        body: str = "Risk: low\nTesting: unit tests\nRollback: revert",
        force_push_by: str | None = None,
        run_logs: bool = True,
    ) -> dict[str, Any]:
        """Land one PR. ``reviews``: (login, state, "head" | "old") in order;
        ``dismissed``: (reviewer login, dismissing actor); ``files``: (path, change type, previous
        path); ``checks``: (name, "check"|"status", conclusion/state)."""
        number = self.next_number
        self.next_number += 1
        created = self.tick(30)
        title = title or f"Change {number} by {author}"
        pr_commits: list[dict[str, Any]] = []
        parent = self.tip
        for i in range(max(1, commits)):
            oid = self._commit(
                f"{title} part {i + 1}", author, author, [parent], record=False, signed=None
            )
            pr_commits.append({"commit": self._last_node})
            parent = oid
        head = pr_commits[-1]["commit"]["oid"]
        old = pr_commits[0]["commit"]["oid"]
        review_nodes: list[dict[str, Any]] = []
        for j, (login, state, at) in enumerate(reviews or []):
            when = self.tick(5)
            review_nodes.append(
                {
                    "id": f"PRR_{self.repo.name}_{number}_{j}",
                    "state": state,
                    "submittedAt": iso(when),
                    "url": f"https://github.com/{self.repo.full_name}/pull/{number}#pullrequestreview-{j}",
                    "authorAssociation": "MEMBER",
                    "author": _user(login),
                    "commit": {"oid": head if at == "head" else (old if at == "old" else at)},
                }
            )
        timeline: list[dict[str, Any]] = []
        if force_push_by:
            timeline.append(
                {
                    "__typename": "HeadRefForcePushedEvent",
                    "createdAt": iso(self.tick(2)),
                    "actor": _user(force_push_by),
                    "beforeCommit": {"oid": old},
                    "afterCommit": {"oid": head},
                }
            )
        for reviewer, by in dismissed or []:
            rv = next(
                r for r in review_nodes if r["author"]["login"] == reviewer.removesuffix("[bot]")
            )
            rv["state"] = "DISMISSED"
            timeline.append(
                {
                    "__typename": "ReviewDismissedEvent",
                    "createdAt": iso(self.tick(2)),
                    "actor": _user(by),
                    "dismissalMessage": "stale",
                    "previousReviewState": "APPROVED",
                    "review": {"id": rv["id"]},
                }
            )
        contexts: list[dict[str, Any]] = []
        run_id = self.next_run
        self.next_run += 1
        for name, kind, result in (
            checks
            if checks is not None
            else [
                ("test", "check", "SUCCESS"),
                ("lint", "check", "SUCCESS"),
                ("ci/build", "status", "SUCCESS"),
            ]
        ):
            done = self.tick(3)
            if kind == "check":
                contexts.append(
                    {
                        "__typename": "CheckRun",
                        "name": name,
                        "conclusion": result,
                        "status": "COMPLETED",
                        "startedAt": iso(done - timedelta(minutes=2)),
                        "completedAt": iso(done),
                        "detailsUrl": f"https://github.com/{self.repo.full_name}/actions/runs/{run_id}",
                        "databaseId": run_id * 10 + len(contexts),
                        "checkSuite": {
                            "app": {"slug": "github-actions"},
                            "workflowRun": {
                                "databaseId": run_id,
                                "runNumber": number,
                                "event": "pull_request",
                                "url": f"https://github.com/{self.repo.full_name}/actions/runs/{run_id}",
                                "createdAt": iso(done),
                                "workflow": {"name": "CI"},
                            },
                        },
                    }
                )
            else:
                contexts.append(
                    {
                        "__typename": "StatusContext",
                        "context": name,
                        "state": result,
                        "createdAt": iso(done),
                        "targetUrl": f"https://ci.example.com/{run_id}",
                        "creator": {"login": "ci-bot"},
                    }
                )
        if run_logs:
            self.repo.run_logs[run_id] = (
                b"PK\x03\x04"
                + f"log of run {run_id} for {self.repo.full_name}#{number}\n".encode() * 20
            )
        merged_at = self.tick(10)
        merger = merged_by or (
            "github-merge-queue[bot]" if method == "merge_queue" else "maintainer"
        )
        landed: list[str] = []
        if method == "merge":
            for pc in pr_commits:
                c = pc["commit"]
                self.repo.commits[c["oid"]] = {**c, "_assoc": [number]}
            mc = self._commit(
                f"Merge pull request #{number} from {self.repo.owner}/{author}/topic-{number}\n\n{title}",
                merger,
                "web-flow",
                [self.tip, head],
                associated=[number],
            )
            landed = [mc]
        elif method == "rebase":
            parent = self.tip
            for pc in pr_commits:
                c = pc["commit"]
                parent = self._commit(
                    c["message"], author, "web-flow", [parent], associated=[number]
                )
                landed.append(parent)
            mc = parent
        else:  # squash, merge_queue
            msg = f"{title} (#{number})\n\n" + "\n".join(
                f"* {pc['commit']['message']}" for pc in pr_commits
            )
            mc = self._commit(msg, author, "web-flow", [self.tip], associated=[number])
            landed = [mc]
        if method == "merge_queue":
            timeline.append(
                {
                    "__typename": "AddedToMergeQueueEvent",
                    "createdAt": iso(merged_at - timedelta(minutes=4)),
                    "actor": _user(merger if merged_by else "maintainer"),
                }
            )
        timeline.append(
            {
                "__typename": "MergedEvent",
                "createdAt": iso(merged_at),
                "actor": _user(merger),
                "commit": {"oid": mc},
            }
        )
        self.repo.branches[self.branch] = mc
        mc_node = self.repo.commits[mc]
        file_list = (
            files if files is not None else [(f"src/module_{number % 7}.py", "MODIFIED", None)]
        )
        file_nodes = [
            {"path": p, "changeType": ct, "additions": 3, "deletions": 1} for p, ct, _ in file_list
        ]
        self.repo.pr_files_rest[number] = [
            {"filename": p, "status": ct.lower(), "previous_filename": prev}
            if prev
            else {"filename": p, "status": ct.lower()}
            for p, ct, prev in file_list
        ]
        pr = {
            "id": f"PR_{self.repo.name}_{number}",
            "number": number,
            "title": title,
            "body": body,
            "url": f"https://github.com/{self.repo.full_name}/pull/{number}",
            "createdAt": iso(created),
            "updatedAt": iso(merged_at + timedelta(seconds=30)),
            "mergedAt": iso(merged_at),
            "baseRefName": self.branch,
            "headRefName": f"topic-{number}",
            "headRefOid": head,
            "isCrossRepository": False,
            "changedFiles": changed_files if changed_files is not None else len(file_nodes),
            "author": _user(author),
            "mergedBy": _user(merger),
            "mergeCommit": {
                "oid": mc,
                "message": mc_node["message"],
                "committedDate": mc_node["committedDate"],
                "parents": mc_node["parents"],
                "statusCheckRollup": {
                    "contexts": {"nodes": contexts if method == "merge_queue" else []}
                },
            },
            "labels": {"nodes": [{"name": n} for n in labels or []]},
            "reviews": {"nodes": review_nodes},
            "timelineItems": {"nodes": sorted(timeline, key=lambda e: e["createdAt"])},
            "commits": {
                "totalCount": len(pr_commits),
                "nodes": [
                    {
                        "commit": {
                            k: v
                            for k, v in pc["commit"].items()
                            if not k.startswith("_") and k != "parents"
                        }
                    }
                    for pc in pr_commits
                ],
            },
            "statusCheckRollup": {"contexts": {"nodes": contexts}},
            "files": {"nodes": file_nodes},
        }
        self.repo.prs.append(pr)
        return pr

    def direct_push(
        self, *, author: str = "mallory", message: str = "hotfix straight to main"
    ) -> str:
        oid = self._commit(message, author, author, [self.tip], signed=None)
        self.repo.branches[self.branch] = oid
        return oid

    def deploy(
        self, environment: str, *, sha: str | None = None, approver: str | None = None,
        state: str = "SUCCESS", creator: str = "github-actions[bot]",
    ) -> dict[str, Any]:  # fmt: skip
        did = self.next_deploy
        self.next_deploy += 1
        run_id = 900_000 + did
        created = self.tick(5)
        statuses = []
        log = f"https://github.com/{self.repo.full_name}/actions/runs/{run_id}"
        if approver:
            statuses.append(
                {
                    "state": "WAITING",
                    "createdAt": iso(created + timedelta(seconds=5)),
                    "logUrl": log,
                    "environmentUrl": None,
                    "creator": _user(creator),
                }
            )
            self.repo.run_approvals[run_id] = [
                {
                    "state": "approved",
                    "comment": "Ship it!",
                    "environments": [{"id": 1, "name": environment}],
                    "user": {"login": approver, "type": "User"},
                }
            ]
        statuses.append(
            {
                "state": "IN_PROGRESS",
                "createdAt": iso(created + timedelta(minutes=2)),
                "logUrl": log,
                "environmentUrl": None,
                "creator": _user(creator),
            }
        )
        statuses.append(
            {
                "state": state,
                "createdAt": iso(created + timedelta(minutes=4)),
                "logUrl": log,
                "environmentUrl": f"https://{environment}.example.com",
                "creator": _user(creator),
            }
        )
        node = {
            "databaseId": did,
            "environment": environment,
            "commitOid": sha or self.tip,
            "createdAt": iso(created),
            "updatedAt": iso(created + timedelta(minutes=4)),
            "state": "ACTIVE" if state == "SUCCESS" else state,
            "creator": _user(creator),
            "statuses": {"nodes": list(reversed(statuses))},
        }
        self.repo.deployments.append(node)
        return node

    def protect(
        self,
        *,
        approvals: int = 1,
        checks: tuple[str, ...] = ("test",),
        enforce_admins: bool = True,
    ) -> None:
        """Classic protection shaped like GitHub's `branch-protection` OpenAPI example."""
        url = (
            f"https://api.github.com/repos/{self.repo.full_name}/branches/{self.branch}/protection"
        )
        self.repo.classic[self.branch] = {
            "url": url,
            "required_status_checks": {
                "url": url + "/required_status_checks",
                "strict": True,
                "contexts": list(checks),
                "checks": [{"context": c, "app_id": 15368} for c in checks],
                "enforcement_level": "non_admins",
            },
            "enforce_admins": {"url": url + "/enforce_admins", "enabled": enforce_admins},
            "required_pull_request_reviews": {
                "url": url + "/required_pull_request_reviews",
                "dismiss_stale_reviews": True,
                "require_code_owner_reviews": False,
                "required_approving_review_count": approvals,
                "require_last_push_approval": True,
            },
            "allow_force_pushes": {"enabled": False},
            "allow_deletions": {"enabled": False},
        }

    def ruleset(
        self,
        *,
        rid: int = 42,
        approvals: int = 1,
        bypass: tuple[tuple[str, int, str], ...] = (("Team", 234, "always"),),
        org: bool = False,
    ) -> dict[str, Any]:
        """A ruleset shaped like GitHub's `repository-ruleset` / `org-ruleset` examples."""
        rs = {
            "id": rid, "name": "protect main", "target": "branch",
            "source_type": "Organization" if org else "Repository",
            "source": self.org.login if org else self.repo.full_name, "enforcement": "active",
            "bypass_actors": [{"actor_id": i, "actor_type": t, "bypass_mode": mode} for t, i, mode in bypass],
            "conditions": {"ref_name": {"include": ["~DEFAULT_BRANCH"], "exclude": ["refs/heads/dev*"]}},
            "rules": [
                {"type": "deletion"}, {"type": "non_fast_forward"},
                {"type": "pull_request", "parameters": {"required_approving_review_count": approvals, "dismiss_stale_reviews_on_push": True, "require_code_owner_review": False, "require_last_push_approval": True, "required_review_thread_resolution": False}},
                {"type": "required_status_checks", "parameters": {"strict_required_status_checks_policy": True, "required_status_checks": [{"context": "test", "integration_id": 15368}]}},
            ],
            "created_at": "2023-07-15T08:43:03Z", "updated_at": iso(self.clock),
        }  # fmt: skip
        if org:
            self.org.org_rulesets.append(rs)
        else:
            self.repo.rulesets.append(rs)
        return rs

    def environment(self, name: str, *, reviewers: tuple[str, ...] = ()) -> None:
        rules: list[dict[str, Any]] = [{"id": 3736, "type": "wait_timer", "wait_timer": 0}]
        if reviewers:
            rules.append(
                {
                    "id": 3755,
                    "prevent_self_review": True,
                    "type": "required_reviewers",
                    "reviewers": [{"type": "User", "reviewer": {"login": r}} for r in reviewers],
                }
            )
        self.repo.environments.append(
            {
                "id": len(self.repo.environments) + 1,
                "name": name,
                "can_admins_bypass": False,
                "protection_rules": rules,
                "created_at": "2020-11-23T22:00:40Z",
                "updated_at": "2020-11-23T22:00:40Z",
            }
        )

    def bypass_push(self, actor: str) -> str:
        """A direct push by a ruleset bypass actor, recorded as a rule suite with result bypass."""
        before = self.tip
        oid = self.direct_push(author=actor, message="emergency bypass push")
        self.repo.rule_suites.append(
            {
                "id": len(self.repo.rule_suites) + 21,
                "actor_id": 12,
                "actor_name": actor,
                "before_sha": before,
                "after_sha": oid,
                "ref": f"refs/heads/{self.branch}",
                "repository_id": 404,
                "repository_name": self.repo.name,
                "pushed_at": iso(self.clock),
                "result": "bypass",
            }
        )
        return oid


def generate_org(
    login: str = "acme",
    *,
    repos: int = 20,
    prs_per_repo: int = 500,
    seed: int = 7,
    direct_push_every: int = 60,
    deploy_every: int = 10,
) -> Org:
    """A deterministic organisation with realistic sizes and a mix of merge methods."""
    rng = random.Random(seed)
    org = Org(login=login, teams={"security": ["sam", "sue"]})
    people = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
    for r in range(repos):
        b = RepoBuilder(org, f"service-{r:02d}", start=T0 + timedelta(minutes=r))
        b.protect(approvals=1)
        b.ruleset(rid=100 + r)
        b.environment("staging")
        b.environment("production", reviewers=("release-manager",))
        for i in range(prs_per_repo):
            author = rng.choice(people)
            others = [p for p in people if p != author]
            roll = rng.random()
            method = (
                "squash"
                if roll < 0.6
                else "merge"
                if roll < 0.8
                else "rebase"
                if roll < 0.9
                else "merge_queue"
            )
            is_bot = rng.random() < 0.08
            if is_bot:
                author = "dependabot[bot]"
            reviews: list[tuple[str, str, str]] = []
            k = rng.choice((1, 1, 1, 2, 2, 3))
            if rng.random() < 0.15:
                reviews.append((rng.choice(others), "CHANGES_REQUESTED", "old"))
            for reviewer in rng.sample(others, k):
                reviews.append((reviewer, "APPROVED", "head" if rng.random() < 0.9 else "old"))
            if rng.random() < 0.25:
                reviews.append((rng.choice(others), "COMMENTED", "head"))
            if rng.random() < 0.01:
                reviews.extend((rng.choice(others), "COMMENTED", "head") for _ in range(60))
            n_files = max(1, int(rng.lognormvariate(1.3, 1.0)))
            if rng.random() < 0.01:
                n_files = 150
            files: list[tuple[str, str, str | None]] = []
            renamed = rng.random() < 0.015  # ~1.5% of PRs rename a file
            for f in range(min(n_files, 400)):
                if renamed and f == 0:
                    files.append((f"src/pkg{f}/new_{i}.py", "RENAMED", f"src/pkg{f}/old_{i}.py"))
                else:
                    files.append(
                        (f"src/pkg{f % 9}/file_{i}_{f}.py", "MODIFIED" if f % 4 else "ADDED", None)
                    )
            commits = max(1, min(int(rng.expovariate(0.5)) + 1, 12))
            if rng.random() < 0.01:
                commits = 70
            b.merge_pr(
                author=author, method=method, reviews=reviews, commits=commits, files=files,
                force_push_by=author if rng.random() < 0.1 else None,
                labels=["dependencies"] if is_bot else [],
                title=f"{'Bump lib' if is_bot else 'Improve'} area {i} (ENG-{1000 + i})",
            )  # fmt: skip
            if direct_push_every and i % direct_push_every == direct_push_every - 1:
                b.direct_push(author=rng.choice(people))
            if deploy_every and i % deploy_every == deploy_every - 1:
                b.deploy("staging")
                if i % (deploy_every * 4) == deploy_every * 4 - 1:
                    b.deploy("production", approver="release-manager")
    return org


# --- the replay ---------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


Fault = Callable[[str, str, dict[str, Any] | None], Reply | None]


def _cursor(i: int) -> str:
    return base64.b64encode(f"cursor:v2:{i}".encode()).decode()


def _uncursor(c: str | None) -> int:
    if not c:
        return 0
    return int(base64.b64decode(c).decode().rsplit(":", 1)[1])


def _slice(nodes: list[Any], first: int, after: str | None = None) -> dict[str, Any]:
    start = _uncursor(after)
    part = nodes[start : start + first]
    end = start + len(part)
    return {
        "pageInfo": {"hasNextPage": end < len(nodes), "endCursor": _cursor(end) if part else after},
        "nodes": part,
    }


def _strip(node: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if not k.startswith("_")}


HISTORY_RE = re.compile(r'c(\d+): object\(expression: "([0-9a-f]+)~(\d+)"\)')
PROBE_RE = re.compile(r'r(\d+): repository\(owner: "([^"]+)", name: "([^"]+)"\)')
OVERFLOW_RE = re.compile(
    r'o(\d+): node\(id: "([^"]+)"\) \{ \.\.\. on PullRequest \{ (\w+)[^"]*?after: "([^"]*)"'
)


class GitHubReplay:
    """Answers the GitHub source's requests from an :class:`Org`. Thread-safe."""

    def __init__(
        self, org: Org | list[Org], *, latency_s: float = 0.0, token: str | None = None
    ) -> None:
        self.orgs = {o.login: o for o in (org if isinstance(org, list) else [org])}
        self.latency_s = latency_s
        self.token = token
        self.faults: list[Fault] = []
        self.requests = 0
        self.points = 0
        self.log: list[str] = []
        self._lock = threading.Lock()

    # --- API for tests / demo --------------------------------------------------------------

    def repo(self, full_name: str) -> Repo | None:
        owner = full_name.split("/", 1)[0]
        org = self.orgs.get(owner)
        return org.repos.get(full_name) if org else None

    def fail(
        self,
        match: str,
        status: int,
        *,
        times: int = 1,
        body: bytes = b'{"message": "Server Error"}',
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests whose operation/path contains ``match`` with this."""
        left = [times]

        def fault(method: str, what: str, _vars: dict[str, Any] | None) -> Reply | None:
            if match in what and left[0] > 0:
                left[0] -= 1
                return Reply(status, body, dict(headers or {"content-type": "application/json"}))
            return None

        self.faults.append(fault)

    def transport(self) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            reply = self.handle(
                request.method, str(request.url), dict(request.headers), request.content
            )
            return httpx.Response(reply.status, content=reply.body, headers=reply.headers)

        return httpx.MockTransport(handler)

    # --- dispatch --------------------------------------------------------------------------

    def handle(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Reply:
        if self.latency_s:
            time.sleep(self.latency_s)
        parts = urlsplit(url)
        path = parts.path
        for prefix in ("/api/v3",):
            path = path.removeprefix(prefix)
        qs = {k: v[0] for k, v in parse_qs(parts.query).items()}
        low = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            self.requests += 1
        if self.token is not None and low.get("authorization") != f"Bearer {self.token}":
            return self._json(
                {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"},
                401,
            )
        variables: dict[str, Any] | None = None
        what = f"{method} {path}"
        query = ""
        if path.endswith("/graphql"):
            try:
                payload = msgspec.json.decode(body)
            except msgspec.DecodeError:
                return self._json({"message": "Problems parsing JSON"}, 400)
            query = str(payload.get("query", ""))
            variables = payload.get("variables") or {}
            m = re.match(r"\s*query\s+(\w+)", query)
            what = f"graphql:{m.group(1) if m else '?'}"
        with self._lock:
            self.log.append(what)
        for fault in list(self.faults):
            reply = fault(method, what, variables)
            if reply is not None:
                return reply
        if variables is not None:
            return self._graphql(what.split(":", 1)[1], query, variables)
        base = f"{parts.scheme}://{parts.netloc}{parts.path[: len(parts.path) - len(path)]}"
        return self._rest(method, path, qs, low, base)

    def _json(self, data: Any, status: int = 200, extra: dict[str, str] | None = None) -> Reply:
        return Reply(
            status,
            msgspec.json.encode(data),
            {
                "content-type": "application/json; charset=utf-8",
                "x-github-request-id": "REPLAY",
                **(extra or {}),
            },
        )

    # --- GraphQL ---------------------------------------------------------------------------

    def _graphql(self, op: str, query: str, v: dict[str, Any]) -> Reply:
        if op == "Probe":
            return self._probes(query)
        repo = self.repo(f"{v.get('owner')}/{v.get('name')}") if v.get("owner") else None
        if op != "PullRequestOverflow" and repo is None:
            return self._json(
                {
                    "data": {"repository": None},
                    "errors": [
                        {
                            "type": "NOT_FOUND",
                            "path": ["repository"],
                            "message": f"Could not resolve to a Repository with the name '{v.get('owner')}/{v.get('name')}'.",
                        }
                    ],
                }
            )
        if op == "MergedPullRequests":
            data, cost = self._prs(repo, v)  # type: ignore[arg-type]
            if HISTORY_RE.search(query):  # history carried along with the page
                hist, hcost = self._history(repo, query)  # type: ignore[arg-type]
                data["repository"].update(hist["repository"])
                cost += hcost
            if "dep: deployments(" in query:  # and the next page of deployments
                dep, dcost = self._deployments(
                    repo,  # type: ignore[arg-type]
                    {"first": v["depFirst"], "after": v.get("depAfter")},
                )
                data["repository"]["dep"] = dep["repository"]["deployments"]
                cost += dcost
            if OVERFLOW_RE.search(query):  # the previous page's follow-ups, too
                more, ocost = self._overflow(query)
                data.update(more)
                cost += ocost
        elif op == "FirstParentHistory":
            data, cost = self._history(repo, query)  # type: ignore[arg-type]
        elif op == "PullRequestOverflow":
            data, cost = self._overflow(query)
        elif op == "Deployments":
            data, cost = self._deployments(repo, v)  # type: ignore[arg-type]
        else:
            return self._json({"errors": [{"message": f"unknown operation {op}"}]})
        with self._lock:
            self.points += cost
        data["rateLimit"] = {
            "cost": cost,
            "remaining": 5000 - cost,
            "resetAt": iso(datetime.now(UTC) + timedelta(hours=1)),
        }
        return self._json({"data": data})

    def _probes(self, query: str) -> Reply:
        """Aliased repositories, as GitHub answers them: a missing one is ``null`` with a
        NOT_FOUND error whose path is its alias; the others still answer (HTTP 200)."""
        data: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        found = PROBE_RE.findall(query)
        for alias, owner, name in found:
            repo = self.repo(f"{owner}/{name}")
            if repo is None:
                data[f"r{alias}"] = None
                errors.append(
                    {
                        "type": "NOT_FOUND",
                        "path": [f"r{alias}"],
                        "locations": [{"line": 3 + int(alias), "column": 3}],
                        "message": f"Could not resolve to a Repository with the name '{owner}/{name}'.",
                    }
                )
            else:
                data[f"r{alias}"] = self._probe(repo)["repository"]
        # six connections per repository, each one request: 6n / 100 points, at least 1
        cost = max(1, -(-(6 * len(found)) // 100))
        with self._lock:
            self.points += cost
        data["rateLimit"] = {
            "cost": cost,
            "remaining": 5000 - cost,
            "resetAt": iso(datetime.now(UTC) + timedelta(hours=1)),
        }
        return self._json({"data": data, **({"errors": errors} if errors else {})})

    def _probe(self, repo: Repo) -> dict[str, Any]:
        prs = sorted(repo.prs, key=lambda p: p["updatedAt"])
        deps = repo.deployments
        org = self.orgs[repo.owner]
        rulesets = [*repo.rulesets, *org.org_rulesets]
        return {"repository": {
            "nameWithOwner": repo.full_name, "isArchived": False,
            "owner": {"__typename": "Organization", "login": repo.owner},
            "defaultBranchRef": {"name": repo.default_branch, "target": {"oid": repo.branches[repo.default_branch]}},
            "refs": {"pageInfo": {"hasNextPage": False, "endCursor": None}, "nodes": [{"name": n, "target": {"oid": o}} for n, o in sorted(repo.branches.items())]},
            "pullRequests": {"totalCount": len(prs), "nodes": [{"updatedAt": prs[-1]["updatedAt"]}] if prs else []},
            "deployments": {"totalCount": len(deps), "nodes": [{"databaseId": deps[-1]["databaseId"], "updatedAt": deps[-1]["updatedAt"], "latestStatus": {"state": deps[-1]["statuses"]["nodes"][0]["state"]}}] if deps else []},
            "rulesets": {"pageInfo": {"hasNextPage": len(rulesets) > 50, "endCursor": _cursor(min(50, len(rulesets)))}, "nodes": [{"databaseId": r["id"], "updatedAt": r["updated_at"], "enforcement": r["enforcement"].upper(), "source": {"__typename": "Organization", "login": repo.owner} if r in org.org_rulesets else {"__typename": "Repository", "nameWithOwner": repo.full_name}} for r in rulesets[:50]]},
            "branchProtectionRules": {"nodes": [{"pattern": b, "requiresApprovingReviews": True, "requiredApprovingReviewCount": c["required_pull_request_reviews"]["required_approving_review_count"], "dismissesStaleReviews": True, "requireLastPushApproval": True, "requiresCodeOwnerReviews": False, "requiresStatusChecks": True, "requiresStrictStatusChecks": True, "requiredStatusCheckContexts": c["required_status_checks"]["contexts"], "isAdminEnforced": c["enforce_admins"]["enabled"], "allowsForcePushes": False, "allowsDeletions": False} for b, c in sorted(repo.classic.items())]},
            "environments": {"nodes": [{"name": e["name"]} for e in repo.environments]},
        }}  # fmt: skip

    def _pr_view(self, pr: dict[str, Any], v: dict[str, Any]) -> dict[str, Any]:
        out = dict(pr)
        out["reviews"] = _slice(pr["reviews"]["nodes"], v["reviews"])
        out["timelineItems"] = _slice(pr["timelineItems"]["nodes"], v["timeline"])
        commits = _slice(pr["commits"]["nodes"], v["commits"])
        commits["totalCount"] = pr["commits"]["totalCount"]
        out["commits"] = commits
        out["files"] = _slice(pr["files"]["nodes"][:3000], v["files"])
        out["statusCheckRollup"] = {
            "contexts": _slice(pr["statusCheckRollup"]["contexts"]["nodes"], v["contexts"])
        }
        mc = dict(pr["mergeCommit"])
        mc["statusCheckRollup"] = {
            "contexts": {"nodes": mc["statusCheckRollup"]["contexts"]["nodes"][: v["contexts"]]}
        }
        out["mergeCommit"] = mc
        return out

    def _prs(self, repo: Repo, v: dict[str, Any]) -> tuple[dict[str, Any], int]:
        prs = sorted(
            (p for p in repo.prs if p["baseRefName"] == v["base"]),
            key=lambda p: (p["updatedAt"], p["number"]),
        )
        page = _slice(prs, int(v["first"]), v.get("after"))
        page["nodes"] = [self._pr_view(p, v) for p in page["nodes"]]
        # GitHub's formula: 1 for the page + per PR its 8 nested connections, / 100
        cost = max(1, -(-(1 + 8 * int(v["first"])) // 100))
        return {"repository": {"pullRequests": page}}, cost

    def _history(self, repo: Repo, query: str) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        n = 0
        for alias, tip, depth in HISTORY_RE.findall(query):
            n += 1
            node = repo.commits.get(tip)
            for _ in range(int(depth)):
                if node is None:
                    break
                ps = node["parents"]["nodes"]
                node = repo.commits.get(ps[0]["oid"]) if ps else None
            if node is None:
                out[f"c{alias}"] = None
                continue
            assoc = []
            for num in node.get("_assoc", []):
                pr = next((p for p in repo.prs if p["number"] == num), None)
                if pr is not None:
                    assoc.append(
                        {
                            "number": num,
                            "baseRefName": pr["baseRefName"],
                            "mergedAt": pr["mergedAt"],
                            "mergeCommit": {"oid": pr["mergeCommit"]["oid"]},
                        }
                    )
            out[f"c{alias}"] = {**_strip(node), "associatedPullRequests": {"nodes": assoc}}
        return {"repository": out}, max(1, -(-(2 * n) // 100))

    def _overflow(self, query: str) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        index = {p["id"]: p for o in self.orgs.values() for r in o.repos.values() for p in r.prs}
        found = OVERFLOW_RE.findall(query)
        for alias, node_id, conn, after in found:
            pr = index.get(node_id)
            if pr is None:
                out[f"o{alias}"] = None
                continue
            if conn == "statusCheckRollup":
                out[f"o{alias}"] = {
                    conn: {"contexts": _slice(pr[conn]["contexts"]["nodes"], 100, after)}
                }
            elif conn == "files":
                out[f"o{alias}"] = {conn: _slice(pr[conn]["nodes"][:3000], 100, after)}
            else:
                out[f"o{alias}"] = {conn: _slice(pr[conn]["nodes"], 100, after)}
        return out, max(1, -(-len(found) // 100))

    def _deployments(self, repo: Repo, v: dict[str, Any]) -> tuple[dict[str, Any], int]:
        page = _slice(repo.deployments, int(v["first"]), v.get("after"))
        return {"repository": {"deployments": page}}, max(1, -(-(1 + int(v["first"])) // 100))

    # --- REST ------------------------------------------------------------------------------

    def _rest(
        self, method: str, path: str, qs: dict[str, str], headers: dict[str, str], base: str
    ) -> Reply:
        if path in ("", "/"):
            return self._json(
                {
                    "current_user_url": "https://api.github.com/user",
                    "repository_url": "https://api.github.com/repos/{owner}/{repo}",
                }
            )
        parts = [p for p in path.split("/") if p]
        not_found = self._json(
            {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}, 404
        )
        if parts[:1] == ["orgs"] and len(parts) >= 3:
            org = self.orgs.get(parts[1])
            if org is None:
                return not_found
            if parts[2] == "repos":
                return self._paged(
                    [{"full_name": r.full_name, "archived": False} for r in org.repos.values()],
                    qs,
                    base + path,
                )
            if parts[2] == "audit-log":
                if org.audit_log is None:
                    return self._json(
                        {
                            "message": "Must have admin rights to audit log.",
                            "documentation_url": "https://docs.github.com/rest/orgs/orgs#get-the-audit-log-for-an-organization",
                        },
                        403,
                        {
                            "x-accepted-oauth-scopes": "read:audit_log",
                            "x-oauth-scopes": "repo, read:org",
                        },
                    )
                return self._etag(org.audit_log, headers)
            if parts[2:] == ["rulesets", "rule-suites"]:
                # organisation Administration: a token that cannot administer every one of
                # its repositories is not an organisation administrator
                if not org.admin_readable or not all(r.admin_readable for r in org.repos.values()):
                    return self._json(
                        {"message": "Resource not accessible by integration"},
                        403,
                        {"x-accepted-github-permissions": "organization_administration=write"},
                    )
                suites = [
                    {**s, "repository_name": r.name}
                    for r in org.repos.values()
                    for s in r.rule_suites
                    if qs.get("rule_suite_result") in (None, s["result"])
                ]
                return self._paged(suites, qs, base + path)
            if parts[2] == "teams" and len(parts) == 5:
                members = org.teams.get(parts[3])
                if members is None:
                    return not_found
                return self._etag([{"login": m, "type": "User"} for m in members], headers)
            return not_found
        if parts[:1] != ["repos"] or len(parts) < 3:
            return not_found
        repo = self.repo(f"{parts[1]}/{parts[2]}")
        if repo is None:
            return not_found
        rest = parts[3:]
        org = self.orgs[repo.owner]
        if rest[:1] == ["branches"] and rest[-1:] == ["protection"]:
            if not repo.admin_readable:
                return self._json(
                    {"message": "Resource not accessible by integration"},
                    403,
                    {"x-accepted-github-permissions": "administration=read"},
                )
            body = repo.classic.get("/".join(rest[1:-1]))
            return (
                self._etag(body, headers)
                if body
                else self._json({"message": "Branch not protected"}, 404)
            )
        if rest == ["rulesets"]:
            items = [
                *repo.rulesets,
                *(org.org_rulesets if qs.get("includes_parents") == "true" else []),
            ]
            return self._etag(
                [
                    {
                        k: r[k]
                        for k in (
                            "id",
                            "name",
                            "target",
                            "source_type",
                            "source",
                            "enforcement",
                            "created_at",
                            "updated_at",
                        )
                    }
                    for r in items
                ],
                headers,
            )
        if rest[:1] == ["rulesets"] and len(rest) == 2 and rest[1].isdigit():
            rid = int(rest[1])
            for r in [*repo.rulesets, *org.org_rulesets]:
                if r["id"] == rid:
                    return self._etag(r, headers)
            return not_found
        if rest == ["rulesets", "rule-suites"]:
            if not repo.admin_readable:
                return self._json({"message": "Resource not accessible by integration"}, 403)
            return self._json(
                [s for s in repo.rule_suites if qs.get("rule_suite_result") in (None, s["result"])]
            )
        if rest == ["environments"]:
            return self._etag(
                {"total_count": len(repo.environments), "environments": repo.environments}, headers
            )
        if rest == ["actions", "permissions", "artifact-and-log-retention"]:
            if repo.retention_days is None:
                return not_found
            return self._etag({"days": repo.retention_days, "maximum_allowed_days": 400}, headers)
        if rest[:1] == ["pulls"] and rest[2:] == ["files"]:
            files = repo.pr_files_rest.get(int(rest[1]))
            return self._paged(files, qs, base + path) if files is not None else not_found
        if rest[:2] == ["actions", "runs"] and len(rest) == 4:
            rid = int(rest[2])
            if rest[3] == "logs":
                blob = repo.run_logs.get(rid)
                if blob is None:
                    return self._json({"message": "Not Found"}, 410)
                return Reply(200, blob, {"content-type": "application/zip"})
            if rest[3] == "approvals":
                return self._json(repo.run_approvals.get(rid, []))
        return not_found

    def _etag(self, data: Any, headers: dict[str, str]) -> Reply:
        body = msgspec.json.encode(data)
        tag = 'W/"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if headers.get("if-none-match") == tag:
            return Reply(304, b"", {"etag": tag})
        return Reply(200, body, {"content-type": "application/json; charset=utf-8", "etag": tag})

    def _paged(self, items: list[Any], qs: dict[str, str], path: str) -> Reply:
        per = int(qs.get("per_page", 30))
        page = int(qs.get("page", 1))
        part = items[(page - 1) * per : page * per]
        headers = {"content-type": "application/json; charset=utf-8"}
        if page * per < len(items):
            # like GitHub: the next link keeps the request's other parameters (filters)
            q = urlencode({**qs, "per_page": per, "page": page + 1})
            headers["link"] = f'<{path}?{q}>; rel="next"'
        return Reply(200, msgspec.json.encode(part), headers)


class _Handler(BaseHTTPRequestHandler):
    replay: GitHubReplay
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        url = f"http://{self.headers.get('host', 'localhost')}{self.path}"
        reply = self.replay.handle(self.command, url, dict(self.headers.items()), body)
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = _serve
    do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        return None


class ReplayServer:
    """A threaded loopback HTTP server for a :class:`GitHubReplay`; ``url`` is its API base."""

    def __init__(self, replay: GitHubReplay, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = type("Handler", (_Handler,), {"replay": replay})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.replay = replay
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> str:
        self._thread.start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


def iter_repos(org: Org) -> Iterator[str]:
    yield from sorted(org.repos)


def collect_offline(
    workspace: Any,
    org: Org,
    *,
    settings: Any = None,
    workers: int = 4,
    latency_s: float = 0.0,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Any], dict[str, Any]]:
    """Collect ``org`` into ``workspace`` through the real GitHub source, offline.

    The replay is served in-process (an ``httpx`` transport; no socket), the collection runs
    exactly the code ``changeproof collect github`` runs. Returns (per-repository results,
    request statistics). ``workspace`` is a :class:`changeproof.workspace.Workspace`.
    """
    from changeproof.sources.github import GitHubSource, Options
    from changeproof.sources.github.collector import github_error_mapper
    from changeproof.sources.http import HttpClient

    api = "https://api.github.com"
    replay = GitHubReplay(org, latency_s=latency_s)
    client = HttpClient(api, transport=replay.transport(), error_mapper=github_error_mapper)
    source = GitHubSource(
        client, settings or workspace.settings(), api_url=api, options=Options(workers=workers)
    )
    repos = sorted(org.repos)
    try:
        source.validate(repos)
        store = workspace.open_store()
        try:
            results = source.collect(store, workspace.signer(), repos, progress=progress)
        finally:
            store.close()
    finally:
        client.close()
    return results, client.stats.snapshot()
