"""GitHub JSON (GraphQL nodes and REST bodies) → neutral evidence records. Judges nothing."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from changeproof.evidence import (
    Actor,
    ActorKind,
    Bypass,
    Change,
    CheckResult,
    CommitInfo,
    Deployment,
    DeploymentApproval,
    FileChange,
    ProtectionRule,
    Provenance,
    Review,
    TimelineEvent,
)

SOURCE = "github"
MAX_FILES = 3000  # GitHub lists at most 3,000 files of a PR; beyond that evidence is partial
COAUTHOR_RE = re.compile(r"^Co-authored-by:\s*(.+?)\s*<([^>]+)>\s*$", re.M | re.I)
REVERT_RE = re.compile(r"This reverts commit ([0-9a-f]{7,40})")
RUN_ID_RE = re.compile(r"/actions/runs/(\d+)")

SIGNATURE = {
    "VALID": "good",
    "INVALID": "bad",
    "MALFORMED_SIG": "bad",
    "BAD_EMAIL": "bad",
    "UNKNOWN_SIG_TYPE": "bad",
    "EXPIRED_KEY": "expired",
}
FILE_STATUS = {
    "ADDED": "added",
    "MODIFIED": "modified",
    "DELETED": "deleted",
    "RENAMED": "renamed",
    "COPIED": "copied",
    "CHANGED": "type_changed",
}
STATUS_STATE = {
    "SUCCESS": "success",
    "FAILURE": "failure",
    "ERROR": "error",
    "PENDING": "pending",
    "EXPECTED": "pending",
}
TIMELINE_KIND = {
    "HeadRefForcePushedEvent": "force_push",
    "ReviewDismissedEvent": "review_dismissed",
    "AddedToMergeQueueEvent": "added_to_merge_queue",
    "RemovedFromMergeQueueEvent": "removed_from_merge_queue",
    "MergedEvent": "merged",
    "BaseRefChangedEvent": "base_changed",
    "ReadyForReviewEvent": "ready_for_review",
}
DEPLOY_STATE = {
    "SUCCESS": "success",
    "ACTIVE": "success",
    "FAILURE": "failure",
    "ERROR": "error",
    "IN_PROGRESS": "in_progress",
    "QUEUED": "queued",
    "PENDING": "queued",
    "WAITING": "queued",
    "INACTIVE": "inactive",
    "DESTROYED": "inactive",
    "ABANDONED": "inactive",
}


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def opt_ts(value: Any) -> datetime | None:
    return ts(value) if isinstance(value, str) and value else None


def actor(node: dict[str, Any] | None) -> Actor | None:
    """A GraphQL Actor (User, Bot, Mannequin, Organization, EnterpriseUserAccount)."""
    if not node or not node.get("login"):
        return None
    login = str(node["login"])
    typename = node.get("__typename", "User")
    kind: ActorKind = "user"
    if typename == "Bot" or login.endswith("[bot]"):
        kind = "bot"
    elif typename == "Mannequin":
        kind = "unknown"
    if typename == "Bot" and not login.endswith("[bot]"):
        login = f"{login}[bot]"  # GraphQL drops the suffix REST and git use for app bots
    return Actor(login=login, type=kind)


def rest_actor(node: dict[str, Any] | None) -> Actor | None:
    if not node or not node.get("login"):
        return None
    t = node.get("type", "User")
    kind: ActorKind = "bot" if t == "Bot" or str(node["login"]).endswith("[bot]") else "user"
    return Actor(login=str(node["login"]), type=kind)


def git_actor(node: dict[str, Any] | None) -> Actor:
    node = node or {}
    user = node.get("user") or {}
    login = user.get("login")
    name = node.get("name") or None
    email = node.get("email") or None
    kind: ActorKind = "bot" if (login or name or "").endswith("[bot]") else "user"
    if not (login or name or email):
        return Actor(name="unknown", type="unknown")
    return Actor(login=login, name=name, email=email, type=kind)


def co_authors(message: str) -> tuple[Actor, ...]:
    out = []
    for name, email in COAUTHOR_RE.findall(message):
        login = None
        if email.lower().endswith("@users.noreply.github.com"):
            login = email.split("@", 1)[0].split("+", 1)[-1]
        out.append(Actor(login=login, name=name or None, email=email or None))
    return tuple(out)


def signature(node: dict[str, Any] | None) -> tuple[str, str | None]:
    if not node:
        return "none", None
    state = str(node.get("state") or "")
    signer = (node.get("signer") or {}).get("login")
    return SIGNATURE.get(state, "unknown"), signer


def commit_info(node: dict[str, Any], parents: Sequence[str] = ()) -> CommitInfo:
    sig, signer = signature(node.get("signature"))
    message = str(node.get("message") or "")
    return CommitInfo(
        sha=str(node["oid"]),
        parents=tuple(parents),
        author=git_actor(node.get("author")),
        committer=git_actor(node.get("committer")),
        authored_at=ts(node.get("authoredDate") or node["committedDate"]),
        committed_at=ts(node["committedDate"]),
        message=message,
        co_authors=co_authors(message),
        signature=sig,  # type: ignore[arg-type]
        signer=signer,
    )


def check(node: dict[str, Any], commit_sha: str) -> CheckResult | None:
    t = node.get("__typename")
    if t == "CheckRun":
        conclusion = str(node.get("conclusion") or "").lower() or "pending"
        suite = node.get("checkSuite") or {}
        return CheckResult(
            name=str(node["name"]),
            conclusion=conclusion,  # type: ignore[arg-type]
            commit_sha=commit_sha,
            completed_at=opt_ts(node.get("completedAt")),
            started_at=opt_ts(node.get("startedAt")),
            app=(suite.get("app") or {}).get("slug"),
            kind="check_run",
            url=node.get("detailsUrl"),
        )
    if t == "StatusContext":
        state = STATUS_STATE.get(str(node.get("state")), "pending")
        return CheckResult(
            name=str(node["context"]),
            conclusion=state,  # type: ignore[arg-type]
            commit_sha=commit_sha,
            completed_at=opt_ts(node.get("createdAt")) if state != "pending" else None,
            creator=(node.get("creator") or {}).get("login"),
            kind="status",
            url=node.get("targetUrl"),
        )
    return None


def workflow_run(node: dict[str, Any]) -> dict[str, Any] | None:
    if node.get("__typename") != "CheckRun":
        return None
    run = (node.get("checkSuite") or {}).get("workflowRun")
    return run if isinstance(run, dict) and run.get("databaseId") else None


def timeline_event(node: dict[str, Any]) -> TimelineEvent | None:
    kind = TIMELINE_KIND.get(str(node.get("__typename")))
    if kind is None or not node.get("createdAt"):
        return None
    before = (node.get("beforeCommit") or {}).get("oid")
    after = (node.get("afterCommit") or {}).get("oid") or (node.get("commit") or {}).get("oid")
    detail = None
    if kind == "review_dismissed":
        detail = (node.get("review") or {}).get("id")
    elif kind == "base_changed":
        detail = f"{node.get('previousRefName')} → {node.get('currentRefName')}"
    elif kind == "removed_from_merge_queue":
        detail = node.get("reason")
    return TimelineEvent(
        type=kind,  # type: ignore[arg-type]
        at=ts(node["createdAt"]),
        actor=actor(node.get("actor")),
        before_sha=before,
        after_sha=after,
        detail=detail,
    )


def tickets(texts: Iterable[str], patterns: Sequence[str]) -> tuple[str, ...]:
    found: set[str] = set()
    for pat in patterns:
        rx = re.compile(pat)
        for text in texts:
            for m in rx.finditer(text or ""):
                found.add(m.group(0))
    return tuple(sorted(found))


def pull_request_change(
    pr: dict[str, Any],
    *,
    repo: str,
    branch: str,
    landed: Sequence[str] | None,
    renames: dict[str, str],
    ticket_patterns: Sequence[str],
    log_digests: dict[int, str],
    raw_sha256: str,
    collected_at: datetime,
) -> Change:
    """One merged PR (with its overflow pages already merged in) → a Change."""
    number = int(pr["number"])
    merged_at = ts(pr["mergedAt"])
    head = str(pr["headRefOid"])
    mc = pr.get("mergeCommit") or None
    merge_sha = str(mc["oid"]) if mc else head
    parents = [p["oid"] for p in ((mc or {}).get("parents") or {}).get("nodes", [])]
    timeline = [e for e in (timeline_event(n) for n in _nodes(pr, "timelineItems")) if e]
    timeline.sort(key=lambda e: e.at)
    queued = any(e.type == "added_to_merge_queue" and e.at <= merged_at for e in timeline)
    landed_shas = tuple(landed) if landed else (merge_sha,)
    if merge_sha not in landed_shas:
        landed_shas = (*landed_shas, merge_sha)
    commits_nodes = [n["commit"] for n in _nodes(pr, "commits")]
    subject = str((mc or {}).get("message") or "").split("\n", 1)[0]
    if mc is None:
        method = "fast_forward"
    elif len(parents) > 1:
        method = "merge"
    elif len(landed_shas) > 1:
        method = "rebase"
    elif subject.rstrip().endswith(f"(#{number})"):
        method = "squash"
    elif len(commits_nodes) == 1 and commits_nodes[0].get("message") == mc.get("message"):
        method = "rebase"
    else:
        method = "squash"
    ctype = "merge_queue" if queued else ("merge" if method == "fast_forward" else method)
    dismissals: dict[str, TimelineEvent] = {
        e.detail: e for e in timeline if e.type == "review_dismissed" and e.detail
    }
    reviews: list[Review] = []
    for r in _nodes(pr, "reviews"):
        who = actor(r.get("author"))
        if who is None or not r.get("submittedAt"):
            continue  # pending (unsubmitted) reviews and deleted accounts prove nothing
        d = dismissals.get(str(r.get("id")))
        reviews.append(
            Review(
                reviewer=who,
                state=r["state"],
                submitted_at=ts(r["submittedAt"]),
                commit_sha=(r.get("commit") or {}).get("oid"),
                dismissed_by=d.actor if d else None,
                dismissed_at=d.at if d else None,
                url=r.get("url"),
            )
        )
    checks: list[CheckResult] = []
    for n in _rollup(pr):
        c = check(n, head)
        if c is not None:
            run = workflow_run(n)
            if run is not None and int(run["databaseId"]) in log_digests:
                c = _with_log(c, log_digests[int(run["databaseId"])])
            checks.append(c)
    if queued and mc:
        for n in ((mc.get("statusCheckRollup") or {}).get("contexts") or {}).get("nodes", []):
            c = check(n, merge_sha)
            if c is not None:
                checks.append(c)
    files = [
        FileChange(
            path=str(f["path"]),
            status=FILE_STATUS.get(str(f.get("changeType")), "modified"),  # type: ignore[arg-type]
            previous_path=renames.get(str(f["path"])) if f.get("changeType") == "RENAMED" else None,
            additions=f.get("additions"),
            deletions=f.get("deletions"),
        )
        for f in _nodes(pr, "files")
    ]
    files_total = int(pr.get("changedFiles") or len(files))
    body = str(pr.get("body") or "")
    rev = REVERT_RE.search(body) or REVERT_RE.search(str((mc or {}).get("message") or ""))
    return Change(
        repo=repo,
        branch=branch,
        number=number,
        change_type=ctype,  # type: ignore[arg-type]
        platform="github",
        merged_at=merged_at,
        merge_sha=merge_sha,
        landed_shas=landed_shas,
        base_sha=parents[0] if parents else None,
        head_sha=head,
        title=str(pr.get("title") or ""),
        body=body,
        author=actor(pr.get("author")),
        merged_by=actor(pr.get("mergedBy")),
        merge_method=method,  # type: ignore[arg-type]
        merge_queue_sha=merge_sha if queued and mc else None,
        head_ref=pr.get("headRefName"),
        commits=tuple(commit_info(c) for c in commits_nodes),
        reviews=tuple(sorted(reviews, key=lambda r: r.submitted_at)),
        timeline=tuple(timeline),
        checks=tuple(checks),
        files=tuple(files),
        files_total=files_total,
        labels=tuple(str(n["name"]) for n in _nodes(pr, "labels")),
        tickets=tickets(
            [str(pr.get("title") or ""), body, str(pr.get("headRefName") or "")], ticket_patterns
        ),
        reverts=rev.group(1) if rev else None,
        provenance=Provenance(
            source=SOURCE,
            occurred_at=merged_at,
            collected_at=collected_at,
            raw_sha256=raw_sha256,
            url=pr.get("url"),
        ),
    )


def _with_log(c: CheckResult, digest: str) -> CheckResult:
    import msgspec

    return msgspec.structs.replace(c, log_sha256=digest)


def _nodes(pr: dict[str, Any], conn: str) -> list[dict[str, Any]]:
    value = pr.get(conn) or {}
    nodes = value.get("nodes") or []
    return [n for n in nodes if isinstance(n, dict)]


def _rollup(pr: dict[str, Any]) -> list[dict[str, Any]]:
    roll = pr.get("statusCheckRollup") or {}
    return [n for n in ((roll.get("contexts") or {}).get("nodes") or []) if isinstance(n, dict)]


def direct_push_change(
    node: dict[str, Any], *, repo: str, branch: str, raw_sha256: str, collected_at: datetime
) -> Change:
    parents = [p["oid"] for p in (node.get("parents") or {}).get("nodes", [])]
    info = commit_info(node, parents)
    return Change(
        repo=repo,
        branch=branch,
        change_type="direct_push" if parents else "initial",
        platform="github",
        merged_at=info.committed_at,
        merge_sha=info.sha,
        landed_shas=(info.sha,),
        base_sha=parents[0] if parents else None,
        head_sha=info.sha,
        title=info.message.split("\n", 1)[0],
        body=info.message.split("\n", 1)[1].strip() if "\n" in info.message else "",
        author=info.author,
        merged_by=info.committer,
        merge_method="unknown",
        commits=(info,),
        reviews=(),  # GitHub shows no pull request for it: nobody was asked to review
        files=None,
        provenance=Provenance(
            source=SOURCE,
            occurred_at=info.committed_at,
            collected_at=collected_at,
            raw_sha256=raw_sha256,
        ),
    )


# --- configuration ---------------------------------------------------------------------------


# GitHub App ids of well-known check producers, so a required check pinned to an app id can be
# compared with the app slug on its check runs; others are learnt from collected check runs.
KNOWN_APPS = {"15368": "github-actions", "57789": "dependabot"}


def app_slug(app_id: Any, apps: dict[str, str]) -> str | None:
    if app_id in (None, -1, "-1"):
        return None
    key = str(app_id)
    return apps.get(key) or KNOWN_APPS.get(key) or key


def apps_seen(prs: list[dict[str, Any]]) -> dict[str, str]:
    """App id → slug for every check run's app in these PR nodes."""
    out: dict[str, str] = {}
    for pr in prs:
        for n in _rollup(pr):
            app = (n.get("checkSuite") or {}).get("app") or {}
            if app.get("databaseId") is not None and app.get("slug"):
                out[str(app["databaseId"])] = str(app["slug"])
    return out


