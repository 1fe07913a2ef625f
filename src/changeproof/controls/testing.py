"""Testing controls: CM-TST-1 (required checks passed before merge) and CM-TST-2 (security
testing ran).

The required checks come from the protection version in force at the merge (the latest
``ProtectionSnapshot`` observed at or before ``merged_at``), each bound to its app when the
protection binds it; only when no snapshot exists do the settings' ``testing.required_checks``
apply. A run counts on the head commit, or on the merge-group commit when a merge queue
landed the change, and only when it completed at or before the merge.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from changeproof.controls.base import Context
from changeproof.controls.config import in_force
from changeproof.controls.facts import ChangeFacts
from changeproof.controls.review import ChangeControl
from changeproof.evidence import Change, CheckResult
from changeproof.outcomes import Outcome, Result

# Conclusions of a run that executed (a failing scanner still scanned); "skipped" did not.
RAN = frozenset({"success", "failure", "neutral", "action_required"})


@dataclass(frozen=True)
class ChecksVerdict:
    outcome: Outcome
    reasons: tuple[str, ...]
    evidence: tuple[str, ...]  # digests of protection snapshots read


def _shas(c: Change) -> tuple[str, ...]:
    head = c.head_sha or c.merge_sha
    return (head, c.merge_queue_sha) if c.merge_queue_sha else (head,)


def required_checks(
    c: Change, ctx: Context
) -> tuple[tuple[tuple[str, str | None], ...] | None, str, tuple[str, ...]]:
    """(required (name, app) pairs or None when unknown, where they came from, evidence)."""
    from changeproof.controls.config import effective

    found = in_force(ctx.protections.get((c.repo, c.branch), ()), c.merged_at)
    if found is not None:
        dig, snap = found
        if not snap.readable:
            return None, "the protection in force at merge could not be read", (dig,)
        eff = effective(snap)
        return (
            eff.required_checks,
            f"protection observed {snap.provenance.occurred_at.isoformat()}",
            (dig,),
        )
    if ctx.settings.testing.required_checks:
        return (
            tuple((n, None) for n in ctx.settings.testing.required_checks),
            "settings testing.required_checks (no protection snapshot before the merge)",
            (),
        )
    return None, "no protection snapshot before the merge and no testing.required_checks", ()


def judge_checks(c: Change, ctx: Context) -> ChecksVerdict:
    """The CM-TST-1 verdict on one change (also used by CM-REV-1's standard changes)."""
    req, source, ev = required_checks(c, ctx)
    if req is None:
        return ChecksVerdict(
            Outcome.INDETERMINATE, (f"which checks were required is unknown: {source}",), ev
        )
    if c.checks is None:
        return ChecksVerdict(
            Outcome.INDETERMINATE, ("no check evidence was collected for this change",), ev
        )
    if not req:
        return ChecksVerdict(
            Outcome.FAIL,
            (f"no checks were required at merge ({source}): nothing shows the change was tested",),
            ev,
        )
    shas = _shas(c)
    allowed = set(ctx.settings.testing.allowed_conclusions)
    runs_by_name: dict[str, list[CheckResult]] = {}
    for r in c.checks:
        if r.commit_sha in shas:
            runs_by_name.setdefault(r.name, []).append(r)
    bad: list[str] = []
    good: list[str] = []
    for name, app in req:
        runs = runs_by_name.get(name, [])
        if app is not None:
            wrong = [r for r in runs if (r.app or r.creator) != app]
            runs = [r for r in runs if (r.app or r.creator) == app]
            if not runs and wrong:
                bad.append(
                    f"{name}: only runs from {', '.join(sorted({str(r.app or r.creator) for r in wrong}))}, "
                    f"but the protection binds it to {app}"
                )
                continue
        if not runs:
            bad.append(f"{name}: no run on the merged commit")
            continue
        done = [r for r in runs if r.completed_at is not None and r.conclusion != "pending"]
        before = [r for r in done if r.completed_at is not None and r.completed_at <= c.merged_at]
        if not before:
            if done:
                bad.append(f"{name}: completed only after the merge")
            else:
                bad.append(f"{name}: still pending at merge")
            continue
        last = max(before, key=lambda r: r.completed_at or c.merged_at)
        if last.conclusion not in allowed:
            bad.append(f"{name}: {last.conclusion} before the merge")
        else:
            good.append(f"{name} {last.conclusion}")
    if bad:
        return ChecksVerdict(Outcome.FAIL, (*bad, f"required checks from {source}"), ev)
    return ChecksVerdict(
        Outcome.PASS,
        (
            f"all {len(req)} required check(s) passed before merge: {', '.join(good)}",
            f"required checks from {source}",
        ),
        ev,
    )


class RequiredChecks(ChangeControl):
    id = "CM-TST-1"

    def judge(self, f: ChangeFacts, ctx: Context, digest: str) -> Result:
        c = f.change
        if c.change_type == "initial":
            return self.res(f, Outcome.NOT_APPLICABLE, ["the repository's initial commit"], digest)
        v = judge_checks(c, ctx)
        return self.result(
            c.id, v.outcome, list(v.reasons), repo=c.repo, evidence=(digest, *v.evidence)
        )


def _matches(name: str, patterns: Sequence[str]) -> bool:
    """Case-insensitive glob match of a check name (one compiled regex per pattern set)."""
    return _check_globs(tuple(patterns))(name) is not None


@functools.lru_cache(maxsize=256)
def _check_globs(patterns: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    rx = "|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or "(?!)"
    return re.compile(rx, re.IGNORECASE).match


class SecurityTesting(ChangeControl):
    id = "CM-TST-2"

    def judge(self, f: ChangeFacts, ctx: Context, digest: str) -> Result:
        c = f.change
        if c.change_type == "initial":
            return self.res(f, Outcome.NOT_APPLICABLE, ["the repository's initial commit"], digest)
        t = ctx.settings.testing
        classes = [
            (label, pats)
            for label, pats in (
                ("dependency scanning", t.dependency_scanning_checks),
                ("SAST", t.sast_checks),
            )
            if pats
        ]
        if not classes:
            return self.res(
                f,
                Outcome.INDETERMINATE,
                [
                    "no security testing checks are configured "
                    "(testing.dependency_scanning_checks, testing.sast_checks), so nothing shows "
                    "security testing ran"
                ],
                digest,
            )
        if c.checks is None:
            return self.res(
                f,
                Outcome.INDETERMINATE,
                ["no check evidence was collected for this change"],
                digest,
            )
        shas = _shas(c)
        ok: list[str] = []
        bad: list[str] = []
        notes: list[str] = []
        for label, pats in classes:
            runs = [r for r in c.checks if r.commit_sha in shas and _matches(r.name, pats)]
            ran = [
                r
                for r in runs
                if r.completed_at is not None
                and r.completed_at <= c.merged_at
                and r.conclusion in RAN
            ]
            if ran:
                names = sorted({f"{r.name} ({r.conclusion})" for r in ran})
                ok.append(f"{label}: {', '.join(names)}")
                if any(r.conclusion == "failure" for r in ran):
                    notes.append(f"{label} reported problems; track the findings (CM-VUL-1)")
            elif runs:
                states = sorted(
                    {
                        "after the merge"
                        if r.completed_at is not None and r.completed_at > c.merged_at
                        else r.conclusion
                        for r in runs
                    }
                )
                bad.append(f"{label}: no completed run before the merge ({', '.join(states)})")
            else:
                bad.append(f"{label}: no run of {', '.join(pats)} on the merged commit")
        if bad:
            return self.res(f, Outcome.FAIL, [*bad, *ok], digest)
        return self.res(f, Outcome.PASS, [f"security testing ran: {'; '.join(ok)}", *notes], digest)
