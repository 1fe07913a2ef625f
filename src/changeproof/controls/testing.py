"""Testing controls: CM-TST-1 (required checks passed before merge) and CM-TST-2 (security
testing ran).

The required checks come from the protection version in force at the merge (the latest
``ProtectionSnapshot`` observed at or before ``merged_at``), each bound to its app when the
protection binds it; only when no snapshot exists do the settings' ``testing.required_checks``
apply. A run counts on the head commit, or on the merge-group commit when a merge queue
landed the change, and only when it completed at or before the merge.
"""

from __future__ import annotations

import bisect
from datetime import datetime

import msgspec

from changeproof.controls.base import Context
from changeproof.controls.config import effective
from changeproof.controls.facts import ChangeFacts, shared
from changeproof.controls.prepared import occurred_times, prepared
from changeproof.controls.review import ChangeControl
from changeproof.evidence import Change, CheckResult, ProtectionSnapshot
from changeproof.outcomes import FAIL, INDETERMINATE, NOT_APPLICABLE, OK, PASS, Outcome, Result

# Conclusions of a run that executed (a failing scanner still scanned); "skipped" did not.
RAN = frozenset({"success", "failure", "neutral", "action_required"})


class ChecksVerdict(msgspec.Struct, frozen=True, gc=False):
    outcome: Outcome
    reasons: tuple[str, ...]
    evidence: tuple[str, ...]  # digests of protection snapshots read


Required = tuple[tuple[tuple[str, str | None], ...] | None, str, tuple[str, ...]]

# id(snapshot) → (snapshot, its digest, what required_checks says under it): every change
# merged under one protection version asks the same question (keyed by identity, checked)
_BY_SNAPSHOT: dict[int, tuple[ProtectionSnapshot, str, Required]] = {}


def _under_snapshot(dig: str, snap: ProtectionSnapshot) -> Required:
    hit = _BY_SNAPSHOT.get(id(snap))
    if hit is not None and hit[0] is snap and hit[1] == dig:
        return hit[2]
    out: Required
    if not snap.readable:
        out = (None, "the protection in force at merge could not be read", (dig,))
    else:
        out = (
            effective(snap).required_checks,
            f"protection observed {snap.provenance.occurred_at.isoformat()}",
            (dig,),
        )
    if len(_BY_SNAPSHOT) >= 4096:
        _BY_SNAPSHOT.clear()
    _BY_SNAPSHOT[id(snap)] = (snap, dig, out)
    return out


Snapshots = tuple[tuple[str, ProtectionSnapshot], ...]
# id(snapshots of a branch) → (them, their times, what required_checks says under each one,
# filled when first asked): the changes of one branch ask about the same snapshots
_IN_FORCE: dict[int, tuple[Snapshots, list[datetime], list[Required | None]]] = {}


def _in_force(snaps: Snapshots) -> tuple[Snapshots, list[datetime], list[Required | None]]:
    hit = _IN_FORCE.get(id(snaps))
    if hit is not None and hit[0] is snaps:
        return hit
    under: list[Required | None] = [None] * len(snaps)
    out = (snaps, occurred_times(snaps), under)
    if type(snaps) is tuple:  # (a list could change under the same identity)
        if len(_IN_FORCE) >= 4096:
            _IN_FORCE.clear()
        _IN_FORCE[id(snaps)] = out
    return out


def required_checks(c: Change, ctx: Context) -> Required:
    """(required (name, app) pairs or None when unknown, where they came from, evidence)."""
    snaps = ctx.protections.get((c.repo, c.branch))
    if snaps:
        # in_force(snaps, c.merged_at): the snapshot observed last at or before the merge
        _, times, under = _in_force(snaps)
        i = bisect.bisect_right(times, c.merged_at)
        if i:
            req = under[i - 1]
            if req is None:
                req = under[i - 1] = _under_snapshot(*snaps[i - 1])
            return req
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
            INDETERMINATE, (f"which checks were required is unknown: {source}",), ev
        )
    if c.checks is None:
        return ChecksVerdict(
            INDETERMINATE, ("no check evidence was collected for this change",), ev
        )
    if not req:
        return ChecksVerdict(
            FAIL,
            (f"no checks were required at merge ({source}): nothing shows the change was tested",),
            ev,
        )
    # the runs on the merged commit (the head, or the merge-group commit of a merge queue),
    # by name
    head = c.head_sha or c.merge_sha
    mq = c.merge_queue_sha
    allowed = prepared(ctx.settings).allowed_conclusions
    merged_at = c.merged_at
    runs_by_name: dict[str, list[CheckResult]] = {}
    for r in c.checks:
        sha = r.commit_sha
        if sha == head or (mq and sha == mq):
            same = runs_by_name.get(r.name)
            if same is None:
                runs_by_name[r.name] = [r]
            else:
                same.append(r)
    bad: list[str] = []
    good: list[str] = []
    for name, app in req:
        runs = runs_by_name.get(name, [])
        if app is not None and (len(runs) != 1 or (runs[0].app or runs[0].creator) != app):
            # (one run from the bound app is the common case: nothing to filter)
            wrong = [r for r in runs if (r.app or r.creator) != app]
            if wrong:
                runs = [r for r in runs if (r.app or r.creator) == app]
                if not runs:
                    bad.append(
                        f"{name}: only runs from {', '.join(sorted({str(r.app or r.creator) for r in wrong}))}, "
                        f"but the protection binds it to {app}"
                    )
                    continue
        if not runs:
            bad.append(f"{name}: no run on the merged commit")
            continue
        # the run that completed last at or before the merge (the first such on a tie), and
        # whether any completed at all
        last: CheckResult | None = None
        done = False
        if len(runs) == 1:  # the loop below for one run
            r = runs[0]
            at = r.completed_at
            if at is not None and r.conclusion != "pending":
                done = True
                if at <= merged_at:
                    last = r
        else:
            for r in runs:
                at = r.completed_at
                if at is None or r.conclusion == "pending":
                    continue
                done = True
                if at <= merged_at and (last is None or at > last.completed_at):  # type: ignore[operator]
                    last = r
        if last is None:
            if done:
                bad.append(f"{name}: completed only after the merge")
            else:
                bad.append(f"{name}: still pending at merge")
            continue
        if last.conclusion not in allowed:
            bad.append(f"{name}: {last.conclusion} before the merge")
        else:
            good.append(f"{name} {last.conclusion}")
    src = _FROM.get(source)
    if src is None:
        if len(_FROM) >= 4096:
            _FROM.clear()
        src = _FROM[source] = f"required checks from {source}"
    if bad:
        return ChecksVerdict(FAIL, (*bad, src), ev)
    return ChecksVerdict(
        PASS,
        (f"all {len(req)} required check(s) passed before merge: {', '.join(good)}", src),
        ev,
    )


