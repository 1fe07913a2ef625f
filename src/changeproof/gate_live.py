"""`changeproof gate --live`: decide from GitHub directly, for pipelines with no local store.

Asks the GitHub REST API (through the shared HTTP client: retries, rate limits, clear errors)
for the commit's pull request, its reviews and commits, the checks and statuses on its head,
and the deployments of the commit; maps them into the same evidence records the collector
makes; runs the same pure decision; and records the raw responses, the evidence and the
decision in the locker the command points at, in one transaction.

What ships: the first-parent commits between the commit of the latest successful GitHub
deployment to the same environment and the deployed commit (GitHub's compare; more than it
lists, or a commit that does not descend from production, is "cannot decide"). Which checks
are required comes from ``testing.required_checks``. The raw responses go into the locker and
their digest into the decision's inputs; mapped records are not written to the store.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, get_args

from changeproof.controls.base import Context
from changeproof.errors import SourceError, UsageError
from changeproof.evidence import (
    Actor,
    Change,
    CheckConclusion,
    CheckResult,
    CommitInfo,
    Deployment,
    DeploymentApproval,
    FileChange,
    FileStatus,
    Provenance,
    Record,
    Review,
    canonical_json,
    sha256_bytes,
)
from changeproof.gate import GateEvidence, GateRequest, Recorded, Verdict, decide
from changeproof.settings import Settings

if TYPE_CHECKING:
    import httpx

TOKEN_VARS = ("CHANGEPROOF_GITHUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN")
FINAL = {"success": "success", "failure": "failure", "error": "error", "inactive": "inactive"}
STATUS_MAP = {
    "success": "success",
    "failure": "failure",
    "error": "error",
    "inactive": "inactive",
    "in_progress": "in_progress",
    "queued": "queued",
    "pending": "queued",
}
COMMIT_STATUS = {"success": "success", "failure": "failure", "error": "error", "pending": "pending"}


def _conclusion(value: Any) -> CheckConclusion:
    """A check-run conclusion; anything unknown counts as not finished (never success)."""
    v = str(value).lower()
    for known in get_args(CheckConclusion):
        if v == known:
            return known  # type: ignore[no-any-return]
    return "pending"


FILE_STATUS: dict[str, FileStatus] = {
    "added": "added",
    "removed": "deleted",
    "modified": "modified",
    "renamed": "renamed",
    "copied": "copied",
    "changed": "type_changed",
}


def _files(items: list[Any]) -> tuple[FileChange, ...]:
    return tuple(
        FileChange(
            path=str(f["filename"]),
            status=FILE_STATUS.get(str(f.get("status")), "modified"),
            previous_path=f.get("previous_filename"),
            additions=f.get("additions"),
            deletions=f.get("deletions"),
        )
        for f in items
    )


def _ts(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


def _user(node: Any) -> Actor | None:
    if not isinstance(node, dict) or not node.get("login"):
        return None
    kind = "bot" if node.get("type") == "Bot" or str(node["login"]).endswith("[bot]") else "user"
    return Actor(login=str(node["login"]), type=kind)  # type: ignore[arg-type]


def _git_actor(person: Any, account: Any) -> Actor:
    login = account.get("login") if isinstance(account, dict) else None
    person = person if isinstance(person, dict) else {}
    return (
        Actor(
            login=login,
            name=person.get("name") or None,
            email=person.get("email") or None,
        )
        if (login or person.get("name") or person.get("email"))
        else Actor(name="unknown")
    )


class LiveGitHub:
    """The few REST reads the live gate needs, over an injectable transport."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        max_retries: int = 2,
    ) -> None:
        from changeproof.sources.github.auth import token_auth
        from changeproof.sources.github.collector import github_error_mapper
        from changeproof.sources.http import HttpClient

        self.client = HttpClient(
            api_url,
            auth=token_auth(token),
            transport=transport,
            timeout_s=20.0,
            max_retries=max_retries,
            max_wait_s=60.0,
            error_mapper=github_error_mapper,
        )
        self.payloads: list[tuple[str, Any]] = []  # (path, json) as received, for the locker

    def close(self) -> None:
        self.client.close()

    def get(self, path: str, **params: Any) -> Any:
        data = self.client.get_json(path, params=params or None)
        self.payloads.append((path, data))
        return data

    def pages(
        self, path: str, item_key: str | None = None, max_pages: int | None = None, **params: Any
    ) -> list[Any]:
        out: list[Any] = []
        for _, items in self.client.paginate(
            path, params=params or None, item_key=item_key, max_pages=max_pages
        ):
            out.extend(items)
        self.payloads.append((path, out))
        return out


