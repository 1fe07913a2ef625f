"""Repository configuration controls: CM-CFG-1 (effective protection), CM-CFG-2 (bypass),
CM-CFG-3 (configuration changes and weak windows) and CM-CFG-4 (evidence retention).

Protection is judged from ``ProtectionSnapshot`` evidence (one per observation, several layers
each: classic protection and every ruleset). The *effective* protection is the union of the
classic layer and every ACTIVE ruleset with the most restrictive value winning; a rule counts
as bypass-free when at least one layer that enforces it has nobody who can bypass it (the
layering mistake of ossf/scorecard#3480 is avoided by intersecting bypass actors per rule).

The evaluator passes what these controls need beyond the stored records through
``Context.extra`` (they never read the store):

* ``period``: ``(start, end)`` of the evaluation, either side ``None``;
* ``spans``: ``{(repo, branch): Span}`` for the changes it streamed;
* ``windows``: ``{window_id: (count, change ids…)}`` changes merged during weak windows;
* ``suspect_bypasses``: changes that failed CM-REV-1 or CM-TST-1 (see :class:`Suspect`);
* ``locker_missing``: ``{repo: (changes, changes whose raw evidence is not in the locker)}``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar

from changeproof.controls.base import Context, RecordControl
from changeproof.evidence import Bypass, ProtectionRule, ProtectionSnapshot
from changeproof.outcomes import Outcome, Result, worst
from changeproof.settings import Settings

RULES = ("pull_request", "approvals", "stale_approvals", "status_checks", "force_push", "deletion")
RULE_TEXT = {
    "pull_request": "require a pull request",
    "approvals": "require approvals",
    "stale_approvals": "dismiss stale approvals / approve the last push",
    "status_checks": "require status checks",
    "force_push": "block force pushes",
    "deletion": "block deletion",
}

Snapshots = tuple[tuple[str, ProtectionSnapshot], ...]


@dataclass(frozen=True)
class Span:
    """What the evaluator saw of one (repo, branch) while streaming changes."""

    first: datetime
    last: datetime
    changes: int
    direct_pushes: int
    direct_push_commits: int


@dataclass(frozen=True)
class Suspect:
    """A change that failed CM-REV-1 or CM-TST-1: a probable bypass if protection required it."""

    change_id: str
    repo: str
    branch: str
    merged_at: datetime
    failed: tuple[str, ...]  # control ids
    digest: str


@dataclass(frozen=True)
class Effective:
    """The effective protection of one branch at one observation."""

    readable: bool
    requires_pr: bool
    required_approvals: int
    stale_protection: bool
    code_owner_review: bool
    required_checks: tuple[tuple[str, str | None], ...]
    strict_or_queue: bool
    blocks_force_push: bool
    blocks_deletion: bool
    bypass: tuple[tuple[str, tuple[str, ...]], ...]  # rule → actors able to bypass it
    gitlab_problems: tuple[str, ...]
    layers: tuple[str, ...]

    def bypassers(self, rule: str) -> tuple[str, ...]:
        for r, actors in self.bypass:
            if r == rule:
                return actors
        return ()

    def key(self) -> tuple[Any, ...]:
        """Comparable identity: two observations with the same key are the same version."""
        return (
            self.readable,
            self.requires_pr,
            self.required_approvals,
            self.stale_protection,
            self.code_owner_review,
            self.required_checks,
            self.strict_or_queue,
            self.blocks_force_push,
            self.blocks_deletion,
            self.bypass,
            self.gitlab_problems,
        )


def _layer_bypassers(layer: ProtectionRule, rule: str) -> frozenset[str] | None:
    """Actors who can bypass ``rule`` in this layer; ``None`` when the layer doesn't enforce it."""
    enforced = {
        "pull_request": layer.requires_pr,
        "approvals": layer.required_approvals >= 1,
        "stale_approvals": layer.dismiss_stale or layer.require_last_push_approval,
        "status_checks": bool(layer.required_checks),
        "force_push": not layer.allow_force_push,
        "deletion": not layer.allow_deletion,
    }[rule]
    if not enforced:
        return None
    actors: set[str] = set()
    if layer.layer == "classic" and not layer.enforce_admins:
        actors.add("admins")
    for actor, mode in layer.bypass_actors:
        # `pull_request` mode lets an actor merge a PR past the rules, not push without one
        if rule == "pull_request" and mode == "pull_request":
            continue
        actors.add(actor.lower())
    return frozenset(actors)


