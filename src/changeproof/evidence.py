"""Neutral evidence: frozen, typed records validated at construction.

Sources map raw payloads into these records and judge nothing; controls read them and fetch
nothing. Every top-level record carries its :class:`Provenance` (where it came from, when it
happened, when we saw it, and the SHA-256 of the raw payload kept in the locker).

Records are ``msgspec.Struct`` classes: immutable, typed, and decoded from the store far faster
than general-purpose models (the check must stream >= 20,000 changes/s). Invariants that types
cannot express are enforced in ``__post_init__``; decoding runs the same checks, so an invalid
record cannot exist either way.
"""

from __future__ import annotations

import functools
import hashlib
import re
from datetime import UTC, date, datetime
from typing import Any, ClassVar, Literal

import msgspec

ActorKind = Literal["user", "bot", "app", "service", "ai", "unknown"]
ChangeKind = Literal[
    "merge",  # a merge commit of a PR/MR (GitHub "Merge pull request", GitLab "See merge request")
    "squash",  # a squash-merge of a PR ("title (#N)")
    "rebase",  # a run of commits landed by a rebase merge
    "merge_queue",  # landed by a merge queue
    "gerrit",  # a Gerrit-submitted change (Reviewed-on trailer)
    "direct_push",  # unattributed: nobody proposed it for review
    "initial",  # the root commit of the repository
]
ReviewState = Literal["APPROVED", "CHANGES_REQUESTED", "COMMENTED", "DISMISSED", "PENDING"]
CheckConclusion = Literal[
    "success",
    "failure",
    "neutral",
    "skipped",
    "cancelled",
    "timed_out",
    "action_required",
    "stale",
    "startup_failure",
    "error",
    "pending",
]
SignatureStatus = Literal["none", "good", "bad", "unknown", "expired", "revoked"]
FileStatus = Literal["added", "modified", "deleted", "renamed", "copied", "type_changed"]
Platform = Literal["git", "github", "gitlab", "gerrit"]

WEB_FLOW_COMMITTERS = frozenset({"web-flow", "GitHub", "noreply@github.com"})


class Record(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base for every evidence record: frozen, keyword-only, strict on unknown fields."""

    kind: ClassVar[str] = "record"


def utc(value: datetime) -> datetime:
    """Normalise an aware datetime to UTC; refuse naive ones (their zone is a guess)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"timestamp {value.isoformat()} has no time zone")
    return value.astimezone(UTC)


def _require_aware(name: str, value: datetime | None) -> None:
    # decoded timestamps carry UTC itself: skip utcoffset() (it runs for every record decoded;
    # the records a check decodes by the million test for UTC before calling this at all)
    if (
        value is not None
        and value.tzinfo is not UTC
        and (value.tzinfo is None or value.utcoffset() is None)
    ):
        raise ValueError(f"{name} must carry a time zone, got {value.isoformat()}")


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _require_sha256(name: str, value: str) -> None:
    if not _HEX64.fullmatch(value):
        raise ValueError(f"{name} must be a lowercase hex SHA-256 digest, got {value!r}")