def classic_layer(body: dict[str, Any], apps: dict[str, str] | None = None) -> ProtectionRule:
    """``GET /repos/{o}/{r}/branches/{b}/protection`` → one layer."""
    reviews = body.get("required_pull_request_reviews") or None
    checks = body.get("required_status_checks") or None
    required: list[tuple[str, str | None]] = []
    if checks:
        for c in checks.get("checks") or []:
            required.append((str(c["context"]), app_slug(c.get("app_id"), apps or {})))
        if not required:
            required = [(str(c), None) for c in checks.get("contexts") or []]
    bypass: list[tuple[str, str]] = []
    allow = (reviews or {}).get("bypass_pull_request_allowances") or {}
    for u in allow.get("users") or []:
        bypass.append((f"user:{u.get('login')}", "pull_request"))
    for t in allow.get("teams") or []:
        bypass.append((f"team:{t.get('slug')}", "pull_request"))
    for a in allow.get("apps") or []:
        bypass.append((f"app:{a.get('slug')}", "pull_request"))
    enforce_admins = bool((body.get("enforce_admins") or {}).get("enabled"))
    if not enforce_admins:
        bypass.append(("role:admin", "always"))
    return ProtectionRule(
        layer="classic",
        requires_pr=reviews is not None,
        required_approvals=int((reviews or {}).get("required_approving_review_count") or 0),
        dismiss_stale=bool((reviews or {}).get("dismiss_stale_reviews")),
        require_last_push_approval=bool((reviews or {}).get("require_last_push_approval")),
        require_code_owner_review=bool((reviews or {}).get("require_code_owner_reviews")),
        required_checks=tuple(required),
        strict_checks=bool((checks or {}).get("strict")),
        allow_force_push=bool((body.get("allow_force_pushes") or {}).get("enabled")),
        allow_deletion=bool((body.get("allow_deletions") or {}).get("enabled")),
        enforce_admins=enforce_admins,
        bypass_actors=tuple(bypass),
    )