_EFFECTIVE: dict[int, tuple[ProtectionSnapshot, Effective]] = {}


def effective(snapshot: ProtectionSnapshot) -> Effective:
    """The effective protection of one snapshot (memoised: every change merged under the same
    snapshot asks for it; keyed by identity and checked, so a new object is never confused)."""
    hit = _EFFECTIVE.get(id(snapshot))
    if hit is not None and hit[0] is snapshot:
        return hit[1]
    eff = _effective(snapshot)
    if len(_EFFECTIVE) > 4096:
        _EFFECTIVE.clear()
    _EFFECTIVE[id(snapshot)] = (snapshot, eff)
    return eff


def _effective(snapshot: ProtectionSnapshot) -> Effective:
    layers = [lay for lay in snapshot.layers if lay.enforcement == "active"]
    checks: dict[str, str | None] = {}
    for lay in layers:
        for name, app in lay.required_checks:
            checks[name] = checks.get(name) or app  # bound by any layer → bound
    bypass: list[tuple[str, tuple[str, ...]]] = []
    for rule in RULES:
        sets = [s for s in (_layer_bypassers(lay, rule) for lay in layers) if s is not None]
        if not sets:
            continue
        common = frozenset.intersection(*sets)
        bypass.append((rule, tuple(sorted(common))))
    gitlab: list[str] = []
    for lay in layers:
        if lay.author_approval_allowed:
            gitlab.append("authors may approve their own merge requests")
        if lay.committer_approval_allowed:
            gitlab.append("committers may approve merge requests they added commits to")
        if lay.reset_approvals_on_push is False:
            gitlab.append("approvals are not reset when commits are pushed")
        if lay.overriding_approvers_allowed:
            gitlab.append("merge requests may override the approval rules")
    return Effective(
        readable=snapshot.readable,
        requires_pr=any(lay.requires_pr for lay in layers),
        required_approvals=max((lay.required_approvals for lay in layers), default=0),
        stale_protection=any(lay.dismiss_stale or lay.require_last_push_approval for lay in layers),
        code_owner_review=any(lay.require_code_owner_review for lay in layers),
        required_checks=tuple(sorted(checks.items())),
        strict_or_queue=any(lay.strict_checks or lay.merge_queue for lay in layers),
        blocks_force_push=any(not lay.allow_force_push for lay in layers),
        blocks_deletion=any(not lay.allow_deletion for lay in layers),
        bypass=tuple(bypass),
        gitlab_problems=tuple(sorted(set(gitlab))),
        layers=tuple(lay.layer for lay in layers),
    )


def in_force(snaps: Snapshots, at: datetime) -> tuple[str, ProtectionSnapshot] | None:
    """The snapshot observed most recently at or before ``at`` (``snaps`` in time order)."""
    i = bisect.bisect_right(snaps, at, key=lambda x: x[1].provenance.occurred_at)
    return snaps[i - 1] if i else None


def protection_problems(eff: Effective, settings: Settings, repo: str) -> list[str]:
    """Every CM-CFG-1 requirement this effective protection misses (empty = compliant)."""
    if not eff.readable:
        return []
    need = settings.required_approvals(repo, (), None)
    out: list[str] = []
    if not eff.requires_pr:
        out.append("pull requests are not required")
    if eff.required_approvals < need:
        out.append(f"{eff.required_approvals} approval(s) required, the policy needs {need}")
    if not eff.stale_protection:
        out.append("neither stale-approval dismissal nor last-push approval is required")
    if not eff.required_checks:
        out.append("no status checks are required")
    unbound = [name for name, app in eff.required_checks if app is None]
    if unbound:
        out.append(
            "required check(s) not bound to an app (anyone with write access can post them): "
            + ", ".join(unbound)
        )
    if not eff.blocks_force_push:
        out.append("force pushes are allowed")
    if not eff.blocks_deletion:
        out.append("the branch may be deleted")
    out.extend(eff.gitlab_problems)
    return out


def exposure(eff: Effective, settings: Settings) -> list[str]:
    """Bypass exposure: actors (not named break-glass) who can skip a rule."""
    glass = {x.lower() for x in settings.identities.break_glass}
    out: list[str] = []
    for rule, actors in eff.bypass:
        bad = [a for a in actors if a not in glass]
        if bad:
            out.append(f"{', '.join(bad)} can bypass '{RULE_TEXT[rule]}' (not named break-glass)")
    return out


