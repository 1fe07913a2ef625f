"""Emergency changes: CM-EMG-1 (declared properly, at the time) and CM-EMG-2 (an independent
retroactive review within the window).

The judgements are plain functions so that the gate (at declaration), the emergency register
(clocks), the exception logic (a failing change excepted by a completed emergency) and the
controls all apply exactly the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Literal

from changeproof.controls.base import Context, RecordControl
from changeproof.evidence import Actor, Deployment, Emergency, Record, RetroReview
from changeproof.outcomes import Outcome, Result
from changeproof.settings import Settings

# A failure of one of these controls is excepted only when CM-EMG-1 and CM-EMG-2 both pass.
EMERGENCY_COVERABLE = frozenset({"CM-REV-1", "CM-TST-1", "CM-DEP-2", "CM-REV-5"})

# A deployment may start slightly before its declaration is stored (CI clocks differ).
DECLARATION_SKEW = timedelta(minutes=5)


def who(actor: Actor | None) -> str:
    if actor is None:
        return "unknown"
    return actor.login or actor.email or actor.name or "unknown"


def incident_ok(ref: str, settings: Settings) -> bool:
    return any(re.search(p, ref.strip()) for p in settings.emergency.incident_patterns)


def is_designated(actor: Actor, settings: Settings) -> bool:
    allowed = {a.lower() for a in settings.emergency.approvers}
    return bool(actor.keys() & allowed)


def due_at(e: Emergency, settings: Settings) -> datetime:
    return e.declared_at + timedelta(hours=settings.emergency.retro_review_hours)


def judge_declaration(
    e: Emergency,
    settings: Settings,
    *,
    participants: frozenset[str] = frozenset(),
    deployments: Iterable[tuple[str, Record]] = (),
) -> tuple[Outcome, list[str], list[str]]:
    """CM-EMG-1 for one declaration: (outcome, reasons, digests of other evidence read)."""
    problems: list[str] = []
    read: list[str] = []
    if not e.incident.strip():
        problems.append("no incident reference")
    elif not incident_ok(e.incident, settings):
        problems.append(
            f"incident reference {e.incident!r} matches none of the configured patterns "
            "(emergency.incident_patterns)"
        )
    if not is_designated(e.approver, settings):
        problems.append(
            f"{who(e.approver)} is not a designated emergency approver (emergency.approvers)"
        )
    pkeys = participants | frozenset(e.participants)
    if e.approver.keys() & pkeys:
        problems.append(f"{who(e.approver)} approved an emergency in a change they took part in")
    if e.declared_by is not None and e.approver.keys() & e.declared_by.keys():
        problems.append(f"{who(e.approver)} both declared and approved the emergency")
    if e.commit_sha:
        for dig, d in deployments:
            if not isinstance(d, Deployment) or d.repo != e.repo:
                continue
            if (
                d.commit_sha != e.commit_sha
                or d.environment not in settings.environments.production
            ):
                continue
            if d.started_at + DECLARATION_SKEW < e.declared_at:
                read.append(dig)
                problems.append(
                    f"declared at {e.declared_at.isoformat()}, after the production deployment "
                    f"{d.id} had started at {d.started_at.isoformat()}"
                )
                break
    if problems:
        return Outcome.FAIL, problems, read
    return (
        Outcome.PASS,
        [
            f"declared at {e.declared_at.isoformat()} for incident {e.incident}, approved by "
            f"{who(e.approver)} (a designated emergency approver, not a participant)"
        ],
        read,
    )


def review_counts(
    e: Emergency, r: RetroReview, settings: Settings, participants: frozenset[str]
) -> str | None:
    """Why a retro review does not count (None when it does)."""
    name = who(r.reviewer)
    keys = r.reviewer.keys()
    if settings.is_not_human(r.reviewer.login, r.reviewer.type):
        return f"{name} is a bot or service account"
    if keys & (participants | frozenset(e.participants)):
        return f"{name} is a participant of the emergency change"
    if keys & e.approver.keys():
        return f"{name} approved the emergency and cannot review it"
    if e.declared_by is not None and keys & e.declared_by.keys():
        return f"{name} declared the emergency and cannot review it"
    if r.reviewed_at < e.declared_at:
        return f"{name}'s review predates the declaration"
    return None


def reviews_for(e: Emergency, ctx: Context) -> list[tuple[str, RetroReview]]:
    if ctx.retro_reviews:
        return list(ctx.retro_reviews.get(e.id, ()))
    return [
        (d, r)
        for d, r in ctx.table("retro_review")
        if isinstance(r, RetroReview) and r.subject == e.id
    ]


ClockStatus = Literal["open", "due_soon", "overdue", "closed", "closed_late"]


@dataclass(frozen=True)
class Clock:
    """The retro-review clock of one emergency, as of ``now``."""

    emergency: Emergency
    digest: str
    due_at: datetime
    status: ClockStatus
    hours_left: float  # negative when overdue
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    review_digest: str | None = None
    not_counted: tuple[str, ...] = ()


def clock(
    e: Emergency,
    digest: str,
    reviews: Iterable[tuple[str, RetroReview]],
    settings: Settings,
    now: datetime,
    participants: frozenset[str] = frozenset(),
) -> Clock:
    due = due_at(e, settings)
    counted: list[tuple[str, RetroReview]] = []
    ignored: list[str] = []
    for d, r in reviews:
        why = review_counts(e, r, settings, participants)
        if why is None:
            counted.append((d, r))
        else:
            ignored.append(why)
    left = (due - now).total_seconds() / 3600
    if counted:
        d, first = min(counted, key=lambda x: x[1].reviewed_at)
        status: ClockStatus = "closed" if first.reviewed_at <= due else "closed_late"
        return Clock(
            e, digest, due, status, left, who(first.reviewer), first.reviewed_at, d, tuple(ignored)
        )
    if now > due:
        status = "overdue"
    elif left <= settings.emergency.remind_before_hours:
        status = "due_soon"
    else:
        status = "open"
    return Clock(e, digest, due, status, left, not_counted=tuple(ignored))


def judge_retro(c: Clock, settings: Settings) -> tuple[Outcome, list[str]]:
    """CM-EMG-2 for one emergency, from its clock."""
    window = settings.emergency.retro_review_hours
    extra = [f"not counted: {w}" for w in c.not_counted]
    if c.status == "closed":
        assert c.reviewed_at is not None
        took = (c.reviewed_at - c.emergency.declared_at).total_seconds() / 3600
        return Outcome.PASS, [
            f"independently reviewed by {c.reviewed_by} at {c.reviewed_at.isoformat()}, "
            f"{took:.1f} h after declaration (window {window} h)",
            *extra,
        ]
    if c.status == "closed_late":
        assert c.reviewed_at is not None
        late = (c.reviewed_at - c.due_at).total_seconds() / 3600
        return Outcome.FAIL, [
            f"retro review by {c.reviewed_by} came {late:.1f} h after it was due "
            f"({c.due_at.isoformat()}, window {window} h)",
            *extra,
        ]
    if c.status == "overdue":
        return Outcome.FAIL, [
            f"no independent retro review: overdue by {-c.hours_left:.1f} h "
            f"(due {c.due_at.isoformat()}, window {window} h)",
            *extra,
        ]
    return Outcome.INDETERMINATE, [
        f"awaiting an independent retro review, due {c.due_at.isoformat()} "
        f"({c.hours_left:.1f} h left)",
        *extra,
    ]


def completed(
    e: Emergency, digest: str, ctx: Context, participants: frozenset[str] = frozenset()
) -> tuple[bool, list[str], list[str]]:
    """Both CM-EMG-1 and CM-EMG-2 pass for ``e``: (ok, reasons, evidence digests)."""
    o1, r1, read = judge_declaration(
        e, ctx.settings, participants=participants, deployments=ctx.table("deployment")
    )
    revs = reviews_for(e, ctx)
    c = clock(e, digest, revs, ctx.settings, ctx.now, participants)
    o2, r2 = judge_retro(c, ctx.settings)
    digests = [digest, *read]
    if c.review_digest:
        digests.append(c.review_digest)
    return o1 is Outcome.PASS and o2 is Outcome.PASS, [*r1, *r2], digests


def emergencies_in(ctx: Context) -> list[tuple[str, Emergency]]:
    if ctx.emergencies:
        return list(ctx.emergencies.values())
    return [(d, e) for d, e in ctx.table("emergency") if isinstance(e, Emergency)]


# The check asks once per failing result; index the (few) emergencies once per context.
_INDEX: dict[int, tuple[object, dict[str, list[tuple[str, Emergency]]]]] = {}


def _index(ctx: Context) -> dict[str, list[tuple[str, Emergency]]]:
    """Emergencies by the subjects they cover (change ids) and their commit."""
    source: object = ctx.emergencies if ctx.emergencies else ctx.table("emergency")
    hit = _INDEX.get(id(source))
    if hit is not None and hit[0] is source:
        return hit[1]
    out: dict[str, list[tuple[str, Emergency]]] = {}
    for dig, e in emergencies_in(ctx):
        for key in {e.subject, *e.covers, *((e.commit_sha,) if e.commit_sha else ())}:
            out.setdefault(key, []).append((dig, e))
    _INDEX.clear()  # one context at a time; keeps the source alive while cached
    _INDEX[id(source)] = (source, out)
    return out


def covering_emergency(
    result: Result, participant_keys: frozenset[str], ctx: Context
) -> tuple[list[str], list[str]] | None:
    """A completed emergency that excepts ``result`` (a failing change or deployment)."""
    if result.control not in EMERGENCY_COVERABLE:
        return None
    commit = result.details.get("commit")
    index = _index(ctx)
    if not index:
        return None
    candidates = [*index.get(result.subject, ()), *(index.get(commit, ()) if commit else ())]
    for dig, e in candidates:
        if result.repo is not None and e.repo != result.repo:
            continue
        ok, reasons, digests = completed(e, dig, ctx, participant_keys)
        if ok:
            head = (
                f"excepted by emergency {e.id} (incident {e.incident}, approved by "
                f"{who(e.approver)}) with a timely independent retro review"
            )
            return [head, *reasons], digests
    return None


class DeclaredEmergency(RecordControl):
    id = "CM-EMG-1"
    subject_kind: ClassVar = "emergency"
    record_kind: ClassVar[str | None] = "emergency"
    reads: ClassVar[tuple[str, ...]] = ("deployment",)

    def evaluate(self, subject: Emergency, ctx: Context, digest: str) -> Result:
        outcome, reasons, read = judge_declaration(
            subject, ctx.settings, deployments=ctx.table("deployment")
        )
        return self.result(
            subject.id,
            outcome,
            reasons,
            repo=subject.repo,
            evidence=(digest, *read),
            details={"subject": subject.subject},
        )


class RetroReviewed(RecordControl):
    id = "CM-EMG-2"
    subject_kind: ClassVar = "emergency"
    record_kind: ClassVar[str | None] = "emergency"
    reads: ClassVar[tuple[str, ...]] = ("retro_review", "emergency")

    def evaluate(self, subject: Emergency, ctx: Context, digest: str) -> Result:
        c = clock(subject, digest, reviews_for(subject, ctx), ctx.settings, ctx.now)
        outcome, reasons = judge_retro(c, ctx.settings)
        ev = (digest, c.review_digest) if c.review_digest else (digest,)
        return self.result(
            subject.id,
            outcome,
            reasons,
            repo=subject.repo,
            evidence=ev,
            details={"due_at": c.due_at.isoformat(), "status": c.status},
        )