def ruleset_applies(ruleset: dict[str, Any], branch: str, default_branch: str | None) -> bool:
    if ruleset.get("target", "branch") != "branch":
        return False
    cond = (ruleset.get("conditions") or {}).get("ref_name") or {}
    include = cond.get("include") or []
    exclude = cond.get("exclude") or []
    ref = f"refs/heads/{branch}"

    def hit(pat: str) -> bool:
        if pat == "~ALL":
            return True
        if pat == "~DEFAULT_BRANCH":
            return branch == default_branch
        return fnmatch.fnmatchcase(ref, pat) or fnmatch.fnmatchcase(branch, pat)

    return any(hit(p) for p in include) and not any(hit(p) for p in exclude)


def ruleset_layer(ruleset: dict[str, Any], apps: dict[str, str] | None = None) -> ProtectionRule:
    """A ruleset (repository or organisation) with its rules and bypass actors → one layer."""
    rules = {r.get("type"): r.get("parameters") or {} for r in ruleset.get("rules") or []}
    pr = rules.get("pull_request")
    checks = rules.get("required_status_checks")
    required: list[tuple[str, str | None]] = []
    for c in (checks or {}).get("required_status_checks") or []:
        required.append((str(c["context"]), app_slug(c.get("integration_id"), apps or {})))
    bypass = tuple(
        (f"{b.get('actor_type', '?')}:{b.get('actor_id')}", str(b.get("bypass_mode", "always")))
        for b in ruleset.get("bypass_actors") or []
    )
    enforcement = str(ruleset.get("enforcement") or "active")
    source = str(ruleset.get("source_type") or "Repository").lower()
    return ProtectionRule(
        layer=f"ruleset:{ruleset.get('id')}:{ruleset.get('name')}"
        + (":org" if source == "organization" else ""),
        enforcement=enforcement if enforcement in ("active", "evaluate") else "disabled",  # type: ignore[arg-type]
        requires_pr=pr is not None,
        required_approvals=int((pr or {}).get("required_approving_review_count") or 0),
        dismiss_stale=bool((pr or {}).get("dismiss_stale_reviews_on_push")),
        require_last_push_approval=bool((pr or {}).get("require_last_push_approval")),
        require_code_owner_review=bool((pr or {}).get("require_code_owner_review")),
        required_checks=tuple(required),
        strict_checks=bool((checks or {}).get("strict_required_status_checks_policy")),
        allow_force_push="non_fast_forward" not in rules,
        allow_deletion="deletion" not in rules,
        enforce_admins=not bypass,
        bypass_actors=bypass,
        merge_queue="merge_queue" in rules,
    )


