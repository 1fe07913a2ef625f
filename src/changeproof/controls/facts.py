"""Facts derived once per change and shared by the review controls (pure, cached per change).

The definitions follow CONTROLS.md "Terms": participants, not-human, effective review and
current approval.
"""

from __future__ import annotations

import re
from datetime import datetime
from operator import attrgetter
from typing import Any

import msgspec

from changeproof.controls.prepared import Prepared, iso, prepared
from changeproof.evidence import Actor, Change, CommitInfo, Review
from changeproof.settings import Settings, path_matches

RISK_RE = re.compile(
    r"(?im)^\s*(?:[-*]\s*)?\**risk(?:\s*level)?\**\s*[:=]\s*\**\s*(low|medium|high)\b"
)
RISK_LABEL_RE = re.compile(r"(?i)^risk[:/ _-]?(low|medium|high)$")


def actor_keys(actor: Actor | None) -> frozenset[str]:
    return actor.keys() if actor is not None else frozenset()


def is_web_flow(actor: Actor, settings: Settings) -> bool:
    return _web_flow(actor, prepared(settings).web_flow)


def _web_flow(actor: Actor, names: frozenset[str]) -> bool:
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
    return _participants(change, settings, prepared(settings).web_flow)


def _add(keys: set[str], labels: list[str], actor: Actor, role: str) -> None:
    k = actor.keys()
    if k and not k <= keys:
        labels.append(f"{actor.login or actor.email or actor.name} ({role})")
    keys.update(k)


def _participants(
    change: Change, settings: Settings, web_flow: frozenset[str]
) -> tuple[frozenset[str], list[str]]:
    keys: set[str] = set()
    labels: list[str] = []
    # an actor equal to the previous one added has the same keys: adding it is a no-op
    prev = change.author
    if prev is not None:
        _add(keys, labels, prev, "author")
    allow_suggestions = settings.review.allow_suggestion_commits
    for c in change.commits:
        if c.author != prev:
            _add(keys, labels, c.author, "commit author")
            prev = c.author
        if c.committer != prev and not _web_flow(c.committer, web_flow):
            _add(keys, labels, c.committer, "committer")
            prev = c.committer
        if not c.co_authors:
            continue
        suggestion = allow_suggestions and is_suggestion_commit(c, settings)
        for co in c.co_authors:
            if suggestion:
                # opt-in (policy-bot#439): the reviewer whose suggestion was applied stays
                # independent; the exemption is reported, never silent
                labels.append(f"{co.login or co.email or co.name} (suggestion co-author, exempt)")
                continue
            _add(keys, labels, co, "co-author")
    for ev in change.timeline:
        if ev.actor is not None and ev.type in {"push", "force_push"}:
            _add(keys, labels, ev.actor, "pusher" if ev.type == "push" else "force-pusher")
    if change.change_type == "direct_push" and change.merged_by is not None:
        _add(keys, labels, change.merged_by, "pusher")
    return frozenset(keys), labels


def _participant_keys(
    change: Change, settings: Settings, web_flow: frozenset[str]
) -> frozenset[str]:
    """``_participants(change, settings, web_flow)[0]`` without the labels (only ``check
    --explain`` shows them: :attr:`ChangeFacts.participant_labels` derives them on demand)."""
    prev = change.author
    # the author's keys, and every other participant (most changes have no other)
    base = prev.keys() if prev is not None else _NO_KEYS
    others: list[Actor] = []
    allow_suggestions = settings.review.allow_suggestion_commits
    for c in change.commits:
        if c.author != prev:
            others.append(c.author)
            prev = c.author
        if c.committer != prev and not _web_flow(c.committer, web_flow):
            others.append(c.committer)
            prev = c.committer
        if not c.co_authors:
            continue
        if allow_suggestions and is_suggestion_commit(c, settings):
            continue  # the suggestion co-authors stay independent (see _participants)
        others.extend(c.co_authors)
    for ev in change.timeline:
        if ev.actor is not None and ev.type in {"push", "force_push"}:
            others.append(ev.actor)
    if change.change_type == "direct_push" and change.merged_by is not None:
        others.append(change.merged_by)
    if not others:
        return base
    keys = set(base)
    for a in others:
        keys.update(a.keys())
    return frozenset(keys)