# --- subjects over days ------------------------------------------------------------------


def _period(ctx: Context) -> tuple[datetime | None, datetime | None]:
    p = ctx.extra.get("period")
    if p is None:
        return None, None
    return p[0], p[1]


def _spans(ctx: Context) -> Mapping[tuple[str, str], Span]:
    spans: Mapping[tuple[str, str], Span] = ctx.extra.get("spans", {})
    return spans


def pairs(ctx: Context) -> list[tuple[str, str]]:
    """(repo, branch) pairs in scope: seen in changes or in protection snapshots."""
    out = set(_spans(ctx)) | {k for k in ctx.protections if ctx.settings.is_controlled(k[0], k[1])}
    return sorted(out)


def day_range(ctx: Context, pair: tuple[str, str]) -> tuple[date, date] | None:
    start, end = _period(ctx)
    span = _spans(ctx).get(pair)
    snaps = ctx.protections.get(pair, ())
    if start is None:
        firsts = [t for t in (span.first if span else None,) if t is not None]
        if snaps:
            firsts.append(snaps[0][1].provenance.occurred_at)
        if not firsts:
            return None
        start = min(firsts)
    stop = min(end, ctx.now) if end is not None else ctx.now
    if stop <= start:
        return None
    return start.date(), (stop - timedelta(microseconds=1)).date()


def _day_bounds(d: date) -> tuple[datetime, datetime]:
    a = datetime.combine(d, time(0), tzinfo=UTC)
    return a, a + timedelta(days=1)


def versions_during(
    snaps: Snapshots, a: datetime, b: datetime
) -> tuple[list[tuple[str, ProtectionSnapshot]], bool]:
    """Snapshots in force at some time in [a, b), and whether [a, …) was covered from its start."""
    found: list[tuple[str, ProtectionSnapshot]] = []
    first = in_force(snaps, a)
    if first is not None:
        found.append(first)
    i = bisect.bisect_right(snaps, a, key=lambda x: x[1].provenance.occurred_at)
    while i < len(snaps) and snaps[i][1].provenance.occurred_at < b:
        found.append(snaps[i])
        i += 1
    return found, first is not None


def _windows(
    days: Iterable[tuple[date, date, Outcome, tuple[str, ...], tuple[str, ...]]],
) -> list[tuple[date, date, Outcome, tuple[str, ...], tuple[str, ...]]]:
    """Merge consecutive runs of days with the same verdict and reasons into windows
    (evidence: all the versions in force during the window)."""
    out: list[tuple[date, date, Outcome, tuple[str, ...], tuple[str, ...]]] = []
    for first, last, o, reasons, ev in days:
        if out and out[-1][2] == o and out[-1][3] == reasons:
            a, _, _, _, prev_ev = out[-1]
            out[-1] = (a, last, o, reasons, tuple(sorted({*prev_ev, *ev})))
        else:
            out.append((first, last, o, reasons, ev))
    return out


def window_subject(repo: str, branch: str, a: date, b: date) -> str:
    return f"{repo}:{branch}@{a.isoformat()}" + (f"..{b.isoformat()}" if b != a else "")