class Provenance(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where a record came from and how to find its raw payload in the locker."""

    source: str
    occurred_at: datetime
    collected_at: datetime
    raw_sha256: str
    url: str | None = None

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("provenance.source must not be empty")
        if self.occurred_at is not None and self.occurred_at.tzinfo is not UTC:
            _require_aware("occurred_at", self.occurred_at)
        if self.collected_at is not None and self.collected_at.tzinfo is not UTC:
            _require_aware("collected_at", self.collected_at)
        _require_sha256("raw_sha256", self.raw_sha256)


class Actor(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A person or machine identity as the system of record named it."""

    login: str | None = None
    name: str | None = None
    email: str | None = None
    type: ActorKind = "user"

    def __post_init__(self) -> None:
        if not (self.login or self.email or self.name):
            raise ValueError("an actor needs at least a login, an email or a name")

    @property
    def key(self) -> str:
        """A stable identity key: the login when known, else the lower-cased email, else name."""
        if self.login:
            return self.login.lower()
        if self.email:
            return self.email.lower()
        return (self.name or "").lower()

    def keys(self) -> frozenset[str]:
        """Every identifier this actor can be recognised by (login, email, name)."""
        return _actor_keys(self.login, self.email, self.name)


@functools.lru_cache(maxsize=65536)
def _actor_keys(login: str | None, email: str | None, name: str | None) -> frozenset[str]:
    # cached: the same people appear on change after change (and the check asks often)
    out = {k.lower() for k in (login, email) if k}
    if name and name.strip():
        # Forges often know a committer only by name and email, a reviewer only by login.
        # Matching display names too can only make a participant of someone (their approval
        # then doesn't count) — never make an approval count: the fail-closed direction.
        out.add("name:" + " ".join(name.lower().split()))
    if email and email.lower().endswith("@users.noreply.github.com"):
        # 12345+login@users.noreply.github.com and login@users.noreply.github.com
        local = email.split("@", 1)[0]
        out.add(local.split("+", 1)[-1].lower())
    return frozenset(out)


class CommitInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    sha: str
    parents: tuple[str, ...]
    author: Actor
    committer: Actor
    authored_at: datetime
    committed_at: datetime
    message: str
    co_authors: tuple[Actor, ...] = ()
    signature: SignatureStatus = "unknown"
    signer: str | None = None
    # net patch identity of merge-base..sha (git patch-id); None when not computed
    patch_id: str | None = None

    def __post_init__(self) -> None:
        if self.authored_at is not None and self.authored_at.tzinfo is not UTC:
            _require_aware("authored_at", self.authored_at)
        if self.committed_at is not None and self.committed_at.tzinfo is not UTC:
            _require_aware("committed_at", self.committed_at)
        if len(self.sha) < 7:
            raise ValueError(f"commit sha {self.sha!r} is too short")


class FileChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    path: str
    status: FileStatus = "modified"
    previous_path: str | None = None
    additions: int | None = None
    deletions: int | None = None

    def paths(self) -> tuple[str, ...]:
        """Old and new names: a rename into (or out of) a sensitive path is sensitive."""
        if self.previous_path and self.previous_path != self.path:
            return (self.path, self.previous_path)
        return (self.path,)


class Review(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reviewer: Actor
    state: ReviewState
    submitted_at: datetime
    commit_sha: str | None = None
    # the net patch-id of merge-base..commit_sha, when the source could compute it
    commit_patch_id: str | None = None
    dismissed_by: Actor | None = None
    dismissed_at: datetime | None = None
    source: str = "platform"  # platform | gerrit-trailer | record
    url: str | None = None

    def __post_init__(self) -> None:
        if self.submitted_at is not None and self.submitted_at.tzinfo is not UTC:
            _require_aware("submitted_at", self.submitted_at)
        if self.dismissed_at is not None and self.dismissed_at.tzinfo is not UTC:
            _require_aware("dismissed_at", self.dismissed_at)


TimelineKind = Literal[
    "push",
    "force_push",
    "review_dismissed",
    "base_changed",
    "added_to_merge_queue",
    "removed_from_merge_queue",
    "merged",
    "labeled",
    "unlabeled",
    "ready_for_review",
]


class TimelineEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type: TimelineKind
    at: datetime
    actor: Actor | None = None
    before_sha: str | None = None
    after_sha: str | None = None
    detail: str | None = None

    def __post_init__(self) -> None:
        if self.at is not None and self.at.tzinfo is not UTC:
            _require_aware("at", self.at)


class CheckResult(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A check run or a commit status on a commit."""

    name: str
    conclusion: CheckConclusion
    commit_sha: str
    completed_at: datetime | None = None
    started_at: datetime | None = None
    app: str | None = None  # app slug for check runs (binds a required check to its app)
    creator: str | None = None  # creator login for status contexts
    kind: Literal["check_run", "status", "pipeline", "job", "junit"] = "check_run"
    url: str | None = None
    log_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.completed_at is not None and self.completed_at.tzinfo is not UTC:
            _require_aware("completed_at", self.completed_at)
        if self.started_at is not None and self.started_at.tzinfo is not UTC:
            _require_aware("started_at", self.started_at)


class Change(Record, frozen=True, kw_only=True):
    """One landing on a controlled branch, with its evidence frozen as it stood at merge.

    ``reviews``, ``checks`` and ``files`` are ``None`` when the source could not see them at all
    (git history proves no review): controls then say ``indeterminate``, never ``pass``.
    """

    kind: ClassVar[str] = "change"

    repo: str
    branch: str
    number: int | None = None
    change_type: ChangeKind
    platform: Platform
    merged_at: datetime
    merge_sha: str  # the first-parent commit on the branch this change is attributed to
    landed_shas: tuple[str, ...]  # every first-parent commit attributed to this change
    base_sha: str | None = None
    head_sha: str | None = None
    title: str = ""
    body: str = ""
    author: Actor | None = None
    merged_by: Actor | None = None
    merge_method: Literal["merge", "squash", "rebase", "fast_forward", "unknown"] = "unknown"
    merge_queue_sha: str | None = None
    head_ref: str | None = None
    commits: tuple[CommitInfo, ...] = ()
    reviews: tuple[Review, ...] | None = None
    timeline: tuple[TimelineEvent, ...] = ()
    checks: tuple[CheckResult, ...] | None = None
    files: tuple[FileChange, ...] | None = None
    files_total: int | None = None  # as the platform counted them (can exceed len(files))
    labels: tuple[str, ...] = ()
    tickets: tuple[str, ...] = ()
    reverts: str | None = None  # sha this change reverts, when it says so
    head_patch_id: str | None = None  # net patch-id of merge-base..head
    merged_via: str | None = None  # "#N": merged as part of another change
    # other PRs/MRs whose commits landed through this change ("merged as part of"): they share
    # its verdict and are not counted again
    absorbed: tuple[str, ...] = ()
    provenance: Provenance

    def __post_init__(self) -> None:
        if self.merged_at is not None and self.merged_at.tzinfo is not UTC:
            _require_aware("merged_at", self.merged_at)
        if not self.repo:
            raise ValueError("change.repo must not be empty")
        if not self.landed_shas:
            raise ValueError("a change must land at least one commit")
        if self.merge_sha not in self.landed_shas:
            raise ValueError("change.merge_sha must be one of its landed_shas")
        if self.change_type == "direct_push" and self.number is not None:
            raise ValueError("a direct push has no PR/MR number")

    @property
    def id(self) -> str:
        """Stable subject id: ``repo#N`` for a PR/MR, ``repo@sha12`` otherwise."""
        if self.number is not None:
            return f"{self.repo}#{self.number}"
        return f"{self.repo}@{self.merge_sha[:12]}"


class Deployment(Record, frozen=True, kw_only=True):
    kind: ClassVar[str] = "deployment"

    id: str
    repo: str
    environment: str
    commit_sha: str
    status: Literal["started", "success", "failure", "in_progress", "queued", "error", "inactive"]
    started_at: datetime
    finished_at: datetime | None = None
    artifact: str | None = None  # "sha256:<hex>"
    actor: Actor | None = None
    url: str | None = None
    system: str = "record"  # github | gitlab | record | argo | …
    provenance: Provenance

    def __post_init__(self) -> None:
        _require_aware("started_at", self.started_at)
        _require_aware("finished_at", self.finished_at)
        if self.artifact is not None and not self.artifact.startswith("sha256:"):
            raise ValueError(f"artifact digest must look like sha256:<hex>, got {self.artifact!r}")


class DeploymentApproval(Record, frozen=True, kw_only=True):
    kind: ClassVar[str] = "deployment_approval"

    id: str
    repo: str
    environment: str
    commit_sha: str
    approver: Actor
    approved_at: datetime
    state: Literal["approved", "rejected"] = "approved"
    comment: str = ""
    provenance: Provenance

    def __post_init__(self) -> None:
        _require_aware("approved_at", self.approved_at)


class Emergency(Record, frozen=True, kw_only=True):
    kind: ClassVar[str] = "emergency"

    id: str
    repo: str
    subject: str  # change id or commit
    commit_sha: str | None = None
    incident: str
    approver: Actor
    declared_by: Actor | None = None
    declared_at: datetime
    reason: str = ""
    # the environment deployed under the emergency, the change ids it let through, and the
    # identity keys of their participants as known at declaration (so CM-EMG-1/2 can judge
    # independence from the record alone)
    environment: str | None = None
    covers: tuple[str, ...] = ()
    participants: tuple[str, ...] = ()
    provenance: Provenance

    def __post_init__(self) -> None:
        _require_aware("declared_at", self.declared_at)


GateOutcome = Literal["pass", "fail", "exception", "not_applicable", "indeterminate"]


class GateCheck(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One rule of a gate decision: which control it enforces, its outcome and why."""

    rule: str  # controlled-branch | changes | staging | authorisation | actor | emergency
    control: str
    outcome: GateOutcome
    reasons: tuple[str, ...]


class ShippedChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A change a deployment ships, with its worst review/testing outcome at decision time."""

    id: str
    outcome: GateOutcome
    digest: str  # sha256 of the change record judged
    failing: tuple[str, ...] = ()  # "CM-REV-1: reason" for each control not ok


class GateDecision(Record, frozen=True, kw_only=True):
    """The gate's allow/deny for one deployment: the production authorisation record.

    ``inputs`` are the sha256 digests of every evidence record the decision read, so the
    decision can be re-derived and checked against the locker.
    """

    kind: ClassVar[str] = "gate_decision"

    id: str
    repo: str
    environment: str
    commit_sha: str
    branch: str | None = None
    artifact: str | None = None
    actor: Actor | None = None
    triggered_by: Actor | None = None
    decision: Literal["allow", "deny"]
    emergency: str | None = None  # the Emergency id when allowed through the emergency path
    checks: tuple[GateCheck, ...]
    changes: tuple[ShippedChange, ...] = ()
    participants: tuple[str, ...] = ()
    previous_deployment: str | None = None
    inputs: tuple[str, ...] = ()
    settings_version: str
    tool_version: str
    mode: Literal["store", "live"] = "store"
    decided_at: datetime
    provenance: Provenance

    def __post_init__(self) -> None:
        _require_aware("decided_at", self.decided_at)
        if not self.checks:
            raise ValueError("a gate decision needs at least one rule result")


class RetroReview(Record, frozen=True, kw_only=True):
    kind: ClassVar[str] = "retro_review"

    id: str
    subject: str
    reviewer: Actor
    reviewed_at: datetime
    notes: str = ""
    provenance: Provenance

    def __post_init__(self) -> None:
        _require_aware("reviewed_at", self.reviewed_at)


class ExceptionGrant(Record, frozen=True, kw_only=True):
    """A recorded, approved, expiring exception to one control for one subject (or a glob)."""

    kind: ClassVar[str] = "exception"

    id: str
    control: str
    subject: str  # exact subject id, or a glob like "org/repo#*"
    reason: str
    approver: Actor
    granted_at: datetime
    expires_at: datetime
    provenance: Provenance

    def __post_init__(self) -> None:
        _require_aware("granted_at", self.granted_at)
        _require_aware("expires_at", self.expires_at)
        if self.expires_at <= self.granted_at:
            raise ValueError("an exception must expire after it was granted")
        if not self.reason.strip():
            raise ValueError("an exception needs a reason")


class ProtectionRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One layer of branch protection (classic protection or one ruleset), normalised."""

    layer: str  # "classic" | "ruleset:<id>:<name>" | "gitlab"
    enforcement: Literal["active", "evaluate", "disabled"] = "active"
    requires_pr: bool = False
    required_approvals: int = 0
    dismiss_stale: bool = False
    require_last_push_approval: bool = False
    require_code_owner_review: bool = False
    required_checks: tuple[tuple[str, str | None], ...] = ()  # (context, app slug/id or None)
    strict_checks: bool = False
    allow_force_push: bool = True
    allow_deletion: bool = True
    enforce_admins: bool = False
    bypass_actors: tuple[tuple[str, str], ...] = ()  # (actor, mode: always|pull_request)
    merge_queue: bool = False
    # GitLab-only project settings
    author_approval_allowed: bool | None = None
    committer_approval_allowed: bool | None = None
    reset_approvals_on_push: bool | None = None
    overriding_approvers_allowed: bool | None = None


class ProtectionSnapshot(Record, frozen=True, kw_only=True):
    """The protection of one branch as observed at ``provenance.occurred_at``."""

    kind: ClassVar[str] = "protection"

    repo: str
    branch: str
    layers: tuple[ProtectionRule, ...]
    log_retention_days: int | None = None
    readable: bool = True  # False when the token could not read the configuration
    # who changed the configuration to this version (ruleset history / audit log), if known
    changed_by: Actor | None = None
    provenance: Provenance


class TeamMembership(Record, frozen=True, kw_only=True):
    kind: ClassVar[str] = "team"

    team: str
    members: tuple[str, ...]
    provenance: Provenance  # occurred_at = when this membership was observed


class Bypass(Record, frozen=True, kw_only=True):
    kind: ClassVar[str] = "bypass"

    id: str
    repo: str
    branch: str | None
    actor: Actor | None
    at: datetime
    source: str  # rule_suite | audit_log | inferred
    detail: str = ""
    provenance: Provenance


class Coverage(Record, frozen=True, kw_only=True):
    """What a collection run covered, so completeness (CM-POP-1) can be judged."""

    kind: ClassVar[str] = "coverage"

    id: str
    source: str
    repo: str
    branch: str | None
    start: datetime | None  # None = from the beginning of history
    end: datetime
    complete: bool
    gaps: tuple[str, ...] = ()
    provenance: Provenance


class PolicyApproval(Record, frozen=True, kw_only=True):
    """Who approved which rendered Change Management Policy, and from which settings.

    ``document_sha256`` is the SHA-256 of the canonical Markdown rendering, whose bytes are
    the raw payload in the locker (so ``provenance.raw_sha256`` equals it).
    """

    kind: ClassVar[str] = "policy_approval"

    id: str  # "<policy_version>@<approved_at ISO>"
    policy_version: str
    document_sha256: str
    settings_version: str
    approver: Actor
    approved_at: datetime
    effective_date: date | None = None
    note: str = ""
    provenance: Provenance

    def __post_init__(self) -> None:
        _require_aware("approved_at", self.approved_at)
        _require_sha256("document_sha256", self.document_sha256)
        if not self.policy_version.strip():
            raise ValueError("a policy approval needs a policy version")


# --- vulnerability findings (changeproof.vuln) ----------------------------------------------

FindingCategory = Literal["dependency", "code", "config", "secret"]
SeverityTier = Literal["critical", "high", "medium", "low", "none"]
FixState = Literal["fixed", "not_fixed", "wont_fix", "unknown"]
FindingStatus = Literal["open", "fixed", "dismissed", "suppressed", "ignored"]


class SeverityInput(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """One severity statement a scanner made: a vector, a number and/or a label, and whose."""

    source: str  # nvd, ghsa, redhat, scanner, security-severity, …
    vector: str | None = None
    score: float | None = None
    label: str | None = None


class Scan(Record, frozen=True, kw_only=True):
    """One scanner output file ingested for a repository: what it covered and when it ran.

    ``coverage`` lists (category, target, ecosystem-or-"*") triples: a finding missing from a
    complete (non-partial) scan that covers it is verified absent; from anything else, not.
    """

    kind: ClassVar[str] = "scan"

    id: str
    repo: str
    scanner: str
    tool: str
    tool_version: str | None = None
    format: str  # e.g. "trivy-json/2", "npm-audit/2", "sarif/2.1.0"
    scanned_at: datetime
    scanned_at_source: Literal["option", "scanner", "ingest"] = "ingest"
    partial: bool = False
    targets: tuple[str, ...] = ()
    coverage: tuple[tuple[str, str, str], ...] = ()
    findings: int = 0
    skipped: tuple[str, ...] = ()  # packages the scanner could not audit
    file: str = ""
    notes: tuple[str, ...] = ()
    provenance: Provenance

    def __post_init__(self) -> None:
        _require_aware("scanned_at", self.scanned_at)
        if not self.repo:
            raise ValueError("scan.repo must not be empty")


class FindingObservation(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """One finding as one scan reported it. Lifecycles are derived from these, never stored.

    Stored in :class:`ScanFindings` batches (one row per up to 1,000 findings, so ingesting
    scanner output streams at tens of thousands of findings per second). Identity
    (changeproof.vuln.identity) uses repo, target, ecosystem, package and the advisory id with
    its aliases — never the installed version or the severity.
    """

    id: str  # "<scan id>/<n>"
    repo: str
    scan_id: str
    scanner: str
    scanned_at: datetime
    category: FindingCategory = "dependency"
    advisory_id: str
    aliases: tuple[str, ...] = ()
    package: str = ""
    ecosystem: str = ""
    version: str | None = None
    target: str = ""
    manifest: str | None = None
    title: str = ""
    url: str | None = None
    severities: tuple[SeverityInput, ...] = ()
    # the severity chosen by the documented order (changeproof.vuln.severity)
    score: float | None = None
    score_version: str | None = None
    severity_source: str = "unscored"
    tier: SeverityTier = "medium"
    needs_triage: bool = False
    fixed_versions: tuple[str, ...] = ()
    fix_state: FixState = "unknown"
    status: FindingStatus = "open"
    status_reason: str | None = None
    status_at: datetime | None = None
    alert_created_at: datetime | None = None  # Dependabot: when GitHub first raised the alert
    known_exploited: bool = False

    def __post_init__(self) -> None:
        # one call per finding, millions per ingest: check the optional times only when set
        _require_aware("scanned_at", self.scanned_at)
        if self.status_at is not None:
            _require_aware("status_at", self.status_at)
        if self.alert_created_at is not None:
            _require_aware("alert_created_at", self.alert_created_at)
        if not self.advisory_id:
            raise ValueError("a finding needs an advisory or rule id")


class ScanFindings(Record, frozen=True, kw_only=True):
    """A batch of the findings one scan reported (``part`` numbers batches from 0)."""

    kind: ClassVar[str] = "scan_findings"

    id: str  # "<scan id>/<part>"
    repo: str
    scan_id: str
    part: int = 0
    findings: tuple[FindingObservation, ...]
    provenance: Provenance  # the scan's: the raw scanner output in the locker


class RiskAcceptance(Record, frozen=True, kw_only=True):
    """An approved, expiring acceptance of the risk of one finding (advisory [+ package/target]).

    While valid it pauses the patch clock; on expiry the remaining time resumes. One recorded
    after the deadline does not erase the breach.
    """

    kind: ClassVar[str] = "risk_acceptance"

    id: str
    repo: str
    advisory: str  # any id or alias of the finding
    package: str | None = None
    target: str | None = None
    requester: Actor
    approver: Actor
    reason: str
    compensating_control: str = ""
    accepted_at: datetime
    expires_at: datetime
    provenance: Provenance

    def __post_init__(self) -> None:
        _require_aware("accepted_at", self.accepted_at)
        _require_aware("expires_at", self.expires_at)
        if self.expires_at <= self.accepted_at:
            raise ValueError("a risk acceptance must expire after it was accepted")
        if not self.reason.strip():
            raise ValueError("a risk acceptance needs a reason")
        if self.approver.keys() & self.requester.keys():
            raise ValueError("the approver of a risk acceptance must not be its requester")


# --- infrastructure: Terraform/Pulumi plans, applies, drift, database migrations (issue 9) ---

PlanAction = Literal[
    "create", "update", "delete", "replace", "read", "no-op", "forget", "move", "import"
]


class ResourceChangeInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One resource change of a plan, summarised (values stay in the locker, masked)."""

    address: str
    type: str
    mode: Literal["managed", "data"] = "managed"
    action: PlanAction
    actions: tuple[str, ...]
    previous_address: str | None = None
    action_reason: str | None = None
    replace_paths: tuple[str, ...] = ()
    importing: str | None = None
    iam: bool = False
    destructive: bool = False
    digest: str  # sha256 of the change's masked content: tells which resources differ

    def __post_init__(self) -> None:
        _require_sha256("resource change digest", self.digest)


class DriftItem(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    address: str
    type: str = ""
    actions: tuple[str, ...] = ()
    # "drift": changed outside the tool; "pending": configuration not applied yet
    cause: Literal["drift", "pending"] = "drift"


class PlanRecord(Record, frozen=True, kw_only=True):
    """A Terraform plan (``terraform show -json``) attached to the change it was made for."""

    kind: ClassVar[str] = "plan"

    id: str  # "<repo>|<workspace>|<digest>"
    repo: str
    workspace: str
    subject: str | None = None  # the change id the plan is attached to
    commit_sha: str | None = None
    tool: Literal["terraform", "pulumi"] = "terraform"
    digest: str  # canonical SHA-256 of the whole plan document
    changes_digest: str  # canonical SHA-256 of the resource changes alone
    file_sha256: str  # SHA-256 of the file as given
    format_version: str
    terraform_version: str | None = None
    planned_at: datetime | None = None
    applyable: bool | None = None
    complete: bool | None = None
    errored: bool | None = None
    counts: dict[str, int] = {}
    resources: tuple[ResourceChangeInfo, ...] = ()
    drift: tuple[DriftItem, ...] = ()
    moved: tuple[str, ...] = ()
    provenance: Provenance

    def __post_init__(self) -> None:
        _require_aware("planned_at", self.planned_at)
        for name in ("digest", "changes_digest", "file_sha256"):
            _require_sha256(name, getattr(self, name))
        if not self.repo or not self.workspace:
            raise ValueError("a plan needs a repository and a workspace")

    @property
    def privileged(self) -> tuple[str, ...]:
        """Addresses of IAM or destructive resource changes (they need more approvals)."""
        return tuple(r.address for r in self.resources if r.iam or r.destructive)


class ApplyRecord(Record, frozen=True, kw_only=True):
    """An apply in an environment, bound to the plan file it applied (None: no saved plan)."""

    kind: ClassVar[str] = "apply"

    id: str
    repo: str
    workspace: str
    environment: str
    commit_sha: str | None = None
    plan_digest: str | None = None
    changes_digest: str | None = None
    plan_file_sha256: str | None = None
    counts: dict[str, int] = {}
    resources: tuple[ResourceChangeInfo, ...] = ()
    applied_at: datetime
    status: Literal["success", "failure", "started"] = "success"
    actor: Actor | None = None
    url: str | None = None
    provenance: Provenance

    def __post_init__(self) -> None:
        _require_aware("applied_at", self.applied_at)
        if (self.plan_digest is None) != (self.changes_digest is None):
            raise ValueError("an apply names both digests of its plan, or neither")


class DriftReport(Record, frozen=True, kw_only=True):
    """One drift check of one workspace or stack: clean, drift, or the check errored."""

    kind: ClassVar[str] = "drift"

    id: str
    repo: str
    workspace: str
    tool: Literal["terraform", "pulumi"] = "terraform"
    mode: Literal["refresh-only", "plan", "exit-code", "preview"]
    checked_at: datetime
    status: Literal["clean", "drift", "error"]
    exit_code: int | None = None
    drifted: tuple[DriftItem, ...] = ()
    moved: tuple[str, ...] = ()  # move-only entries (``moved`` blocks): not drift
    plan_digest: str | None = None
    provenance: Provenance

    def __post_init__(self) -> None:
        _require_aware("checked_at", self.checked_at)
        if self.status == "clean" and self.drifted:
            raise ValueError("a clean drift report cannot list drifted resources")


MigrationTool = Literal[
    "alembic", "django", "flyway", "liquibase", "rails", "prisma", "golang-migrate", "unknown"
]


class MigrationFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    path: str
    tool: MigrationTool
    reversible: bool | None  # None: could not tell
    why: str


class DeploymentRef(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    environment: str
    commit_sha: str
    status: str
    started_at: datetime
    finished_at: datetime | None = None


class MigrationInfo(Record, frozen=True, kw_only=True):
    """The database migrations one change adds, read from git at the change's commit."""

    kind: ClassVar[str] = "migration"

    id: str  # the change id
    repo: str
    subject: str  # the change id
    branch: str
    commit_sha: str
    commits: tuple[str, ...] = ()  # every commit of the change (deployments match these)
    merged_at: datetime
    files: tuple[MigrationFile, ...]
    rollback_plan: str | None = None  # from the change record (PR/MR body or message)
    deployments: tuple[DeploymentRef, ...] = ()  # deployments that contain the change
    provenance: Provenance

    def __post_init__(self) -> None:
        _require_aware("merged_at", self.merged_at)


def canonical_json(value: Any) -> bytes:
    """Canonical JSON (sorted keys) used for digests that must be re-derivable."""
    return msgspec.json.encode(value, order="sorted")


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


RECORD_TYPES: tuple[type[Record], ...] = (
    Change,
    Deployment,
    DeploymentApproval,
    Emergency,
    RetroReview,
    ExceptionGrant,
    ProtectionSnapshot,
    TeamMembership,
    Bypass,
    Coverage,
    PolicyApproval,
    GateDecision,
    Scan,
    ScanFindings,
    RiskAcceptance,
    PlanRecord,
    ApplyRecord,
    DriftReport,
    MigrationInfo,
)
"""Explicit registry of storable evidence kinds; later modules append theirs here."""


def record_type(kind: str) -> type[Record]:
    for t in RECORD_TYPES:
        if t.kind == kind:
            return t
    raise KeyError(kind)