_NO_KEYS: frozenset[str] = frozenset()


class Approval(msgspec.Struct, frozen=True, gc=False):
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


_submitted_at = attrgetter("submitted_at")
_EFFECTIVE_STATES = frozenset({"APPROVED", "CHANGES_REQUESTED", "DISMISSED"})


def effective_reviews(change: Change) -> dict[str, Review]:
    """Per reviewer, the latest APPROVED/CHANGES_REQUESTED review submitted before the merge."""
    out: dict[str, Review] = {}
    reviews = change.reviews
    if not reviews:
        return out
    merged_at = change.merged_at
    for r in sorted(reviews, key=_submitted_at) if len(reviews) > 1 else reviews:
        if r.submitted_at > merged_at:
            continue
        if r.state not in _EFFECTIVE_STATES:
            continue
        out[r.reviewer.key] = r
    return out


def _dismissed_before(review: Review, merged_at: datetime) -> bool:
    if review.state == "DISMISSED":
        return True
    return review.dismissed_at is not None and review.dismissed_at <= merged_at


class ChangeFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What every change control reads about one change, computed once by
    :func:`compute_facts` and shared by the controls judging it."""

    change: Change
    participant_keys: frozenset[str]
    approvals: tuple[Approval, ...]  # one per reviewer whose effective review approves
    self_approvers: tuple[str, ...]  # participants who approved at any time
    required: int
    risk: str | None
    paths: tuple[str, ...] | None
    # the approvals that count, in ``approvals`` order, and when each was submitted
    # (isoformat: CM-DOC-1 and CM-IAC-1 both show it)
    independent: list[Approval]
    independent_at: tuple[str, ...]
    # the change's subject id (``Change.id`` formats it on every access)
    cid: str
    # the settings' derived lookups (see :mod:`changeproof.controls.prepared`), and per path
    # of ``paths`` its class bits, with their union
    prep: Prepared
    path_bits: tuple[int, ...] | None
    path_union: int
    # verdicts that more than one control needs (CM-TST-1's checks, the review controls'
    # results CM-IAC-1 repeats), kept per context: see :func:`shared`
    memo: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def participant_labels(self) -> tuple[str, ...]:
        """Who the participants are, as ``check --explain`` shows them (derived on demand:
        no control reads them)."""
        prep = self.prep
        return tuple(_participants(self.change, prep.settings, prep.web_flow)[1])


def classes_of(f: ChangeFacts, settings: Settings) -> tuple[Prepared, tuple[int, ...] | None, int]:
    """(lookups, class bits per path, their union) of ``f``'s paths under ``settings`` —
    the ones :func:`compute_facts` derived unless ``settings`` is another object."""
    if f.prep.settings is settings:
        return f.prep, f.path_bits, f.path_union
    prep = prepared(settings)
    if f.paths is None:
        return prep, None, 0
    bits = tuple([prep.path_bits(p) for p in f.paths])
    union = 0
    for b in bits:
        union |= b
    return prep, bits, union


def shared(f: ChangeFacts, ctx: object) -> dict[str, Any]:
    """``f``'s memo of context-dependent verdicts, valid for ``ctx`` (emptied when asked
    with another context, so a verdict is never reused under different evidence)."""
    memo = f.memo
    if memo.get("ctx") is not ctx:
        memo.clear()
        memo["ctx"] = ctx
    return memo


# label → the risk level it names, "" when it names none (labels recur from change to change)
_LABEL_RISK: dict[str, str] = {}


def _label_risk(label: str) -> str:
    m = RISK_LABEL_RE.match(label.strip())
    out = m.group(1).lower() if m else ""
    if len(_LABEL_RISK) >= 50_000:
        _LABEL_RISK.clear()
    _LABEL_RISK[label] = out
    return out


def detect_risk(change: Change) -> str | None:
    for label in change.labels:
        level = _LABEL_RISK.get(label)
        if level is None:
            level = _label_risk(label)
        if level:
            return level
    body = change.body
    # RISK_RE needs a ":" or "=" (no other character matches them, whatever the case)
    m = RISK_RE.search(body) if body and (":" in body or "=" in body) else None
    return m.group(1).lower() if m else None


def change_paths(change: Change) -> tuple[str, ...] | None:
    if change.files is None:
        return None
    out: list[str] = []
    for f in change.files:
        # f.paths(): a renamed file's old name too
        old = f.previous_path
        if old and old != f.path:
            out.append(f.path)
            out.append(old)
        else:
            out.append(f.path)
    return tuple(out)


def compute_facts(change: Change, settings: Settings) -> ChangeFacts:
    prep = prepared(settings)
    pkeys = _participant_keys(change, settings, prep.web_flow)
    approvals: list[Approval] = []
    independent: list[Approval] = []
    independent_at: list[str] = []
    self_approvers: set[str] = set()
    merged_at = change.merged_at
    reviews = change.reviews
    if reviews:
        if len(reviews) > 1:
            effective: Any = effective_reviews(change).values()
        else:  # effective_reviews of one review
            r = reviews[0]
            ok = r.submitted_at <= merged_at and r.state in _EFFECTIVE_STATES
            effective = reviews if ok else ()
        for r in effective:
            # a review DISMISSED before merge still tells us the reviewer's effective state
            # was approval-then-dismissed; only approvals are candidates
            state = r.state
            if state not in {"APPROVED", "DISMISSED"}:
                continue
            who = r.reviewer
            current = _is_current(r, change)
            participant = bool(pkeys and who.keys() & pkeys)
            human = not prep.not_human(who.login, who.type)
            before_merge = r.submitted_at <= merged_at
            # _dismissed_before(r, merged_at)
            dismissed = state == "DISMISSED" or (
                r.dismissed_at is not None and r.dismissed_at <= merged_at
            )
            a = Approval(
                r,
                who.login or who.email or who.name or "?",
                current,
                participant,
                human,
                before_merge,
                dismissed,
            )
            approvals.append(a)
            # Approval.counts
            if current is True and not participant and human and before_merge and not dismissed:
                independent.append(a)
                independent_at.append(iso(r.submitted_at))
        if pkeys:
            for r in reviews:
                if (
                    r.state == "APPROVED" or (r.state == "DISMISSED" and r.dismissed_at is not None)
                ) and r.reviewer.keys() & pkeys:
                    self_approvers.add(r.reviewer.login or r.reviewer.email or "?")
    # change_paths(change), and each path's class bits with their union
    files = change.files
    paths: tuple[str, ...] | None = None
    bits: tuple[int, ...] | None = None
    union = 0
    if files is not None:
        known = prep.known_paths
        names: list[str] = []
        out: list[int] = []
        for fc in files:
            p = fc.path
            b = known.get(p)
            if b is None:
                b = prep.path_bits(p)
            names.append(p)
            out.append(b)
            union |= b
            old = fc.previous_path
            if old and old != p:  # a renamed file's old name too (FileChange.paths)
                b = known.get(old)
                if b is None:
                    b = prep.path_bits(old)
                names.append(old)
                out.append(b)
                union |= b
        paths = tuple(names)
        bits = tuple(out)
    risk = detect_risk(change)
    required = prep.required_approvals(change.repo, paths, risk)
    return ChangeFacts(
        change=change,
        participant_keys=pkeys,
        approvals=tuple(approvals),
        self_approvers=tuple(sorted(self_approvers)) if self_approvers else (),
        required=required,
        risk=risk,
        paths=paths,
        independent=independent,
        independent_at=tuple(independent_at),
        cid=change.id,
        prep=prep,
        path_bits=bits,
        path_union=union,
    )


def touches(paths: tuple[str, ...] | None, patterns: tuple[str, ...]) -> bool | None:
    if paths is None:
        return None
    return any(path_matches(p, patterns) for p in paths)