def _checks(gh: LiveGitHub, repo: str, sha: str) -> tuple[CheckResult, ...]:
    out: list[CheckResult] = []
    for run in gh.pages(f"/repos/{repo}/commits/{sha}/check-runs", item_key="check_runs"):
        concl = run.get("conclusion") or (
            "pending" if run.get("status") != "completed" else "neutral"
        )
        out.append(
            CheckResult(
                name=str(run["name"]),
                conclusion=_conclusion(concl),
                commit_sha=sha,
                completed_at=_ts(run.get("completed_at")),
                started_at=_ts(run.get("started_at")),
                app=(run.get("app") or {}).get("slug"),
                kind="check_run",
                url=run.get("html_url") or run.get("details_url"),
            )
        )
    combined = gh.get(f"/repos/{repo}/commits/{sha}/status")
    for st in combined.get("statuses") or []:
        state = COMMIT_STATUS.get(str(st.get("state")), "pending")
        out.append(
            CheckResult(
                name=str(st.get("context")),
                conclusion=state,  # type: ignore[arg-type]
                commit_sha=sha,
                completed_at=_ts(st.get("updated_at") or st.get("created_at"))
                if state != "pending"
                else None,
                creator=(st.get("creator") or {}).get("login"),
                kind="status",
                url=st.get("target_url"),
            )
        )
    return tuple(out)