class _DailyConfigControl(RecordControl):
    """Judged per repository branch per day, reported as windows of identical days."""

    def judge_version(
        self, eff: Effective, settings: Settings, repo: str
    ) -> tuple[Outcome, list[str]]:
        raise NotImplementedError

    def subjects(self, ctx: Context) -> list[tuple[Any, str]]:
        out: list[tuple[Any, str]] = []
        for pair in pairs(ctx):
            rng = day_range(ctx, pair)
            if rng is None:
                continue
            snaps = ctx.protections.get(pair, ())
            cache: dict[str, tuple[Outcome, list[str]]] = {}
            days: list[tuple[date, date, Outcome, tuple[str, ...], tuple[str, ...]]] = []
            d = rng[0]
            while d <= rng[1]:
                a, b = _day_bounds(d)
                found, from_start = versions_during(snaps, a, b)
                # A day in which no new version was observed is judged as every following
                # day is until the next observation's day: one run, not one pass per day.
                last = d
                if len(found) == from_start:
                    i = bisect.bisect_right(snaps, a, key=lambda x: x[1].provenance.occurred_at)
                    last = (
                        snaps[i][1].provenance.occurred_at.astimezone(UTC).date()
                        - timedelta(days=1)
                        if i < len(snaps)
                        else rng[1]
                    )
                    last = min(last, rng[1])
                judged: list[tuple[Outcome, list[str]]] = []
                if not from_start:
                    judged.append(
                        (
                            Outcome.INDETERMINATE,
                            [
                                "no protection snapshot was in force at the start of the day: "
                                "the configuration then is unknown"
                            ],
                        )
                    )
                for dig, snap in found:
                    if dig not in cache:
                        cache[dig] = self.judge_version(effective(snap), ctx.settings, pair[0])
                    o, rs = cache[dig]
                    observed = snap.provenance.occurred_at.isoformat()
                    judged.append((o, [f"{r} (as observed {observed})" for r in rs]))
                day_outcome = worst([o for o, _ in judged])
                # the day is as good as its worst version: only that version's reasons explain it
                reasons = [r for o, rs in judged if o is day_outcome for r in rs]
                ev = tuple(sorted({x for x, _ in found}))
                days.append((d, last, day_outcome, tuple(reasons), ev))
                d = last + timedelta(days=1)
            for a_day, b_day, o, why, ev in _windows(days):
                subject = window_subject(pair[0], pair[1], a_day, b_day)
                out.append(((subject, pair[0], o, why), "|".join(ev)))
        return out

    def evaluate(self, subject: Any, ctx: Context, digest: str) -> Result:
        subj, repo, outcome, reasons = subject
        return self.result(
            subj,
            outcome,
            list(reasons),
            repo=repo,
            evidence=tuple(x for x in digest.split("|") if x),
        )


class EffectiveProtection(_DailyConfigControl):
    id = "CM-CFG-1"
    subject_kind: ClassVar = "repository"

    def judge_version(
        self, eff: Effective, settings: Settings, repo: str
    ) -> tuple[Outcome, list[str]]:
        if not eff.readable:
            return Outcome.INDETERMINATE, [
                "the protection could not be read (the token lacks admin/read access)"
            ]
        problems = protection_problems(eff, settings, repo)
        if problems:
            return Outcome.FAIL, problems
        layers = ", ".join(eff.layers) or "none"
        return Outcome.PASS, [
            f"effective protection ({layers}) requires PRs, {eff.required_approvals} approval(s), "
            f"current approvals, {len(eff.required_checks)} app-bound check(s), "
            "no force push, no deletion"
        ]


class BypassExposure(_DailyConfigControl):
    id = "CM-CFG-2"
    subject_kind: ClassVar = "repository"
    record_kind: ClassVar = "bypass"

    def judge_version(
        self, eff: Effective, settings: Settings, repo: str
    ) -> tuple[Outcome, list[str]]:
        if not eff.readable:
            return Outcome.INDETERMINATE, [
                "the protection could not be read, so who can bypass it is unknown"
            ]
        exposed = exposure(eff, settings)
        if exposed:
            return Outcome.FAIL, exposed
        glass = sorted({a for _, actors in eff.bypass for a in actors})
        return Outcome.PASS, [
            "no one can bypass the protection"
            if not glass
            else f"only break-glass accounts can bypass it: {', '.join(glass)}"
        ]

    def subjects(self, ctx: Context) -> list[tuple[Any, str]]:
        out = super().subjects(ctx)
        suspects: Sequence[Suspect] = ctx.extra.get("suspect_bypasses", ())
        for s in suspects:
            found = self.suspect(s, ctx)
            if found is not None:
                out.append(found)
        return out

    def suspect(self, s: Suspect, ctx: Context) -> tuple[Any, str] | None:
        """The subject (and its evidence digests) to judge for a change that failed CM-REV-1
        or CM-TST-1, when the protection in force at its merge required what it lacked: a
        probable bypass. None otherwise. (The evaluator calls it as each change is judged,
        instead of passing every suspect in ``suspect_bypasses``.)"""
        found = in_force(ctx.protections.get((s.repo, s.branch), ()), s.merged_at)
        if found is None:
            return None
        dig, snap = found
        eff = effective(snap)
        required: list[str] = []
        if "CM-REV-1" in s.failed and (eff.requires_pr and eff.required_approvals >= 1):
            required.append(
                f"merged without the required approvals while protection required "
                f"{eff.required_approvals}"
            )
        if "CM-TST-1" in s.failed and eff.required_checks:
            required.append("merged without passing required checks while protection required them")
        if not required:
            return None
        observed = snap.provenance.occurred_at.isoformat()
        reasons = (
            *(f"probable bypass of {s.branch} protection: {r}" for r in required),
            f"protection in force at merge observed {observed}",
        )
        return (s.change_id, s.repo, Outcome.FAIL, reasons), f"{s.digest}|{dig}"

    def evaluate(self, subject: Any, ctx: Context, digest: str) -> Result:
        if isinstance(subject, Bypass):
            who = (
                subject.actor.login or subject.actor.email if subject.actor else "an unknown actor"
            )
            glass = subject.actor is not None and bool(
                subject.actor.keys() & {x.lower() for x in ctx.settings.identities.break_glass}
            )
            reasons = [
                f"bypass of {subject.repo}:{subject.branch or '*'} protection by {who} at "
                f"{subject.at.isoformat()} ({subject.source}{': ' + subject.detail if subject.detail else ''})",
                "the actor is a named break-glass account; the bypass is still a finding to explain"
                if glass
                else "the actor is not a named break-glass account",
            ]
            return self.result(
                f"bypass:{subject.id}", Outcome.FAIL, reasons, repo=subject.repo, evidence=(digest,)
            )
        return super().evaluate(subject, ctx, digest)


