"""The GitHub source: merged PRs, first-parent history, configuration and deployments.

Per repository (repositories run concurrently; database writes are serialised):

1. **Probe** (one GraphQL request per 25 repositories, before any of them): branch tips, the
   newest merged-PR update, the newest deployment and a fingerprint of the protection
   configuration. Nothing changed → done.
2. **First-parent history** from the tip back to the last collected tip: ``tip~N`` aliases,
   100 per request, with associated PRs. A commit is attributed to the PR whose merge commit it
   is; earlier commits of a rebase merge to that PR; anything else is a direct push.
3. **Merged PRs** into each controlled branch, 50 on the first page, then up to 100 while pages
   answer fast, with nested reviews (with the commit each approved), timeline, commits, check
   rollup and files; page size halves on 502/timeouts and does not grow back past a size that
   failed; nested overflow is followed in one batched request per page.
4. **Deployments** (GraphQL) with statuses; approvals of deployments that waited (REST).
5. **Configuration** (REST, ETag-conditional, only when the fingerprint moved): classic
   protection, rulesets incl. organisation ones (read once per run) and bypass actors,
   environments, log retention, rule-suite bypasses (listed once per organisation when
   readable); the organisation audit log's policy overrides where readable.

Every page commits in its own transaction together with its cursor, so a killed run resumes
where it stopped and ends with the same store as an uninterrupted one. A repository that cannot
finish records ``Coverage(complete=False)`` with the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa

from changeproof.errors import ChangeproofError, SourceError
from changeproof.evidence import (
    Change,
    Coverage,
    ProtectionRule,
    ProtectionSnapshot,
    Provenance,
    TeamMembership,
    canonical_json,
)
from changeproof.settings import Settings
from changeproof.sources.github import mapping as m
from changeproof.sources.github import queries as q
from changeproof.sources.http import HttpClient, Response, TransientError
from changeproof.store import Store, Writer, schema

SRC = "github"
HISTORY_PAGE = 100


def graphql_url(api_url: str) -> str:
    """GraphQL endpoint: api.github.com/graphql; GHES https://HOST/api/v3 → /api/graphql."""
    base = api_url.rstrip("/")
    if base.endswith("/api/v3"):
        return base[: -len("/v3")] + "/graphql"
    return base + "/graphql"


@dataclass(frozen=True)
class Options:
    # GitHub charges one request per parent for a nested connection whatever its ``first``,
    # so nested pages ask for the maximum (100): overflow follow-ups become rare.
    page_size: int = 50  # merged PRs on a branch's first page
    # Pages then grow (×2, up to GraphQL's maximum of 100) while the server answers a page in
    # under ``grow_below_s`` — a quarter of GitHub's 10 s limit, so a doubled page stays well
    # inside it; they halve on a 502/timeout and never grow back past a size that failed.
    max_page_size: int = 100
    grow_below_s: float = 2.5
    reviews: int = 100
    timeline: int = 100
    commits: int = 100
    files: int = 100
    contexts: int = 100
    workers: int = 4
    archive_logs: bool = True
    max_log_bytes: int = 64 << 20  # larger archives: SHA-256 and size only


@dataclass
class RepoResult:
    repo: str
    skipped: bool = False
    changes: int = 0
    pull_requests: int = 0
    direct_pushes: int = 0
    deployments: int = 0
    approvals: int = 0
    bypasses: int = 0
    snapshots: int = 0
    log_archives: int = 0
    complete: bool = True
    notes: list[str] = field(default_factory=list)


