"""Vulnerability patching: CM-VUL-1 (fixed in production within the deadline), CM-VUL-2
(critical fixes through the emergency path, with the retroactive review) and CM-VUL-3 (every
in-scope repository has a fresh, complete scan).

Pure: lifecycles come from :func:`changeproof.vuln.lifecycle.compute_states` over the record
tables the evaluator loads (``reads``); deployments are tied to the change they ship through
the changes' landed commits, the same mapping the store's commit index holds.

The change population is not a table here (a million changes would not fit): the evaluator
hands over, in ``Context.extra``, only the changes that can be a finding's fix
(:data:`LINKAGE_KEY`, chosen with :func:`fix_signatures` / :func:`may_fix`) and each
repository's first change in the period (:data:`REPOS_KEY`). A context that carries a
``change`` table instead (small, hand-built ones) is read directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, cast

from changeproof.controls.base import Context, RecordControl
from changeproof.evidence import (
    Change,
    Deployment,
    Emergency,
    FindingObservation,
    RetroReview,
    RiskAcceptance,
    Scan,
    ScanFindings,
)
from changeproof.outcomes import Outcome, Result
from changeproof.vuln.lifecycle import FindingState, Linkage, compute_states, touched_by

_READS = (
    "scan_findings",
    "scan",
    "risk_acceptance",
    "deployment",
    "emergency",
    "retro_review",
)
LINKAGE_KEY = "vuln_linkage"  # Linkage: candidate fixes and deployments with what they ship
REPOS_KEY = "vuln_repos"  # {repository: digest of its first change in the period}

FixSignature = tuple[str, str, str | None]  # (category, ecosystem, manifest)


def fix_signatures(findings: Iterable[FindingObservation]) -> dict[str, frozenset[FixSignature]]:
    """Per repository with findings, what a change must touch to be a candidate fix: every
    (category, ecosystem, manifest) its findings name, and each without the manifest (the
    lifecycle takes the manifest of the latest observation that has one, or none)."""
    out: dict[str, set[FixSignature]] = {}
    for f in findings:
        sigs = out.setdefault(f.repo, set())
        sigs.add((f.category, f.ecosystem, f.manifest))
        sigs.add((f.category, f.ecosystem, None))
    return {k: frozenset(v) for k, v in out.items()}


def findings_in(ctx: Context) -> Iterator[FindingObservation]:
    for _, r in ctx.table("scan_findings"):
        yield from cast(ScanFindings, r).findings


def may_fix(change: Change, sigs: frozenset[FixSignature]) -> bool:
    return any(touched_by(change, c, e, m) is not None for c, e, m in sigs)


def _fmt(t: datetime | None) -> str:
    return "-" if t is None else f"{t:%Y-%m-%d %H:%M} UTC"


def _hours(delta: timedelta) -> str:
    h = delta.total_seconds() / 3600
    return f"{h:.0f} h" if abs(h) < 72 else f"{h / 24:.1f} days"


def linkage_from(ctx: Context) -> Linkage:
    gathered = ctx.extra.get(LINKAGE_KEY)
    if isinstance(gathered, Linkage):
        return gathered
    changes = [cast(Change, r) for _, r in ctx.table("change")]
    by_sha: dict[str, Change] = {}
    for c in changes:
        for sha in c.landed_shas:
            by_sha[sha] = c
    deps = [
        (dep, by_sha.get(dep.commit_sha))
        for dep in (cast(Deployment, r) for _, r in ctx.table("deployment"))
    ]
    return Linkage(changes=changes, deployments=deps)


def states_from(ctx: Context) -> list[FindingState]:
    # Both finding controls need the same lifecycles; computing them is pure, so cache per
    # context object (a new evaluation builds a new context).
    cached = _CACHE.get(id(ctx))
    if cached is not None and cached[0] is ctx:
        return cached[1]
    states = compute_states(
        ((d, f) for d, r in ctx.table("scan_findings") for f in cast(ScanFindings, r).findings),
        (cast(Scan, r) for _, r in ctx.table("scan")),
        (cast(RiskAcceptance, r) for _, r in ctx.table("risk_acceptance")),
        linkage_from(ctx),
        ctx.settings,
        ctx.now,
    )
    _CACHE.clear()
    _CACHE[id(ctx)] = (ctx, states)
    return states


_CACHE: dict[int, tuple[Context, list[FindingState]]] = {}


def _period(ctx: Context) -> tuple[datetime | None, datetime | None]:
    start, end = ctx.extra.get("period", (None, None))
    return start, end


def in_period(s: FindingState, ctx: Context) -> bool:
    """An occurrence belongs to the period when it was open at some time inside it."""
    start, end = _period(ctx)
    if end is not None and s.first_detected_at >= end:
        return False
    return start is None or s.resolved_at is None or s.resolved_at >= start


class PatchDeadline(RecordControl):
    id = "CM-VUL-1"
    subject_kind: ClassVar = "finding"
    reads = _READS

    def subjects(self, ctx: Context) -> list[tuple[Any, str]]:
        return [(s, s.evidence[0]) for s in states_from(ctx) if in_period(s, ctx)]

    def evaluate(self, subject: FindingState, ctx: Context, digest: str) -> Result:
        s = subject
        what = f"{s.advisory} in {s.package or s.target or s.repo} ({s.tier})"
        details = {
            "state": s.state,
            "tier": s.tier,
            "first_detected_at": s.first_detected_at.isoformat(),
            "due_at": s.due_at.isoformat() if s.due_at else "",
            "resolved_at": s.resolved_at.isoformat() if s.resolved_at else "",
            "fix_change": s.fix_change or "",
            "deployment": s.deployment or "",
            "severity_source": s.severity_source,
        }

        def res(outcome: Outcome, reasons: list[str]) -> Result:
            return self.result(
                s.key,
                outcome,
                [*reasons, *s.notes],
                repo=s.repo,
                evidence=s.evidence,
                details=details,
            )

        if s.due_at is None:
            return res(
                Outcome.NOT_APPLICABLE,
                [f"{what}: informational (no score band with a deadline); reported only"],
            )
        first = f"first detected {_fmt(s.first_detected_at)}, due {_fmt(s.due_at)}"
        if s.state == "resolved":
            assert s.resolved_at is not None
            how = (
                f"fixed in production by {s.fix_change} via deployment {s.deployment}"
                if s.deployment
                else "verified absent from a complete scan of the artifact"
            )
            if s.breached:
                late = _hours(s.resolved_at - s.due_at)
                return res(
                    Outcome.FAIL,
                    [
                        f"{what}: {how} at {_fmt(s.resolved_at)}, {late} after the deadline ({first})"
                    ],
                )
            return res(
                Outcome.PASS,
                [f"{what}: {how} at {_fmt(s.resolved_at)}, within the deadline ({first})"],
            )
        if s.state == "accepted":
            return res(
                Outcome.EXCEPTION,
                [
                    f"{what}: risk accepted ({s.acceptance}) until {_fmt(s.accepted_until)}; "
                    f"the clock is paused and resumes on expiry ({first})"
                ],
            )
        if s.state == "breached":
            assert s.breached_at is not None
            over = _hours(ctx.now - s.due_at) if ctx.now > s.due_at else "already"
            where = (
                f"fix {s.fix_change} merged {_fmt(s.fix_merged_at)} but not deployed to production"
                if s.fix_change
                else "not fixed in production"
            )
            return res(
                Outcome.FAIL,
                [
                    f"{what}: {where}; deadline passed {_fmt(s.breached_at)} ({over} overdue; {first})"
                ],
            )
        left = _hours(s.due_at - ctx.now)
        if s.state == "fixed-not-deployed":
            return res(
                Outcome.PASS,
                [
                    f"{what}: fixed but not yet deployed to production — the clock still runs, "
                    f"{left} left ({first})"
                ],
            )
        return res(Outcome.PASS, [f"{what}: open, within its deadline with {left} left ({first})"])


class CriticalViaEmergency(RecordControl):
    id = "CM-VUL-2"
    subject_kind: ClassVar = "finding"
    reads = _READS

    def subjects(self, ctx: Context) -> list[tuple[Any, str]]:
        return [
            (s, s.evidence[0])
            for s in states_from(ctx)
            if s.tier == "critical" and in_period(s, ctx)
        ]

    def evaluate(self, subject: FindingState, ctx: Context, digest: str) -> Result:
        s = subject

        def res(outcome: Outcome, reasons: list[str], extra: tuple[str, ...] = ()) -> Result:
            return self.result(s.key, outcome, reasons, repo=s.repo, evidence=(*s.evidence, *extra))

        if not ctx.settings.patching.critical_via_emergency:
            return res(
                Outcome.NOT_APPLICABLE,
                ["patching.critical_via_emergency is off: the policy names no emergency path"],
            )
        if s.fix_change is None:
            if s.state == "resolved":
                return res(
                    Outcome.INDETERMINATE,
                    [
                        f"critical {s.advisory} is gone from a complete scan but no change is linked "
                        "as its fix, so the path it took cannot be judged"
                    ],
                )
            return res(Outcome.NOT_APPLICABLE, [f"critical {s.advisory}: no fix has landed yet"])
        emergencies = _emergencies_for(ctx, s)
        if not emergencies:
            return res(
                Outcome.FAIL,
                [
                    f"the fix for critical {s.advisory} ({s.fix_change}) went through the normal "
                    "path: no emergency was declared for it"
                ],
            )
        dig, e = emergencies[0]
        reviews = _reviews_for(ctx, e, s.fix_change)
        if reviews:
            rd, r = reviews[0]
            return res(
                Outcome.PASS,
                [
                    f"the fix {s.fix_change} went through emergency {e.id} ({e.incident}) and was "
                    f"reviewed retroactively by {r.reviewer.key} on {_fmt(r.reviewed_at)}"
                ],
                (dig, rd),
            )
        due = e.declared_at + timedelta(hours=ctx.settings.emergency.retro_review_hours)
        if ctx.now <= due:
            return res(
                Outcome.PASS,
                [
                    f"the fix {s.fix_change} went through emergency {e.id}; its retroactive review "
                    f"is due by {_fmt(due)}"
                ],
                (dig,),
            )
        return res(
            Outcome.FAIL,
            [
                f"the fix {s.fix_change} went through emergency {e.id} but no retroactive review "
                f"was recorded by {_fmt(due)}"
            ],
            (dig,),
        )


def _emergencies_for(ctx: Context, s: FindingState) -> list[tuple[str, Emergency]]:
    out = []
    for d, r in ctx.table("emergency"):
        e = cast(Emergency, r)
        if e.repo != s.repo:
            continue
        if (
            e.subject == s.fix_change
            or s.fix_change in e.covers
            or (e.commit_sha is not None and s.fix_change_sha is not None
                and s.fix_change_sha.startswith(e.commit_sha))
        ):  # fmt: skip
            out.append((d, e))
    return out


def _reviews_for(
    ctx: Context, e: Emergency, change_id: str | None
) -> list[tuple[str, RetroReview]]:
    wanted = {e.id, e.subject, *(x for x in (change_id,) if x)}
    return [
        (d, cast(RetroReview, r))
        for d, r in ctx.table("retro_review")
        if cast(RetroReview, r).subject in wanted
    ]


class FreshScans(RecordControl):
    id = "CM-VUL-3"
    subject_kind: ClassVar = "repository"
    reads = _READS

    def subjects(self, ctx: Context) -> list[tuple[Any, str]]:
        # in scope: configured repositories, and those with changes or scans in the period
        start, end = _period(ctx)

        def inside(t: datetime) -> bool:
            return (start is None or t >= start) and (end is None or t < end)

        repos: dict[str, str] = {r.name: "" for r in ctx.settings.repositories}
        for name, d in ctx.extra.get(REPOS_KEY, {}).items():
            repos.setdefault(name, d)
        for d, r in ctx.table("change"):
            if inside(cast(Change, r).merged_at):
                repos.setdefault(cast(Change, r).repo, d)
        for d, r in ctx.table("scan"):
            if inside(cast(Scan, r).scanned_at):
                repos.setdefault(cast(Scan, r).repo, d)
        return [(name, dig) for name, dig in sorted(repos.items())]

    def evaluate(self, subject: str, ctx: Context, digest: str) -> Result:
        repo = subject
        # freshness as at the end of the period (or now): an audit of last quarter asks
        # whether scans were fresh then
        _, end = _period(ctx)
        at = min(ctx.now, end) if end is not None else ctx.now
        scans = [
            (d, cast(Scan, r))
            for d, r in ctx.table("scan")
            if cast(Scan, r).repo == repo and cast(Scan, r).scanned_at <= at
        ]
        max_age = timedelta(days=ctx.settings.patching.scan_max_age_days)
        evidence = (digest,) if digest else ()
        if not scans:
            return self.result(
                repo,
                Outcome.FAIL,
                [
                    f"{repo} has no vulnerability scans at all: no scans is a finding, not a clean bill"
                ],
                repo=repo,
                evidence=evidence,
            )
        complete = [(d, s) for d, s in scans if not s.partial and s.coverage]
        if not complete:
            last = max(s.scanned_at for _, s in scans)
            return self.result(
                repo,
                Outcome.FAIL,
                [
                    f"{repo}: only partial scans or alert lists (latest {_fmt(last)}); none is a "
                    "complete scan that could show a finding gone"
                ],
                repo=repo,
                evidence=tuple(d for d, _ in scans[-3:]),
            )
        d, latest = max(complete, key=lambda x: x[1].scanned_at)
        age = at - latest.scanned_at
        kinds = _scan_kinds(complete, at - max_age)
        if age > max_age:
            return self.result(
                repo,
                Outcome.FAIL,
                [
                    f"{repo}: the latest complete scan ({latest.tool}, {_fmt(latest.scanned_at)}) is "
                    f"{_hours(age)} old; at most {ctx.settings.patching.scan_max_age_days} days allowed"
                ],
                repo=repo,
                evidence=(d,),
            )
        return self.result(
            repo,
            Outcome.PASS,
            [
                f"{repo}: complete scan by {latest.tool} on {_fmt(latest.scanned_at)} "
                f"({_hours(age)} ago); fresh scan kinds: {', '.join(sorted(kinds))}"
            ],
            repo=repo,
            evidence=(d,),
        )


def _scan_kinds(scans: list[tuple[str, Scan]], since: datetime) -> Mapping[str, int]:
    out: dict[str, int] = {}
    for _, s in scans:
        if s.scanned_at >= since:
            out[s.scanner] = out.get(s.scanner, 0) + 1
    return out