def fetch_change(
    gh: LiveGitHub, repo: str, sha: str, settings: Settings, now: datetime, raw: str
) -> tuple[Change, str | None]:
    """The commit's change as GitHub knows it, and the branch it landed on (None: unknown)."""
    prov = Provenance(source="github", occurred_at=now, collected_at=now, raw_sha256=raw)
    pulls = gh.get(f"/repos/{repo}/commits/{sha}/pulls")
    merged = [p for p in pulls if p.get("merged_at")]
    pick = next((p for p in merged if p.get("merge_commit_sha") == sha), None)
    if pick is None:
        pick = next((p for p in merged if (p.get("head") or {}).get("sha") == sha), None)
    if pick is None:
        info = gh.get(f"/repos/{repo}")
        default = str(info.get("default_branch") or "main")
        cmp = gh.get(f"/repos/{repo}/compare/{default}...{sha}")
        on_default = cmp.get("status") in ("identical", "behind")
        commit = gh.get(f"/repos/{repo}/commits/{sha}")
        c = commit.get("commit") or {}
        author = _git_actor(c.get("author"), commit.get("author"))
        committer = _git_actor(c.get("committer"), commit.get("committer"))
        at = _ts((c.get("committer") or {}).get("date")) or now
        ci = CommitInfo(
            sha=sha,
            parents=tuple(p["sha"] for p in commit.get("parents") or []),
            author=author,
            committer=committer,
            authored_at=_ts((c.get("author") or {}).get("date")) or at,
            committed_at=at,
            message=str(c.get("message") or ""),
        )
        change = Change(
            repo=repo,
            branch=default,
            change_type="direct_push",
            platform="github",
            merged_at=at,
            merge_sha=sha,
            landed_shas=(sha,),
            title=ci.message.split("\n", 1)[0],
            merged_by=committer,
            commits=(ci,),
            reviews=(),
            checks=_checks(gh, repo, sha),
            files=_files(commit.get("files") or []),
            provenance=prov,
        )
        return change, default if on_default else None
    number = int(pick["number"])
    pr = gh.get(f"/repos/{repo}/pulls/{number}")
    head = str((pr.get("head") or {}).get("sha") or sha)
    merged_at = _ts(pr.get("merged_at")) or now
    reviews = []
    for r in gh.pages(f"/repos/{repo}/pulls/{number}/reviews"):
        who = _user(r.get("user"))
        submitted = _ts(r.get("submitted_at"))
        if (
            who is None
            or submitted is None
            or r.get("state") not in ("APPROVED", "CHANGES_REQUESTED", "COMMENTED", "DISMISSED")
        ):
            continue
        reviews.append(
            Review(
                reviewer=who,
                state=r["state"],
                submitted_at=submitted,
                commit_sha=r.get("commit_id"),
                url=r.get("html_url"),
            )
        )
    commits = []
    for c in gh.pages(f"/repos/{repo}/pulls/{number}/commits"):
        g = c.get("commit") or {}
        author = _git_actor(g.get("author"), c.get("author"))
        committer = _git_actor(g.get("committer"), c.get("committer"))
        at = _ts((g.get("committer") or {}).get("date")) or merged_at
        commits.append(
            CommitInfo(
                sha=str(c["sha"]),
                parents=tuple(p["sha"] for p in c.get("parents") or []),
                author=author,
                committer=committer,
                authored_at=_ts((g.get("author") or {}).get("date")) or at,
                committed_at=at,
                message=str(g.get("message") or ""),
            )
        )
    merge_sha = str(pr.get("merge_commit_sha") or sha)
    landed = (merge_sha,) if merge_sha == sha else (merge_sha, sha) if sha != head else (merge_sha,)
    change = Change(
        repo=repo,
        branch=str((pr.get("base") or {}).get("ref") or "main"),
        number=number,
        change_type="merge",
        platform="github",
        merged_at=merged_at,
        merge_sha=merge_sha if merge_sha in landed else landed[0],
        landed_shas=landed,
        base_sha=(pr.get("base") or {}).get("sha"),
        head_sha=head,
        title=str(pr.get("title") or ""),
        body=str(pr.get("body") or ""),
        author=_user(pr.get("user")),
        merged_by=_user(pr.get("merged_by")),
        head_ref=(pr.get("head") or {}).get("ref"),
        commits=tuple(commits),
        reviews=tuple(reviews),
        checks=_checks(gh, repo, head),
        labels=tuple(str(lab.get("name")) for lab in pr.get("labels") or [] if lab.get("name")),
        files=_files(gh.pages(f"/repos/{repo}/pulls/{number}/files")),
        files_total=pr.get("changed_files"),
        provenance=prov,
    )
    return change, change.branch


def _deployment(
    d: dict[str, Any], statuses: list[Any], repo: str, sha: str, now: datetime, raw: str
) -> Deployment:
    latest = max(statuses, key=lambda st: str(st.get("created_at")), default=None)
    state = STATUS_MAP.get(str((latest or {}).get("state")), "queued")
    started = _ts(d.get("created_at")) or now
    finished = _ts(latest.get("created_at")) if latest and state in FINAL else None
    return Deployment(
        id=f"github:{repo}:{d['id']}",
        repo=repo,
        environment=str(d.get("environment")),
        commit_sha=str(d.get("sha") or sha),
        status=state,  # type: ignore[arg-type]
        started_at=started,
        finished_at=finished if finished and finished >= started else None,
        actor=_user(d.get("creator")),
        url=(latest or {}).get("log_url") or (latest or {}).get("target_url"),
        system="github",
        provenance=Provenance(
            source="github", occurred_at=started, collected_at=now, raw_sha256=raw
        ),
    )


def fetch_deployments(
    gh: LiveGitHub, repo: str, sha: str, now: datetime, raw: str
) -> list[Deployment]:
    out = []
    for d in gh.pages(f"/repos/{repo}/deployments", sha=sha):
        statuses = gh.pages(f"/repos/{repo}/deployments/{d['id']}/statuses")
        out.append(_deployment(d, statuses, repo, sha, now, raw))
    return out