def environment_layer(env: dict[str, Any]) -> ProtectionRule:
    """An environment's protection rules, as a layer (required reviewers → approvals)."""
    approvals = 0
    for rule in env.get("protection_rules") or []:
        if rule.get("type") == "required_reviewers" and rule.get("reviewers"):
            approvals = 1  # GitHub: one of the listed reviewers suffices
    bypass: tuple[tuple[str, str], ...] = ()
    if env.get("can_admins_bypass", True):
        bypass = (("role:admin", "always"),)
    return ProtectionRule(
        layer=f"environment:{env.get('name')}",
        required_approvals=approvals,
        bypass_actors=bypass,
        enforce_admins=not bypass,
    )


def rule_suite_bypass(
    item: dict[str, Any], *, repo: str, raw_sha256: str, collected_at: datetime
) -> Bypass:
    ref = str(item.get("ref") or "")
    at = ts(item["pushed_at"])
    return Bypass(
        id=f"rule_suite:{repo}:{item['id']}",
        repo=repo,
        branch=ref.removeprefix("refs/heads/") or None,
        actor=Actor(login=str(item["actor_name"])) if item.get("actor_name") else None,
        at=at,
        source="rule_suite",
        detail=f"{item.get('before_sha', '')[:12]}..{item.get('after_sha', '')[:12]} "
        f"result={item.get('result')}",
        provenance=Provenance(
            source=SOURCE, occurred_at=at, collected_at=collected_at, raw_sha256=raw_sha256
        ),
    )