def weak_windows(
    ctx: Context,
) -> list[tuple[str, str, str, datetime, datetime | None, list[str]]]:
    """Windows where protection was weaker than before: (id, repo, branch, start, end, why).

    A window opens at a snapshot that misses a requirement the previous version met (or
    lowers the approval count, drops a required check, or widens bypass) and closes at the
    next snapshot that is not weaker than the version before the window.
    """
    out: list[tuple[str, str, str, datetime, datetime | None, list[str]]] = []
    for (repo, branch), snaps in sorted(ctx.protections.items()):
        if not ctx.settings.is_controlled(repo, branch):
            continue
        effs = [(d, s, effective(s)) for d, s in snaps]
        i = 1
        while i < len(effs):
            base = effs[i - 1][2]
            why = weaker(base, effs[i][2], ctx.settings, repo)
            if not why:
                i += 1
                continue
            start = effs[i][1].provenance.occurred_at
            j = i + 1
            while j < len(effs) and weaker(base, effs[j][2], ctx.settings, repo):
                j += 1
            end = effs[j][1].provenance.occurred_at if j < len(effs) else None
            out.append((f"{repo}:{branch}@{start.isoformat()}", repo, branch, start, end, why))
            i = j + 1 if j < len(effs) else j
    return out


def weaker(old: Effective, new: Effective, settings: Settings, repo: str) -> list[str]:
    why: list[str] = []
    if old.readable and not new.readable:
        return ["the protection became unreadable"]
    old_p = set(protection_problems(old, settings, repo))
    why.extend(p for p in protection_problems(new, settings, repo) if p not in old_p)
    if new.required_approvals < old.required_approvals and not any(
        "approval(s) required" in w for w in why
    ):
        why.append(
            f"required approvals lowered from {old.required_approvals} to {new.required_approvals}"
        )
    dropped = sorted({n for n, _ in old.required_checks} - {n for n, _ in new.required_checks})
    if dropped:
        why.append("required check(s) removed: " + ", ".join(dropped))
    old_e = set(exposure(old, settings))
    why.extend(e for e in exposure(new, settings) if e not in old_e)
    return why