# where the required checks came from → the reason that says so (one per protection version)
_FROM: dict[str, str] = {}


def checks_verdict(f: ChangeFacts, ctx: Context) -> ChecksVerdict:
    """:func:`judge_checks` of the change, once per change and context (CM-TST-1 and a
    standard change's CM-REV-1 path both ask)."""
    memo = f.memo
    if memo.get("ctx") is not ctx:
        memo = shared(f, ctx)
    v: ChecksVerdict | None = memo.get("checks")
    if v is None:
        v = memo["checks"] = judge_checks(f.change, ctx)
    return v


class RequiredChecks(ChangeControl):
    id = "CM-TST-1"

    def judge(self, f: ChangeFacts, ctx: Context, digest: str) -> Result:
        c = f.change
        if c.change_type == "initial":
            return self.res(f, NOT_APPLICABLE, ["the repository's initial commit"], digest)
        v = checks_verdict(f, ctx)
        # self.result(f.cid, v.outcome, v.reasons, repo=c.repo, evidence=(digest, *v.evidence))
        ev = v.evidence
        outcome = v.outcome
        return Result(
            control=self.id,
            subject=f.cid,
            outcome=outcome,
            reasons=v.reasons,
            repo=c.repo,
            evidence=_with(digest, ev),
            remediation=None if outcome in OK else self.remediation_for(outcome),
            details={},
        )


def _with(digest: str, ev: tuple[str, ...]) -> tuple[str, ...]:
    """``tuple(sorted({digest, *ev}))``: the change's digest and the snapshot's, in order."""
    if not ev:
        return (digest,)
    if len(ev) == 1:
        e = ev[0]
        return (digest,) if e == digest else (digest, e) if digest < e else (e, digest)
    return tuple(sorted({digest, *ev}))


class SecurityTesting(ChangeControl):
    id = "CM-TST-2"

    def judge(self, f: ChangeFacts, ctx: Context, digest: str) -> Result:
        c = f.change
        if c.change_type == "initial":
            return self.res(f, NOT_APPLICABLE, ["the repository's initial commit"], digest)
        prep = f.prep if f.prep.settings is ctx.settings else prepared(ctx.settings)
        classes = prep.security
        if not classes:
            return self.res(
                f,
                INDETERMINATE,
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
                INDETERMINATE,
                ["no check evidence was collected for this change"],
                digest,
            )
        head = c.head_sha or c.merge_sha
        mq = c.merge_queue_sha
        ok: list[str] = []
        bad: list[str] = []
        notes: list[str] = []
        # each check on the merged commit (as in judge_checks) whose name matches a security
        # class, with the classes it matches
        on_head: list[tuple[CheckResult, int]] = []
        known = prep.known_checks
        for r in c.checks:
            sha = r.commit_sha
            if sha == head or (mq and sha == mq):
                bits = known.get(r.name)
                if bits is None:
                    bits = prep.security_bits(r.name)
                if bits:
                    on_head.append((r, bits))
        merged_at = c.merged_at
        for i, (label, pats) in enumerate(classes):
            bit = 1 << i
            runs: list[CheckResult] = []  # this class's runs on the merged commit
            ran: list[CheckResult] = []  # … of which completed, before the merge, and ran
            for r, bits in on_head:
                if bits & bit:
                    runs.append(r)
                    at = r.completed_at
                    if at is not None and at <= merged_at and r.conclusion in RAN:
                        ran.append(r)
            if ran:
                names = (
                    [f"{ran[0].name} ({ran[0].conclusion})"]
                    if len(ran) == 1
                    else sorted({f"{r.name} ({r.conclusion})" for r in ran})
                )
                ok.append(f"{label}: {', '.join(names)}")
                for r in ran:
                    if r.conclusion == "failure":
                        notes.append(f"{label} reported problems; track the findings (CM-VUL-1)")
                        break
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
            return self.res(f, FAIL, [*bad, *ok], digest)
        return self.res(f, PASS, [f"security testing ran: {'; '.join(ok)}", *notes], digest)