def audit_bypass(
    event: dict[str, Any], *, raw_sha256: str, collected_at: datetime
) -> Bypass | None:
    repo = event.get("repo")
    when = event.get("@timestamp") or event.get("created_at")
    if not isinstance(repo, str) or when is None:
        return None
    at = (
        datetime.fromtimestamp(int(when) / 1000, tz=collected_at.tzinfo)
        if isinstance(when, int)
        else ts(str(when))
    )
    branch = event.get("branch")
    who = event.get("actor")
    return Bypass(
        id=f"audit_log:{event.get('_document_id') or f'{repo}:{when}'}",
        repo=repo,
        branch=str(branch).removeprefix("refs/heads/") if branch else None,
        actor=Actor(login=str(who)) if who else None,
        at=at,
        source="audit_log",
        detail=str(event.get("action") or "protected_branch.policy_override"),
        provenance=Provenance(
            source=SOURCE, occurred_at=at, collected_at=collected_at, raw_sha256=raw_sha256
        ),
    )


def deployment(
    node: dict[str, Any], *, repo: str, raw_sha256: str, collected_at: datetime
) -> Deployment:
    statuses = sorted(
        (s for s in (node.get("statuses") or {}).get("nodes", []) if s.get("createdAt")),
        key=lambda s: s["createdAt"],
    )
    final = [s for s in statuses if s["state"] in ("SUCCESS", "FAILURE", "ERROR", "INACTIVE")]
    latest = statuses[-1]["state"] if statuses else str(node.get("state") or "PENDING")
    # A deployment to a protected environment is created, waits for its reviewers, and only
    # then runs: it starts with its first running (or final) status, not at creation.
    ran = [s for s in statuses if s["state"] in ("IN_PROGRESS", "SUCCESS", "FAILURE", "ERROR")]
    started = ts(ran[0]["createdAt"]) if ran else ts(node["createdAt"])
    return Deployment(
        id=f"github:{repo}:{node['databaseId']}",
        repo=repo,
        environment=str(node.get("environment") or "unknown"),
        commit_sha=str(node["commitOid"]),
        status=DEPLOY_STATE.get(latest, "started"),  # type: ignore[arg-type]
        started_at=started,
        finished_at=ts(final[-1]["createdAt"]) if final else None,
        actor=actor(node.get("creator")),
        url=next((s.get("logUrl") for s in reversed(statuses) if s.get("logUrl")), None),
        system="github",
        provenance=Provenance(
            source=SOURCE, occurred_at=started, collected_at=collected_at, raw_sha256=raw_sha256
        ),
    )