class ConfigurationChanges(RecordControl):
    id = "CM-CFG-3"
    subject_kind: ClassVar = "repository"

    def subjects(self, ctx: Context) -> list[tuple[Any, str]]:
        start, end = _period(ctx)
        merged: Mapping[str, tuple[int, tuple[str, ...]]] = ctx.extra.get("windows", {})
        weak = {w[0]: w for w in weak_windows(ctx)}
        out: list[tuple[Any, str]] = []
        for (repo, branch), snaps in sorted(ctx.protections.items()):
            if not ctx.settings.is_controlled(repo, branch):
                continue
            prev: tuple[str, ProtectionSnapshot, Effective] | None = None
            for dig, snap in snaps:
                eff = effective(snap)
                if prev is not None and eff.key() != prev[2].key():
                    at = snap.provenance.occurred_at
                    wid = f"{repo}:{branch}@{at.isoformat()}"
                    w = weak.get(wid)
                    in_period = (start is None or at >= start) and (end is None or at < end)
                    overlaps = w is not None and (
                        (end is None or w[3] < end)
                        and (start is None or w[4] is None or w[4] > start)
                    )
                    if in_period or overlaps:
                        out.append(
                            (
                                (repo, branch, prev, (dig, snap, eff), w, merged.get(wid)),
                                f"{prev[0]}|{dig}",
                            )
                        )
                prev = (dig, snap, eff)
        return out

    def evaluate(self, subject: Any, ctx: Context, digest: str) -> Result:
        repo, branch, _prev, cur, window, merged = subject
        _dig, snap, _eff = cur
        at = snap.provenance.occurred_at
        who_actor = snap.changed_by
        who = (who_actor.login or who_actor.email or who_actor.name) if who_actor else None
        sid = f"{repo}:{branch}@config:{at.isoformat()}"
        ev = tuple(x for x in digest.split("|") if x)
        head = f"protection of {branch} changed at {at.isoformat()}" + (f" by {who}" if who else "")
        if window is not None:
            _, _, _, _start, w_end, why = window
            until = w_end.isoformat() if w_end is not None else "now (still weakened)"
            reasons = [f"{head}: weakened until {until}", *why]
            if merged:
                count, ids = merged
                shown = ", ".join(ids)
                more = f" and {count - len(ids)} more" if count > len(ids) else ""
                reasons.append(f"{count} change(s) merged during the weak window: {shown}{more}")
            else:
                reasons.append("no changes were merged during the weak window")
            if who is None:
                reasons.append("who made the change is not recorded")
            return self.result(sid, Outcome.FAIL, reasons, repo=repo, evidence=ev)
        if who is None:
            return self.result(
                sid,
                Outcome.INDETERMINATE,
                [
                    f"{head}; who made the change is not recorded (collect the audit log or the "
                    "ruleset history)"
                ],
                repo=repo,
                evidence=ev,
            )
        return self.result(
            sid, Outcome.PASS, [f"{head}; protection did not weaken"], repo=repo, evidence=ev
        )


class EvidenceRetention(RecordControl):
    id = "CM-CFG-4"
    subject_kind: ClassVar = "repository"

    def subjects(self, ctx: Context) -> list[tuple[Any, str]]:
        missing: Mapping[str, tuple[int, int]] = ctx.extra.get("locker_missing", {})
        repos = sorted({k[0] for k in _spans(ctx)} | set(missing))
        out: list[tuple[Any, str]] = []
        for repo in repos:
            snaps = [(d, s) for (r, _b), ss in ctx.protections.items() if r == repo for d, s in ss]
            latest = max(snaps, key=lambda x: x[1].provenance.occurred_at, default=None)
            out.append(((repo, missing.get(repo), latest), latest[0] if latest else ""))
        return out

    def evaluate(self, subject: Any, ctx: Context, digest: str) -> Result:
        repo, miss, latest = subject
        need = ctx.settings.retention.days
        ev = (digest,) if digest else ()
        total, absent = miss if miss is not None else (0, 0)
        forge_days = latest[1].log_retention_days if latest is not None else None
        if total and absent == 0:
            return self.result(
                f"{repo}:retention",
                Outcome.PASS,
                [f"the locker holds the raw evidence of all {total} change(s) in the period"],
                repo=repo,
                evidence=ev,
            )
        if forge_days is not None and forge_days >= need:
            return self.result(
                f"{repo}:retention",
                Outcome.PASS,
                [f"the forge keeps CI/CD logs {forge_days} days (policy: {need})"],
                repo=repo,
                evidence=ev,
            )
        if not total:
            return self.result(
                f"{repo}:retention",
                Outcome.NOT_APPLICABLE,
                ["no changes in the period"],
                repo=repo,
                evidence=ev,
            )
        forge = (
            f"the forge keeps CI/CD logs only {forge_days} days"
            if forge_days is not None
            else "the forge's log retention is unknown"
        )
        return self.result(
            f"{repo}:retention",
            Outcome.FAIL,
            [
                f"{absent} of {total} change(s) have no raw evidence in the locker and {forge} "
                f"(policy: {need} days)"
            ],
            repo=repo,
            evidence=ev,
        )