def previous_production(
    gh: LiveGitHub, repo: str, env: str, sha: str, now: datetime, raw: str
) -> Deployment | None:
    """The latest deployment to ``env`` of another commit that succeeded (GitHub lists the
    newest first; "inactive" means it succeeded and was later replaced)."""
    for d in gh.pages(f"/repos/{repo}/deployments", max_pages=1, environment=env)[:20]:
        if d.get("sha") == sha:
            continue
        dep = _deployment(
            d, gh.pages(f"/repos/{repo}/deployments/{d['id']}/statuses"), repo, sha, now, raw
        )
        if dep.status in ("success", "inactive") and dep.started_at <= now:
            return dep
    return None


def first_parent_since(gh: LiveGitHub, repo: str, prev: str, sha: str) -> list[str] | None:
    """First-parent commits after ``prev`` up to ``sha`` (newest first); None when ``sha`` is
    at or before ``prev`` (a redeploy or rollback)."""
    cmp = gh.get(f"/repos/{repo}/compare/{prev}...{sha}")
    status = str(cmp.get("status"))
    if status in ("behind", "identical"):
        return None
    if status != "ahead":
        raise SourceError(
            f"{sha[:12]} does not descend from the commit production runs now ({prev[:12]}; "
            f"GitHub compare says {status!r}), so what this deployment ships is unclear",
            expected="a deployment of a later commit of the same branch",
            hint="deploy from the controlled branch, or use the store-backed gate",
        )
    commits = cmp.get("commits") or []
    if int(cmp.get("total_commits") or len(commits)) > len(commits):
        raise SourceError(
            f"{cmp.get('total_commits')} commits since the previous production deployment: more "
            "than GitHub's compare lists, so the shipped changes cannot all be judged live",
            hint="use the store-backed gate (collect, then `changeproof gate` without --live)",
        )
    parents = {str(c["sha"]): [str(p["sha"]) for p in c.get("parents") or []] for c in commits}
    out: list[str] = []
    cur: str | None = sha
    while cur is not None and cur in parents and cur != prev:
        out.append(cur)
        cur = parents[cur][0] if parents[cur] else None
    return out


def run_approvals(
    gh: LiveGitHub, repo: str, run_id: int, env: str, commit: str, now: datetime, raw: str
) -> list[DeploymentApproval]:
    """The environment reviewers' decisions on this workflow run (GitHub's deployment
    protection). The API gives no time; the job only runs after them, so they precede now."""
    out = []
    for i, a in enumerate(gh.pages(f"/repos/{repo}/actions/runs/{run_id}/approvals")):
        who = _user(a.get("user"))
        names = {str(e.get("name")) for e in a.get("environments") or []}
        if who is None or env not in names:
            continue
        out.append(
            DeploymentApproval(
                id=f"github:{repo}:run-{run_id}:{env}:{i}",
                repo=repo,
                environment=env,
                commit_sha=commit,
                approver=who,
                approved_at=now,
                state="approved" if a.get("state") == "approved" else "rejected",
                comment=str(a.get("comment") or ""),
                provenance=Provenance(
                    source="github", occurred_at=now, collected_at=now, raw_sha256=raw
                ),
            )
        )
    return out


def token_from_env() -> str:
    for var in TOKEN_VARS:
        value = os.environ.get(var)
        if value and value.strip():
            return value.strip()
    raise UsageError(
        "gate --live needs a GitHub token",
        expected=f"a token in one of {', '.join(TOKEN_VARS)}",
        hint="in GitHub Actions pass `env: GITHUB_TOKEN: ${{ github.token }}` "
        "(permissions: contents, pull-requests, checks, deployments: read)",
    )