class GitHubSource:
    """Collects GitHub evidence for repositories through one :class:`HttpClient`."""

    name = "github"
    capabilities = frozenset(
        {"history", "attribution", "reviews", "checks", "files", "commits", "protection",
         "deployments", "approvals", "bypasses"}
    )  # fmt: skip

    def __init__(
        self,
        client: HttpClient,
        settings: Settings,
        *,
        api_url: str,
        options: Options | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.api_url = api_url.rstrip("/")
        self.gql_url = graphql_url(self.api_url)
        self.opt = options or Options()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._write_lock = threading.Lock()
        self._probes: dict[str, dict[str, Any]] = {}
        self._org_notes: dict[str, list[str]] = {}
        self._api_checked = False
        # (merged PRs asked for, seconds) of every PR page: how the page size adapted
        self.pages: list[tuple[int, float]] = []
        # organisation / enterprise rulesets apply to many repositories: read once per run
        self._shared: dict[tuple[str, ...], tuple[str, bytes | None]] = {}
        self._shared_lock = threading.Lock()
        # owner → (rule suites of all its repositories, the listing's bodies) when readable
        self._org_suites: dict[str, tuple[list[dict[str, Any]], bytes]] = {}

    # --- plumbing --------------------------------------------------------------------------

    def now(self) -> datetime:
        return self._clock()

    @contextlib.contextmanager
    def _tx(self, store: Store, signer: Any) -> Iterator[Writer]:
        from changeproof.locker import Locker

        with self._write_lock, store.writer(Locker(signer)) as w:
            yield w

    def _gql(self, query: str, variables: dict[str, Any], *, kind: str, **kw: Any) -> Any:
        body = self._gql_body(query, variables, kind=kind, **kw)
        errors = body.get("errors")
        if errors:
            raise graphql_error(errors, self.gql_url, variables)
        data = body.get("data")
        if not isinstance(data, dict):
            raise SourceError(f"{self.gql_url} answered without data", hint="check --api-url")
        return data

    def _gql_body(
        self, query: str, variables: dict[str, Any], *, kind: str, **kw: Any
    ) -> dict[str, Any]:
        """The whole GraphQL answer (data and errors), rate limits inside a 200 waited out."""
        body: dict[str, Any] = {}
        for attempt in range(4):
            got = self.client.graphql(self.gql_url, query, variables, kind=kind, **kw)
            if not isinstance(got, dict):
                raise SourceError(
                    f"{self.gql_url} answered with unexpected JSON", hint="check --api-url"
                )
            body = got
            errors = body.get("errors")
            if errors and _error_type(errors) == "RATE_LIMITED" and attempt < 3:
                # GraphQL reports its limits inside a 200: wait as for a secondary limit
                self.client.stats.bump("retries")
                self.client._wait(60.0, "GraphQL rate limited")
                continue
            break
        return body

    # --- validation (before anything is written) -------------------------------------------

    def validate(self, repos: Sequence[str]) -> None:
        """Check the API is GitHub (once per run) and every repository is readable; probe
        them all (several per request)."""
        if not self._api_checked:
            self._check_api()
        self.probe_many(repos)

    def _check_api(self) -> None:
        try:
            resp = self.client.request("GET", "/", kind="rest:root")
        except NotReadable:
            resp = None
        root = resp.json() if resp is not None else None
        if (
            resp is None
            or not isinstance(root, dict)
            or ("current_user_url" not in root and "x-github-request-id" not in resp.headers)
        ):
            raise SourceError(
                f"{self.api_url} does not look like the GitHub API",
                expected="https://api.github.com or https://HOST/api/v3 (GitHub Enterprise Server)",
                hint="pass --api-url with the API address, not the web address",
            )
        self._api_checked = True

    def probe(self, repo: str) -> dict[str, Any]:
        self.probe_many([repo])
        return self._probes[repo]

    def probe_many(self, repos: Sequence[str]) -> None:
        """Probe every repository not probed yet in this run, ``PROBE_BATCH`` per request
        (aliases): a missing one answers ``null`` with a NOT_FOUND error on its alias."""
        todo = [r for r in dict.fromkeys(repos) if r not in self._probes]
        for i in range(0, len(todo), q.PROBE_BATCH):
            chunk = todo[i : i + q.PROBE_BATCH]
            names = [split_repo(r) for r in chunk]
            body = self._gql_body(q.probe_query(names), {}, kind="graphql:probe")
            data = body.get("data")
            missing: list[str] = []
            errors = body.get("errors")
            for e in errors or []:
                path = e.get("path") if isinstance(e, dict) else None
                alias = str(path[0]) if isinstance(path, list) and len(path) == 1 else ""
                if (
                    _error_type([e]) == "NOT_FOUND"
                    and alias[:1] == "r"
                    and alias[1:].isdigit()
                    and int(alias[1:]) < len(chunk)
                    and isinstance(data, dict)
                    and data.get(alias) is None
                ):
                    missing.append(chunk[int(alias[1:])])  # this repository, not a field of it
                else:
                    raise graphql_error(errors, self.gql_url, {})
            if missing:
                raise repo_not_found(", ".join(missing))
            if not isinstance(data, dict):
                raise SourceError(f"{self.gql_url} answered without data", hint="check --api-url")
            for j, repo in enumerate(chunk):
                r = data.get(f"r{j}")
                if not isinstance(r, dict):
                    raise repo_not_found(repo)
                self._probes[repo] = r

    def repos_of_org(self, org: str) -> list[str]:
        out: list[str] = []
        for _, items in self.client.paginate(
            f"/orgs/{org}/repos", params={"type": "all"}, kind="rest:repos"
        ):
            out.extend(
                str(i["full_name"]) for i in items if not i.get("archived") and i.get("full_name")
            )
        if not out:
            raise SourceError(
                f"organisation {org!r} has no repositories this token can read",
                hint="grant the token or App access to the organisation's repositories",
            )
        return sorted(out)

    # --- collection ------------------------------------------------------------------------

    def collect(
        self,
        store: Store,
        signer: Any,
        repos: Sequence[str],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> list[RepoResult]:
        advance = progress or (lambda n: None)
        owners = sorted({split_repo(r)[0] for r in repos})
        results: list[RepoResult] = []
        failures: list[str] = []

        def run(repo: str) -> RepoResult:
            try:
                # page by page, many commits: another collector of this repository waits for
                # this one, then starts from its cursors (PostgreSQL; see Store.hold)
                with store.hold(SRC, repo):
                    return self.collect_repo(store, signer, repo, advance)
            except ChangeproofError as exc:
                res = RepoResult(repo=repo, complete=False, notes=[exc.message])
                self._record_gap(store, signer, repo, exc.message)
                failures.append(f"{repo}: {exc.message}")
                return res

        self.probe_many(repos)
        self._org_suites.clear()
        self._read_org_suites(store, repos)
        with ThreadPoolExecutor(max_workers=max(1, self.opt.workers)) as pool:
            results = list(pool.map(run, repos))
        for owner in owners:
            mine = [r for r in results if r.repo.startswith(owner + "/")]
            if mine and all(r.skipped for r in mine):
                continue  # nothing moved in the organisation's repositories: nothing to judge
            notes = self.collect_org(
                store, signer, owner, [r for r in repos if r.startswith(owner + "/")]
            )
            for r in results:
                if r.repo.startswith(owner + "/"):
                    r.notes.extend(notes)
        if failures:
            raise SourceError(
                f"{len(failures)} of {len(repos)} repositories could not be collected completely "
                f"(recorded as incomplete coverage): " + "; ".join(failures[:3]),
                hint="fix the cause and run the same command again; it resumes where it stopped",
            )
        return results

    def _record_gap(self, store: Store, signer: Any, repo: str, why: str) -> None:
        now = self.now()
        probe = self._probes.get(repo) or {}
        branches: list[str | None] = [b for b, _ in self._branches(repo, probe)] or [None]
        with self._tx(store, signer) as w:
            raw = w.put_raw(
                f"github incomplete {repo}: {why}".encode(), kind="github.coverage", source=SRC
            )
            for b in branches:
                w.put(self._coverage(repo, b, now, raw, complete=False, gaps=(why,)))

    def _coverage(
        self,
        repo: str,
        branch: str | None,
        now: datetime,
        raw: str,
        *,
        complete: bool,
        gaps: tuple[str, ...] = (),
    ) -> Coverage:
        return Coverage(
            id=f"github:{repo}:{branch or '*'}",
            source=SRC,
            repo=repo,
            branch=branch,
            start=None,
            end=now,
            complete=complete,
            gaps=gaps,
            provenance=Provenance(source=SRC, occurred_at=now, collected_at=now, raw_sha256=raw),
        )

    def _branches(self, repo: str, probe: dict[str, Any]) -> list[tuple[str, str]]:
        out = []
        for n in (probe.get("refs") or {}).get("nodes") or []:
            oid = (n.get("target") or {}).get("oid")
            if oid and self.settings.is_controlled(repo, str(n["name"])):
                out.append((str(n["name"]), str(oid)))
        return sorted(out)

    def fingerprint(self, probe: dict[str, Any]) -> dict[str, str]:
        config = {k: probe.get(k) for k in ("rulesets", "branchProtectionRules", "environments")}
        return {
            "tips": _digest(probe.get("refs")),
            "prs": _digest(probe.get("pullRequests")),
            "deployments": _digest(probe.get("deployments")),
            "config": _digest(config),
        }

    def collect_repo(
        self, store: Store, signer: Any, repo: str, advance: Callable[[int], None]
    ) -> RepoResult:
        probe = self.probe(repo)
        res = RepoResult(repo=repo)
        fp = self.fingerprint(probe)
        prev_raw = store.cursor(SRC, f"{repo}:probe")
        prev = msgspec.json.decode(prev_raw) if prev_raw else {}
        branches = self._branches(repo, probe)
        if prev == fp:
            # nothing moved: the coverage still extends to now (a write, no request)
            res.skipped = True
            self._finish(store, signer, repo, branches, fp)
            return res
        if ((probe.get("refs") or {}).get("pageInfo") or {}).get("hasNextPage"):
            res.notes.append("more than 100 branches: only the first 100 were matched")
        default = (probe.get("defaultBranchRef") or {}).get("name")
        cursor = store.cursor(SRC, f"{repo}:deployments")
        deps = _Deps(after=cursor, safe=cursor, done=prev.get("deployments") == fp["deployments"])
        for i, (branch, tip) in enumerate(branches):
            # the first branch's PR pages carry the deployment pages along
            self._collect_branch(
                store, signer, repo, branch, tip, res, advance, deps if i == 0 else None
            )
        self._collect_deployments(store, signer, repo, deps, res)
        if prev.get("config") != fp["config"] or prev.get("tips") != fp["tips"]:
            self._collect_config(store, signer, repo, [b for b, _ in branches], default, probe, res)
        self._finish(store, signer, repo, branches, fp)
        return res

    def _finish(
        self,
        store: Store,
        signer: Any,
        repo: str,
        branches: list[tuple[str, str]],
        fp: dict[str, str],
    ) -> None:
        """Complete coverage up to now for every controlled branch, and the probe state."""
        now = self.now()
        with self._tx(store, signer) as w:
            raw = w.put_raw(
                canonical_json({"repo": repo, "probe": fp}), kind="github.probe", source=SRC
            )
            for branch, _ in branches:
                w.put(self._coverage(repo, branch, now, raw, complete=True))
            if store.get(Coverage, f"github:{repo}:*") is not None:
                # an earlier failure before the branches were known: this run closes it
                w.put(self._coverage(repo, None, now, raw, complete=True))
            w.set_cursor(SRC, f"{repo}:probe", msgspec.json.encode(fp).decode())

    # --- history and PRs -------------------------------------------------------------------

    def _take_history(self, r: dict[str, Any], walk: _Walk, count: int = HISTORY_PAGE) -> None:
        """Append one stretch of ``tip~N`` aliases (c0…) to the walk; mark it done at the
        previously collected tip, the root, or past the end."""
        for i in range(count):
            node = r.get(f"c{i}")
            if not node or not node.get("oid") or node["oid"] == walk.stop:
                walk.done = True
                return
            walk.commits.append(node)
            if not (node.get("parents") or {}).get("nodes"):
                walk.done = True
                return
        walk.start += count

    def _finish_history(self, repo: str, walk: _Walk) -> None:
        owner, name = split_repo(repo)
        while not walk.done:
            data = self._gql(
                q.history_query(walk.tip, walk.start, HISTORY_PAGE),
                {"owner": owner, "name": name},
                kind="graphql:history",
            )
            self._take_history(data.get("repository") or {}, walk)

    def _attribute(
        self, branch: str, commits: list[dict[str, Any]]
    ) -> tuple[dict[int, list[str]], list[dict[str, Any]]]:
        """PR number → landed shas (oldest first), and the unattributed (direct push) commits."""
        window = {c["oid"] for c in commits}
        landed: dict[int, list[str]] = {}
        direct: list[dict[str, Any]] = []
        for c in reversed(commits):
            prs = (c.get("associatedPullRequests") or {}).get("nodes") or []
            owner = next(
                (p for p in prs if (p.get("mergeCommit") or {}).get("oid") == c["oid"]), None
            )
            if owner is None:
                # an earlier commit of a rebase merge: same PR, whose merge commit landed later
                owner = next(
                    (
                        p
                        for p in prs
                        if p.get("baseRefName") == branch
                        and p.get("mergedAt")
                        and (p.get("mergeCommit") or {}).get("oid") in window
                    ),
                    None,
                )
            if owner is None:
                direct.append(c)
            else:
                landed.setdefault(int(owner["number"]), []).append(c["oid"])
        return landed, direct

    def _collect_branch(
        self,
        store: Store,
        signer: Any,
        repo: str,
        branch: str,
        tip: str,
        res: RepoResult,
        advance: Callable[[int], None],
        deps: _Deps | None = None,
    ) -> None:
        scope = f"{repo}:{branch}"
        prev_tip = store.cursor(SRC, f"{scope}:tip")
        walk = _Walk(tip=tip, stop=prev_tip, done=prev_tip == tip)
        after = store.cursor(SRC, f"{scope}:prs")
        owner, name = split_repo(repo)
        size = self.opt.page_size
        ceiling = max(size, self.opt.max_page_size)
        pending: list[_Page] = []  # fetched pages whose overflow is still being followed
        more = True
        while True:
            wanted = _overflow_wanted([n for p in pending for n in p.nodes])[:MAX_OVERFLOW]
            while pending and not _overflow_wanted(pending[0].nodes):
                done = pending.pop(0)
                self._commit_page(store, signer, repo, branch, scope, done, walk, res)
                advance(len(done.nodes))
            if not more and not wanted:
                break
            if more:
                variables = {
                    "owner": owner, "name": name, "base": branch, "first": size,
                    "after": after or None, "reviews": self.opt.reviews,
                    "timeline": self.opt.timeline, "commits": self.opt.commits,
                    "files": self.opt.files, "contexts": self.opt.contexts,
                }  # fmt: skip
                # a merged PR lands one first-parent commit or a few (rebase merges; direct
                # pushes in between): two per PR keeps the carried history ahead of the pages
                stretch = max(HISTORY_PAGE, 2 * size)
                history = None if walk.done else (walk.tip, walk.start, stretch)
                carry = deps is not None and not deps.done
                if carry and deps is not None:
                    variables["depFirst"], variables["depAfter"] = 50, deps.after
                started = time.monotonic()
                try:
                    data = self._gql(
                        q.merged_prs_query(history, wanted, deployments=carry), variables,
                        kind="graphql:prs", retries=0 if size > 1 else None,
                    )  # fmt: skip
                except TransientError:
                    if size <= 1:
                        raise
                    size = max(1, size // 2)  # an expensive page times out: ask for less
                    ceiling = size  # …and do not try the size that failed again
                    continue
                took = time.monotonic() - started
                self.pages.append((size, took))  # list.append: atomic across workers
                fast = took < self.opt.grow_below_s
                r = data.get("repository") or {}
                if history is not None:
                    self._take_history(r, walk, stretch)
                if carry and deps is not None:
                    self._store_deployments(store, signer, repo, r.get("dep") or {}, deps, res)
                conn = r.get("pullRequests") or {}
                page = conn.get("pageInfo") or {}
                nodes = [n for n in conn.get("nodes") or [] if n and n.get("mergedAt")]
                _apply_overflow(pending, wanted, data)
                pending.append(_Page(nodes, page.get("endCursor")))
                after = str(page["endCursor"]) if page.get("endCursor") else after
                more = bool(page.get("hasNextPage"))
                if fast:
                    size = min(ceiling, size * 2)
            else:
                data = self._gql(q.overflow_query(wanted), {}, kind="graphql:overflow")
                _apply_overflow(pending, wanted, data)
        self._finish_history(repo, walk)
        landed, direct = self._attribute(branch, walk.commits)
        now = self.now()
        with self._tx(store, signer) as w:
            # rebase merges whose earlier commits the history reached after the PR was stored
            for number, shas in landed.items():
                got = store.get(Change, f"{repo}#{number}")
                if got is not None and got[1].branch == branch:
                    fixed = with_landed(got[1], shas)
                    if fixed != got[1]:
                        w.put(fixed)
            for c in direct:
                raw = w.put_raw(canonical_json(c), kind="github.commit", source=SRC)
                w.put(
                    m.direct_push_change(
                        c, repo=repo, branch=branch, raw_sha256=raw, collected_at=now
                    )
                )
            w.set_cursor(SRC, f"{scope}:tip", tip)
        res.direct_pushes += sum(1 for c in direct if (c.get("parents") or {}).get("nodes"))
        res.changes += len(direct)
        advance(len(direct))

    def _commit_page(
        self,
        store: Store,
        signer: Any,
        repo: str,
        branch: str,
        scope: str,
        page: _Page,
        walk: _Walk,
        res: RepoResult,
    ) -> None:
        """Store one complete page of PRs with its cursor, in one transaction."""
        if walk.attributed_at != len(walk.commits):  # recompute only when history grew
            walk.landed = self._attribute(branch, walk.commits)[0]
            walk.attributed_at = len(walk.commits)
        landed = walk.landed
        renames = self._renames(repo, page.nodes)
        logs = self._logs(repo, page.nodes) if self.opt.archive_logs else {}
        now = self.now()
        with self._tx(store, signer) as w:
            digests: dict[int, str] = {}
            for rid, (sha, size, blob) in logs.items():
                if blob is not None:
                    digests[rid] = w.put_raw(
                        blob, kind="github.actions_log", source=SRC, media_type="application/zip"
                    )
                else:  # too large to keep: the locker keeps what it was and its exact hash
                    w.put_raw(
                        canonical_json({"repo": repo, "run_id": rid, "sha256": sha, "size": size}),
                        kind="github.actions_log_digest", source=SRC,
                        media_type="application/json",
                    )  # fmt: skip
                    digests[rid] = sha
            for pr in page.nodes:
                raw = w.put_raw(canonical_json(pr), kind="github.pull_request", source=SRC)
                number = int(pr["number"])
                shas = landed.get(number) or self._stored_landed(store, repo, number)
                change = m.pull_request_change(
                    pr, repo=repo, branch=branch, landed=shas,
                    renames=renames.get(number, {}),
                    ticket_patterns=self.settings.documentation.ticket_patterns,
                    log_digests=digests, raw_sha256=raw, collected_at=now,
                )  # fmt: skip
                w.put(change)
            apps = m.apps_seen(page.nodes)
            if apps:
                known = self._apps(store, repo)
                if not apps.items() <= known.items():
                    merged = {**known, **apps}
                    w.set_cursor(SRC, f"{repo}:apps", msgspec.json.encode(merged).decode())
            if page.end_cursor:
                w.set_cursor(SRC, f"{scope}:prs", page.end_cursor)
        res.log_archives += len(digests)
        res.pull_requests += len(page.nodes)
        res.changes += len(page.nodes)

    def _apps(self, store: Store, repo: str) -> dict[str, str]:
        """App id → slug learnt from this repository's check runs (binds required checks)."""
        raw = store.cursor(SRC, f"{repo}:apps")
        got = msgspec.json.decode(raw) if raw else {}
        return {str(k): str(v) for k, v in got.items()}

    def _stored_landed(self, store: Store, repo: str, number: int) -> list[str] | None:
        got = store.get(Change, f"{repo}#{number}")
        return list(got[1].landed_shas) if got else None

    def _renames(self, repo: str, nodes: list[dict[str, Any]]) -> dict[int, dict[str, str]]:
        """GraphQL has no previous path for renamed files; REST does (only for PRs with renames)."""
        out: dict[int, dict[str, str]] = {}
        for pr in nodes:
            files = (pr.get("files") or {}).get("nodes") or []
            if not any(f.get("changeType") == "RENAMED" for f in files):
                continue
            mapping: dict[str, str] = {}
            for _, items in self.client.paginate(
                f"/repos/{repo}/pulls/{pr['number']}/files", kind="rest:files", max_pages=30
            ):
                for it in items:
                    if it.get("previous_filename"):
                        mapping[str(it["filename"])] = str(it["previous_filename"])
            out[int(pr["number"])] = mapping
        return out

    def _logs(
        self, repo: str, nodes: list[dict[str, Any]]
    ) -> dict[int, tuple[str, int, bytes | None]]:
        """Log archives of the CI runs behind each PR's checks (GitHub keeps them 90 days):
        run id → (SHA-256, size, the archive when small enough to keep in the locker)."""
        runs: set[int] = set()
        for pr in nodes:
            for n in m._rollup(pr):
                run = m.workflow_run(n)
                if run is not None:
                    runs.add(int(run["databaseId"]))

        def fetch(rid: int) -> tuple[int, tuple[str, int, bytes | None] | None]:
            try:
                got = self.client.download(
                    f"/repos/{repo}/actions/runs/{rid}/logs",
                    kind="rest:logs",
                    keep_max_bytes=self.opt.max_log_bytes,
                )
            except SourceError:
                return rid, None  # not readable: the check keeps log_sha256=None
            return rid, got  # None: expired

        # downloads, not API pages: a few at once per repository
        with ThreadPoolExecutor(max_workers=4) as pool:
            got = list(pool.map(fetch, sorted(runs)))
        return {rid: blob for rid, blob in got if blob is not None}

    # --- deployments -----------------------------------------------------------------------

    def _collect_deployments(
        self, store: Store, signer: Any, repo: str, deps: _Deps, res: RepoResult
    ) -> None:
        """The deployment pages the PR pages did not carry."""
        owner, name = split_repo(repo)
        while not deps.done:
            data = self._gql(
                q.DEPLOYMENTS,
                {"owner": owner, "name": name, "first": 50, "after": deps.after},
                kind="graphql:deployments",
            )
            conn = (data.get("repository") or {}).get("deployments") or {}
            self._store_deployments(store, signer, repo, conn, deps, res)

    def _store_deployments(
        self,
        store: Store,
        signer: Any,
        repo: str,
        conn: dict[str, Any],
        deps: _Deps,
        res: RepoResult,
    ) -> None:
        """One page of deployments with the approvals of those that waited, and the cursor
        (kept before the first deployment still in progress, so its outcome is re-read)."""
        nodes = [n for n in conn.get("nodes") or [] if n and n.get("databaseId")]
        approvals: list[tuple[dict[str, Any], int, datetime, bytes, list[dict[str, Any]]]] = []
        for n in nodes:
            waited = m.waited_run_id(n)
            if waited is None:
                continue
            rid, at = waited
            try:
                resp = self.client.request(
                    "GET", f"/repos/{repo}/actions/runs/{rid}/approvals", kind="rest:approvals"
                )
            except SourceError as exc:
                res.notes.append(f"approvals of run {rid} not readable: {exc.what}")
                continue
            approvals.append((n, rid, at, resp.content, resp.json()))
        now = self.now()
        page = conn.get("pageInfo") or {}
        with self._tx(store, signer) as w:
            for n in nodes:
                raw = w.put_raw(canonical_json(n), kind="github.deployment", source=SRC)
                w.put(m.deployment(n, repo=repo, raw_sha256=raw, collected_at=now))
            for n, rid, at, body, items in approvals:
                raw = w.put_raw(
                    body, kind="github.run_approvals", source=SRC, media_type="application/json"
                )
                for a in m.approvals(
                    items, repo=repo, run_id=rid, commit_sha=str(n["commitOid"]), at=at,
                    raw_sha256=raw, collected_at=now,
                ):  # fmt: skip
                    w.put(a)
                    res.approvals += 1
            final = all(str(n.get("state") or "") not in UNSETTLED for n in nodes)
            deps.settled = deps.settled and final
            if deps.settled and page.get("endCursor"):
                deps.safe = str(page["endCursor"])
            if deps.safe:
                w.set_cursor(SRC, f"{repo}:deployments", deps.safe)
        res.deployments += len(nodes)
        if page.get("endCursor"):
            deps.after = str(page["endCursor"])
        deps.done = not page.get("hasNextPage")

    # --- configuration ---------------------------------------------------------------------

    def _cached_get(
        self, store: Store, path: str, kind: str, etags: dict[str, str]
    ) -> tuple[Response | None, bytes | None]:
        """ETag-conditional GET. Returns (response or None if unreadable, current body)."""
        state_raw = store.cursor(SRC, f"etag:{path}")
        state = msgspec.json.decode(state_raw) if state_raw else {}
        try:
            resp = self.client.request("GET", path, kind=kind, etag=state.get("etag"))
        except NotReadable:
            return None, None
        if resp.not_modified:
            return resp, _locker_body(store, str(state.get("sha")))
        if resp.etag:
            etags[path] = msgspec.json.encode(
                {"etag": resp.etag, "sha": hashlib.sha256(resp.content).hexdigest()}
            ).decode()
        return resp, resp.content

    def _collect_config(
        self,
        store: Store,
        signer: Any,
        repo: str,
        branches: list[str],
        default: str | None,
        probe: dict[str, Any],
        res: RepoResult,
    ) -> None:
        etags: dict[str, str] = {}
        bodies: dict[str, bytes] = {}

        def get(path: str, kind: str) -> Any:
            _resp, body = self._cached_get(store, path, kind, etags)
            if body is None:
                return None
            bodies[path] = body
            return msgspec.json.decode(body)

        def shared_get(path: str, kind: str, key: tuple[str, ...]) -> Any:
            """A body many repositories share (an organisation ruleset): read once per run."""
            with self._shared_lock:
                got = self._shared.get(key)
                if got is None:
                    got = (path, self._cached_get(store, path, kind, etags)[1])
                    self._shared[key] = got
            where, body = got
            if body is None:
                return None
            bodies[where] = body
            return msgspec.json.decode(body)

        classic: dict[str, Any] = {}
        readable = True
        bpr = (probe.get("branchProtectionRules") or {}).get("nodes") or []
        # no protection rule at all (GraphQL): every branch would answer 404 "not protected"
        for b in branches if bpr else []:
            body = get(f"/repos/{repo}/branches/{b}/protection", "rest:protection")
            if body is not None:
                classic[b] = body
        if bpr and not classic:
            readable = False  # rules exist (GraphQL) but REST refused: the token lacks admin
            res.notes.append(
                f"{repo}: classic branch protection exists but is not readable "
                "(needs Administration: read)"
            )
        rulesets = []
        for rid, source in self._ruleset_ids(repo, probe, get):
            # organisation rulesets are readable through the repository with includes_parents
            path = f"/repos/{repo}/rulesets/{rid}?includes_parents=true"
            if source is None:
                detail = get(path, "rest:ruleset")
            else:
                detail = shared_get(path, "rest:ruleset", ("ruleset", *source, str(rid)))
            if detail is not None:
                rulesets.append(detail)
        envs: list[dict[str, Any]] = []
        if ((probe.get("environments") or {}).get("nodes")) or "environments" not in probe:
            envs = (get(f"/repos/{repo}/environments", "rest:environments") or {}).get(
                "environments"
            ) or []
        retention = get(
            f"/repos/{repo}/actions/permissions/artifact-and-log-retention", "rest:retention"
        )
        days = (
            int(retention["days"]) if isinstance(retention, dict) and "days" in retention else None
        )
        org_suites = self._org_suites.get(split_repo(repo)[0])
        if org_suites is not None:
            name = split_repo(repo)[1]
            suites = [i for i in org_suites[0] if i.get("repository_name") == name]
            suites_body = org_suites[1]
        else:
            try:
                suites, suites_body = self._all_pages(
                    f"/repos/{repo}/rulesets/rule-suites", SUITES_PARAMS, "rest:rule-suites"
                )
            except SourceError:
                suites, suites_body = [], b""
                res.notes.append(
                    f"{repo}: rule-suite bypasses not readable (needs repository admin)"
                )
        now = self.now()
        with self._tx(store, signer) as w:
            raw = w.put_raw(canonical_json({k: msgspec.json.decode(v) for k, v in sorted(bodies.items())}),
                            kind="github.configuration", source=SRC)  # fmt: skip
            prov = Provenance(source=SRC, occurred_at=now, collected_at=now, raw_sha256=raw)
            latest = _latest_snapshots(store, repo)
            apps = self._apps(store, repo)
            snaps: list[ProtectionSnapshot] = []
            for b in branches:
                layers: list[ProtectionRule] = []
                if b in classic:
                    layers.append(m.classic_layer(classic[b], apps))
                layers.extend(
                    m.ruleset_layer(rs, apps)
                    for rs in rulesets
                    if m.ruleset_applies(rs, b, default)
                )
                snaps.append(ProtectionSnapshot(repo=repo, branch=b, layers=tuple(layers),
                                            log_retention_days=days, readable=readable,
                                            provenance=prov))  # fmt: skip
            for env in envs:
                snaps.append(ProtectionSnapshot(repo=repo, branch=f"environment:{env.get('name')}",
                                                layers=(m.environment_layer(env),),
                                                log_retention_days=days, provenance=prov))  # fmt: skip
            for snap in snaps:
                # a snapshot is an observation of a change in configuration: an unchanged one
                # (re-observed by a resumed run) adds nothing
                if latest.get(snap.branch) != _config_key(snap):
                    w.put(snap)
                    res.snapshots += 1
            if suites_body:
                sraw = w.put_raw(suites_body, kind="github.rule_suites", source=SRC,
                                 media_type="application/json")  # fmt: skip
                for item in suites:
                    if item.get("result") == "bypass" and item.get("pushed_at"):
                        w.put(m.rule_suite_bypass(item, repo=repo, raw_sha256=sraw,
                                                  collected_at=now))  # fmt: skip
                        res.bypasses += 1
            for path, state in etags.items():
                w.set_cursor(SRC, f"etag:{path}", state)

    def _ruleset_ids(
        self, repo: str, probe: dict[str, Any], get: Callable[[str, str], Any]
    ) -> list[tuple[int, tuple[str, str] | None]]:
        """(id, shared source or None) of every ruleset that applies to the repository.

        The probe already lists them (GraphQL, with parents); only past its 50 does the REST
        list answer instead. A ruleset whose source is an organisation or enterprise is the
        same body for every repository it applies to."""
        conn = probe.get("rulesets")
        if not isinstance(conn, dict) or (conn.get("pageInfo") or {}).get("hasNextPage"):
            summaries = get(f"/repos/{repo}/rulesets?includes_parents=true", "rest:rulesets")
            return [(int(s["id"]), None) for s in summaries or []]
        out: list[tuple[int, tuple[str, str] | None]] = []
        for n in conn.get("nodes") or []:
            if not n or n.get("databaseId") is None:
                continue
            src = n.get("source") or {}
            kind = str(src.get("__typename") or "")
            owner = src.get("login") or src.get("slug")
            shared = (
                (kind, str(owner)) if kind in ("Organization", "Enterprise") and owner else None
            )
            out.append((int(n["databaseId"]), shared))
        return out

    def _config_due(self, store: Store, repo: str) -> bool:
        """Whether this run re-reads the repository's configuration (see collect_repo)."""
        fp = self.fingerprint(self.probe(repo))
        prev_raw = store.cursor(SRC, f"{repo}:probe")
        prev = msgspec.json.decode(prev_raw) if prev_raw else {}
        return prev != fp and (prev.get("config") != fp["config"] or prev.get("tips") != fp["tips"])

    def _read_org_suites(self, store: Store, repos: Sequence[str]) -> None:
        """Rule-suite bypasses of every due repository of an organisation in one listing
        (GitHub: organisation Administration); per repository when that is not readable."""
        by_owner: dict[str, list[str]] = {}
        for r in repos:
            by_owner.setdefault(split_repo(r)[0], []).append(r)
        for owner, mine in sorted(by_owner.items()):
            probe = self._probes.get(mine[0]) or {}
            if (probe.get("owner") or {}).get("__typename") != "Organization":
                continue
            due = [r for r in mine if self._config_due(store, r)]
            if len(due) < 2:
                continue  # one repository: its own listing costs the same
            # not an organisation administrator: each repository's own listing instead
            with contextlib.suppress(SourceError):
                self._org_suites[owner] = self._all_pages(
                    f"/orgs/{owner}/rulesets/rule-suites", SUITES_PARAMS, "rest:rule-suites"
                )

    def _all_pages(
        self, path: str, params: dict[str, Any], kind: str
    ) -> tuple[list[dict[str, Any]], bytes]:
        """Every item of a paginated REST list, and the page bodies as the locker keeps them."""
        items: list[dict[str, Any]] = []
        body = b""
        for resp, page in self.client.paginate(path, params=params, kind=kind):
            items.extend(page)
            body += resp.content + b"\n"
        return items, body

    def collect_org(self, store: Store, signer: Any, org: str, repos: list[str]) -> list[str]:
        """Organisation-wide evidence: audit-log policy overrides, team membership."""
        notes: list[str] = []
        probe = next((self._probes[r] for r in repos if r in self._probes), {})
        if (probe.get("owner") or {}).get("__typename") == "User":
            return notes
        now = self.now()
        events: list[dict[str, Any]] = []
        body = b""
        try:
            events, body = self._all_pages(
                f"/orgs/{org}/audit-log",
                {"phrase": "action:protected_branch.policy_override"},
                "rest:audit-log",
            )
        except SourceError:
            notes.append(
                f"the audit log of {org} is not readable, so protected_branch.policy_override "
                "events were NOT checked (needs GitHub Enterprise Cloud and an organisation "
                "owner token with read:audit_log)"
            )
        teams: dict[str, bytes] = {}
        for team in sorted(self.settings.teams):
            try:
                r = self.client.request("GET", f"/orgs/{org}/teams/{team}/members?per_page=100",
                                        kind="rest:team")  # fmt: skip
                teams[team] = r.content
            except SourceError:
                notes.append(f"team {org}/{team} is not readable; settings' [teams] used instead")
        if not body and not teams:
            return notes
        with self._tx(store, signer) as w:
            if body:
                raw = w.put_raw(
                    body, kind="github.audit_log", source=SRC, media_type="application/json"
                )
                for ev in events if isinstance(events, list) else []:
                    bp = m.audit_bypass(ev, raw_sha256=raw, collected_at=now)
                    if bp is not None:
                        w.put(bp)
            for team, tbody in teams.items():
                raw = w.put_raw(
                    tbody, kind="github.team", source=SRC, media_type="application/json"
                )
                members = tuple(sorted(str(u["login"]) for u in msgspec.json.decode(tbody)))
                if _latest_team(store, team) == members:
                    continue  # unchanged membership: nothing new observed
                w.put(TeamMembership(team=team, members=members, provenance=Provenance(
                    source=SRC, occurred_at=now, collected_at=now, raw_sha256=raw)))  # fmt: skip
        return notes


MAX_OVERFLOW = 50  # follow-ups carried by one request
# bypasses only; GitHub lists the past day unless asked (a month is the longest it keeps)
SUITES_PARAMS = {"rule_suite_result": "bypass", "time_period": "month"}
UNSETTLED = frozenset({"PENDING", "QUEUED", "IN_PROGRESS", "WAITING"})


@dataclass
class _Deps:
    """Deployment pages: where the next one starts, and the cursor safe to keep."""

    after: str | None
    safe: str | None
    done: bool
    settled: bool = True


@dataclass
class _Walk:
    """First-parent history walked so far (newest first) from ``tip`` down to ``stop``."""

    tip: str
    stop: str | None
    done: bool
    start: int = 0
    commits: list[dict[str, Any]] = field(default_factory=list)
    landed: dict[int, list[str]] = field(default_factory=dict)
    attributed_at: int = 0


@dataclass
class _Page:
    nodes: list[dict[str, Any]]
    end_cursor: str | None


def _holder(pr: dict[str, Any], conn: str) -> dict[str, Any]:
    value: dict[str, Any] = pr.get(conn) or {}
    if conn == "statusCheckRollup":
        value = value.get("contexts") or {}
    return value


def _overflow_wanted(nodes: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(PR node id, connection, after cursor) for every nested connection with more pages."""
    wanted: list[tuple[str, str, str]] = []
    for pr in nodes:
        for conn in q.OVERFLOW_FIELDS:
            page = _holder(pr, conn).get("pageInfo") or {}
            if not page.get("hasNextPage"):
                continue
            if conn == "files" and int(pr.get("changedFiles") or 0) > m.MAX_FILES:
                page["hasNextPage"] = False  # GitHub cannot list them all: partial, on purpose
                continue
            wanted.append((str(pr["id"]), conn, str(page["endCursor"])))
    return wanted


def _apply_overflow(
    pages: list[_Page], wanted: list[tuple[str, str, str]], data: dict[str, Any]
) -> None:
    by_id = {str(n["id"]): n for p in pages for n in p.nodes}
    for i, (node_id, conn, _) in enumerate(wanted):
        got = (data.get(f"o{i}") or {}).get(conn) or {}
        if conn == "statusCheckRollup":
            got = got.get("contexts") or {}
        holder = _holder(by_id[node_id], conn)
        holder["nodes"] = list(holder.get("nodes") or []) + list(got.get("nodes") or [])
        holder["pageInfo"] = got.get("pageInfo") or {"hasNextPage": False}


def with_landed(change: Change, shas: list[str]) -> Change:
    """The change with the commits history attributed to it (a rebase merge lands several)."""
    landed = tuple(shas) if change.merge_sha in shas else (*shas, change.merge_sha)
    if landed == change.landed_shas:
        return change
    method = change.merge_method
    if len(landed) > 1 and method != "merge":
        method = "rebase"
    ctype = change.change_type if change.change_type == "merge_queue" else method
    return msgspec.structs.replace(
        change,
        landed_shas=landed,
        merge_method=method,
        change_type=ctype,
    )


class NotReadable(SourceError):
    """The token may not read this (403/404 on an optional endpoint)."""


def _config_key(snap: ProtectionSnapshot) -> bytes:
    return canonical_json([snap.layers, snap.log_retention_days, snap.readable])


def _latest_snapshots(store: Store, repo: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for _, snap in store.iter_records(ProtectionSnapshot, repo=repo):
        out[snap.branch] = _config_key(snap)  # time order: the last one wins
    return out


def _latest_team(store: Store, team: str) -> tuple[str, ...] | None:
    found: tuple[str, ...] | None = None
    for _, t in store.iter_records(TeamMembership):
        if t.team == team:
            found = t.members
    return found


def _locker_body(store: Store, digest: str) -> bytes | None:
    o = schema.locker_objects
    with store.connect() as conn:
        row = conn.execute(sa.select(o.c.body).where(o.c.digest == digest)).first()
    return None if row is None else bytes(row[0])


def _digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def split_repo(repo: str) -> tuple[str, str]:
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts):
        raise SourceError(
            f"{repo!r} is not a GitHub repository name",
            expected="owner/name, e.g. octo-org/api",
        )
    return parts[0], parts[1]


def repo_not_found(repo: str) -> SourceError:
    return SourceError(
        f"repository {repo} was not found or this token cannot see it",
        expected="an existing repository the token can read",
        hint="check the name (owner/name); for a private repository grant the token "
        "`repo` scope (classic) or Contents/Pull requests read access (fine-grained / App)",
    )


def _error_type(errors: Any) -> str:
    first = errors[0] if isinstance(errors, list) and errors else {}
    return str(first.get("type") or "") if isinstance(first, dict) else ""


def graphql_error(errors: Any, url: str, variables: dict[str, Any]) -> SourceError:
    """A GraphQL error inside an HTTP 200 → one clear message."""
    first = errors[0] if isinstance(errors, list) and errors else {}
    etype = str(first.get("type") or "")
    msg = str(first.get("message") or errors)
    repo = f"{variables.get('owner')}/{variables.get('name')}"
    if etype == "NOT_FOUND" and variables.get("owner"):
        return repo_not_found(repo)
    if etype in ("INSUFFICIENT_SCOPES", "FORBIDDEN"):
        return SourceError(
            f"the token may not read what the GitHub query needs: {msg}",
            expected="read access to contents, pull requests, checks, actions and deployments",
            hint="grant the classic token `repo` (and `read:org`) scopes, or give the "
            "fine-grained token / App read access to those permissions",
        )
    if etype in ("RATE_LIMITED",):
        return TransientError(f"GitHub GraphQL rate limit: {msg}", hint="run again after the reset")
    return SourceError(
        f"GitHub GraphQL query failed at {url}: {msg}",
        hint="run with --verbose; if it persists, report it with the message above",
    )


def github_error_mapper(resp: Any, url: str) -> SourceError | None:
    """HTTP errors → messages that say what is missing and how to grant it."""
    status = resp.status_code
    try:
        message = str(msgspec.json.decode(resp.content).get("message", ""))
    except Exception:
        message = resp.content[:80].decode("utf-8", "replace")
    if status == 401:
        return SourceError(
            f"GitHub rejected the token ({url}: {message or 'Bad credentials'})",
            expected="a valid token in the environment variable (default GITHUB_TOKEN) or a "
            "GitHub App configured under [github]",
            hint="create a token at Settings → Developer settings → Personal access tokens "
            "and export it, e.g. `export GITHUB_TOKEN=…`",
        )
    if status == 403:
        need = resp.headers.get("x-accepted-oauth-scopes") or resp.headers.get(
            "x-accepted-github-permissions"
        )
        have = resp.headers.get("x-oauth-scopes")
        return NotReadable(
            f"GitHub refused {url} (HTTP 403: {message})"
            + (f"; needs {need}" if need else "")
            + (f", the token has {have or 'no scopes'}" if have is not None else ""),
            expected="a token allowed to read this",
            hint=f"grant the token {need or 'the missing permission'} and run again",
        )
    if status == 404:
        return NotReadable(
            f"{url} was not found (HTTP 404: {message})",
            hint="check the repository name and that the token can see it",
        )
    return None
