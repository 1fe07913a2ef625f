"""Facts derived once per change and shared by the review controls (pure, cached per change).

The definitions follow CONTROLS.md "Terms": participants, not-human, effective review and
current approval.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from changeproof.evidence import Actor, Change, CommitInfo, Review
from changeproof.settings import Settings, lowered_names, path_matches

RISK_RE = re.compile(
    r"(?im)^\s*(?:[-*]\s*)?\**risk(?:\s*level)?\**\s*[:=]\s*\**\s*(low|medium|high)\b"
)
RISK_LABEL_RE = re.compile(r"(?i)^risk[:/ _-]?(low|medium|high)$")


def actor_keys(actor: Actor | None) -> frozenset[str]:
    return actor.keys() if actor is not None else frozenset()


def is_web_flow(actor: Actor, settings: Settings) -> bool:
    names = lowered_names(settings.identities.web_flow_committers)
    return bool(
        (actor.login and actor.login.lower() in names)
        or (actor.email and actor.email.lower() == "noreply@github.com")
        or (actor.name and actor.email and f"{actor.name} <{actor.email}>".lower() in names)
    )


def is_suggestion_commit(commit: CommitInfo, settings: Settings) -> bool:
    """A commit GitHub made from a review suggestion: web-flow committed, "Apply suggestion"."""
    return is_web_flow(commit.committer, settings) and commit.message.startswith(
        ("Apply suggestion", "Apply suggestions from code review")
    )


def participants(change: Change, settings: Settings) -> tuple[frozenset[str], list[str]]:
    """Identity keys of everyone who contributed to or pushed the change, and their labels."""
    keys: set[str] = set()
    labels: list[str] = []

    def add(actor: Actor | None, role: str) -> None:
        if actor is None:
            return
        k = actor.keys()
        if k and not k <= keys:
            labels.append(f"{actor.login or actor.email or actor.name} ({role})")
        keys.update(k)

    add(change.author, "author")
    for c in change.commits:
        add(c.author, "commit author")
        if not is_web_flow(c.committer, settings):
            add(c.committer, "committer")
        suggestion = settings.review.allow_suggestion_commits and is_suggestion_commit(c, settings)
        for co in c.co_authors:
            if suggestion:
                # opt-in (policy-bot#439): the reviewer whose suggestion was applied stays
                # independent; the exemption is reported, never silent
                labels.append(f"{co.login or co.email or co.name} (suggestion co-author, exempt)")
                continue
            add(co, "co-author")
    for ev in change.timeline:
        if ev.type in ("push", "force_push"):
            add(ev.actor, "pusher" if ev.type == "push" else "force-pusher")
    if change.change_type == "direct_push":
        add(change.merged_by, "pusher")
    return frozenset(keys), labels


@dataclass(frozen=True)
class Approval:
    review: Review
    name: str
    current: bool | None  # None: the approved commit is unknown
    participant: bool
    human: bool
    before_merge: bool
    dismissed: bool

    @property
    def counts(self) -> bool:
        return (
            self.current is True
            and not self.participant
            and self.human
            and self.before_merge
            and not self.dismissed
        )

    def why_not(self) -> str | None:
        if not self.before_merge:
            return f"{self.name} approved after the merge"
        if self.dismissed:
            return f"{self.name}'s approval was dismissed before the merge"
        if not self.human:
            return f"{self.name} is a bot, service account or AI reviewer"
        if self.participant:
            return f"{self.name} is a participant of the change (author, committer, co-author or pusher)"
        if self.current is False:
            return f"{self.name} approved an older commit whose patch differs from the merged head"
        if self.current is None:
            return f"{self.name}'s approval does not say which commit it approved"
        return None


def _is_current(review: Review, change: Change) -> bool | None:
    if review.source == "gerrit-trailer":
        return True  # Gerrit's Reviewed-by trailers are written on the submitted patch set
    if review.commit_sha is None:
        return None
    if change.head_sha and review.commit_sha == change.head_sha:
        return True
    if change.merge_queue_sha and review.commit_sha == change.merge_queue_sha:
        return True
    if review.commit_patch_id and change.head_patch_id:
        return review.commit_patch_id == change.head_patch_id
    if change.head_sha is None:
        return None
    return False


def effective_reviews(change: Change) -> dict[str, Review]:
    """Per reviewer, the latest APPROVED/CHANGES_REQUESTED review submitted before the merge."""
    out: dict[str, Review] = {}
    for r in sorted(change.reviews or (), key=lambda r: r.submitted_at):
        if r.submitted_at > change.merged_at:
            continue
        if r.state not in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
            continue
        out[r.reviewer.key] = r
    return out


def _dismissed_before(review: Review, merged_at: datetime) -> bool:
    if review.state == "DISMISSED":
        return True
    return review.dismissed_at is not None and review.dismissed_at <= merged_at


@dataclass(frozen=True)
class ChangeFacts:
    change: Change
    participant_keys: frozenset[str]
    participant_labels: tuple[str, ...]
    approvals: tuple[Approval, ...]  # one per reviewer whose effective review approves
    self_approvers: tuple[str, ...]  # participants who approved at any time
    required: int
    risk: str | None
    paths: tuple[str, ...] | None

    @property
    def independent(self) -> list[Approval]:
        return [a for a in self.approvals if a.counts]


def detect_risk(change: Change) -> str | None:
    for label in change.labels:
        m = RISK_LABEL_RE.match(label.strip())
        if m:
            return m.group(1).lower()
    m = RISK_RE.search(change.body or "")
    return m.group(1).lower() if m else None


def change_paths(change: Change) -> tuple[str, ...] | None:
    if change.files is None:
        return None
    out: list[str] = []
    for f in change.files:
        out.extend(f.paths())
    return tuple(out)


def compute_facts(change: Change, settings: Settings) -> ChangeFacts:
    pkeys, plabels = participants(change, settings)
    approvals: list[Approval] = []
    for r in effective_reviews(change).values():
        # a review DISMISSED before merge still tells us the reviewer's effective state was
        # approval-then-dismissed; only approvals are candidates
        if r.state not in ("APPROVED", "DISMISSED"):
            continue
        approvals.append(
            Approval(
                review=r,
                name=r.reviewer.login or r.reviewer.email or r.reviewer.name or "?",
                current=_is_current(r, change),
                participant=bool(r.reviewer.keys() & pkeys),
                human=not _not_human(r.reviewer, settings),
                before_merge=r.submitted_at <= change.merged_at,
                dismissed=_dismissed_before(r, change.merged_at),
            )
        )
    self_approvers = sorted(
        {
            (r.reviewer.login or r.reviewer.email or "?")
            for r in (change.reviews or ())
            if r.state in ("APPROVED", "DISMISSED")
            and (r.state == "APPROVED" or r.dismissed_at is not None)
            and r.reviewer.keys() & pkeys
        }
    )
    paths = change_paths(change)
    risk = detect_risk(change)
    required = settings.required_approvals(change.repo, list(paths or ()), risk)
    return ChangeFacts(
        change=change,
        participant_keys=pkeys,
        participant_labels=tuple(plabels),
        approvals=tuple(approvals),
        self_approvers=tuple(self_approvers),
        required=required,
        risk=risk,
        paths=paths,
    )


def _not_human(actor: Actor, settings: Settings) -> bool:
    return settings.is_not_human(actor.login, actor.type)


def touches(paths: tuple[str, ...] | None, patterns: tuple[str, ...]) -> bool | None:
    if paths is None:
        return None
    return any(path_matches(p, patterns) for p in paths)