def waited_run_id(node: dict[str, Any]) -> tuple[int, datetime] | None:
    """(workflow run id, approval time) of a deployment that waited for reviewers.

    GitHub's approvals API has no timestamp; the first status after WAITING marks the decision.
    """
    statuses = sorted(
        (s for s in (node.get("statuses") or {}).get("nodes", []) if s.get("createdAt")),
        key=lambda s: s["createdAt"],
    )
    for i, s in enumerate(statuses):
        if s["state"] == "WAITING":
            after = statuses[i + 1] if i + 1 < len(statuses) else None
            for cand in (after, s, *statuses):
                m = RUN_ID_RE.search(str((cand or {}).get("logUrl") or ""))
                if m:
                    when = ts((after or s)["createdAt"])
                    return int(m.group(1)), when
            return None
    return None


def approvals(
    items: list[dict[str, Any]],
    *,
    repo: str,
    run_id: int,
    commit_sha: str,
    at: datetime,
    raw_sha256: str,
    collected_at: datetime,
) -> list[DeploymentApproval]:
    out = []
    for i, item in enumerate(items):
        who = rest_actor(item.get("user"))
        if who is None:
            continue
        for env in item.get("environments") or [{"name": "unknown"}]:
            out.append(
                DeploymentApproval(
                    id=f"github:{repo}:run{run_id}:{i}:{env.get('name')}",
                    repo=repo,
                    environment=str(env.get("name")),
                    commit_sha=commit_sha,
                    approver=who,
                    approved_at=at,
                    state="rejected" if item.get("state") == "rejected" else "approved",
                    comment=str(item.get("comment") or ""),
                    provenance=Provenance(
                        source=SOURCE,
                        occurred_at=at,
                        collected_at=collected_at,
                        raw_sha256=raw_sha256,
                    ),
                )
            )
    return out