def live_evidence(
    gh: LiveGitHub, req: GateRequest, settings: Settings, run_id: int | None = None
) -> tuple[GateEvidence, list[Record], bytes]:
    """Fetch and map; the raw responses are hashed first so every record can name them."""
    # Two passes would double the API calls: map with a placeholder digest, then restamp.
    placeholder = "0" * 64
    change, branch = fetch_change(gh, req.repo, req.commit, settings, req.now, placeholder)
    full = req.commit if len(req.commit) == 40 else change.merge_sha
    deployments = fetch_deployments(gh, req.repo, full, req.now, placeholder)
    previous = previous_production(gh, req.repo, req.environment, full, req.now, placeholder)
    approvals = (
        run_approvals(gh, req.repo, run_id, req.environment, full, req.now, placeholder)
        # only the release-manager model reads them (and needs the token's actions: read)
        if run_id is not None and settings.deployment.model == "release_manager"
        else []
    )
    others: list[Change] = []
    notes = ["live mode: judged from GitHub's API"]
    if previous is None:
        notes.append(
            "no earlier successful production deployment on GitHub: only this commit's own "
            "change is judged (the store-backed gate judges the whole history)"
        )
    else:
        walk = first_parent_since(gh, req.repo, previous.commit_sha, full)
        if walk is None:
            notes.append(
                "redeploying or rolling back to a commit at or before the previous production "
                "deployment: only its own change is judged"
            )
        seen = {change.id}
        for c_sha in walk or []:
            if c_sha in change.landed_shas:
                continue
            other, _ = fetch_change(gh, req.repo, c_sha, settings, req.now, placeholder)
            if other.id not in seen:
                seen.add(other.id)
                others.append(other)
    raw = canonical_json(
        {
            "type": "changeproof.gate.live/v1",
            "api": gh.client.base_url,
            "responses": [{"path": p, "body": b} for p, b in gh.payloads],
        }
    )
    sha = sha256_bytes(raw)
    import msgspec

    def stamp(r: Any) -> Any:
        return msgspec.structs.replace(
            r, provenance=msgspec.structs.replace(r.provenance, raw_sha256=sha)
        )

    change = stamp(change)
    others = [stamp(c) for c in others]
    deployments = [stamp(d) for d in deployments]
    approvals = [stamp(a) for a in approvals]
    prev_rec = stamp(previous) if previous is not None else None
    from changeproof.evidence import digest

    pairs_d = tuple((digest(d), d) for d in deployments)
    cdig = digest(change)
    shipped = sorted(
        [(digest(c), c) for c in others] + [(cdig, change)], key=lambda p: p[1].merged_at
    )
    ev = GateEvidence(
        commit=full,
        branch=branch,
        change=(cdig, change),
        shipped=tuple(shipped),
        previous=(digest(prev_rec), prev_rec) if prev_rec is not None else None,
        deployments=pairs_d,
        approvals=tuple((digest(a), a) for a in approvals),
        context=Context(settings=settings, now=req.now),
        notes=tuple(notes),
    )
    extra: list[Record] = [*others, change, *deployments, *approvals]
    if prev_rec is not None:
        extra.append(prev_rec)
    return ev, extra, raw


def run_live(
    ws: Any,
    settings: Settings,
    req: GateRequest,
    *,
    api_url: str,
    transport: httpx.BaseTransport | None = None,
    token: str | None = None,
    run_id: int | None = None,
) -> tuple[Verdict, Recorded]:
    if "/" not in req.repo:
        raise UsageError(f"--repo {req.repo!r} is not OWNER/NAME", expected="e.g. acme/api")
    gh = LiveGitHub(api_url, token or token_from_env(), transport=transport)
    try:
        ev, _mapped, raw = live_evidence(gh, req, settings, run_id)
    except SourceError:
        raise
    except Exception as exc:  # an unexpected payload shape is "cannot decide", never allow
        raise SourceError(
            f"GitHub answered in a shape the live gate cannot read ({type(exc).__name__}: {exc})",
            hint="run without --live against a collected store, or report this response",
        ) from None
    finally:
        gh.close()
    verdict = decide(req, ev, settings)
    # The raw responses are an input too: the records the decision read are re-derivable
    # from them. The mapped records themselves are not stored: a change written here would
    # re-index its commits outside the collectors' first-parent order.
    import dataclasses

    verdict = dataclasses.replace(
        verdict, inputs=tuple(sorted({*verdict.inputs, sha256_bytes(raw)}))
    )
    from changeproof.gate import record
    from changeproof.gate_store import SqlAlchemyGateStore

    db = SqlAlchemyGateStore(ws.open_store(), ws.signer)  # creates the workspace if needed
    try:
        rec = record(db, verdict, "live", extra_raw=raw)
    finally:
        db.close()
    return verdict, rec
