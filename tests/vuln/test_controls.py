"""CM-VUL-1..3 as pure controls over record tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from changeproof.controls import RECORD_CONTROLS
from changeproof.controls.base import Context
from changeproof.controls.vuln import CriticalViaEmergency, FreshScans, PatchDeadline
from changeproof.evidence import (
    Actor,
    Emergency,
    FindingObservation,
    Record,
    RetroReview,
    ScanFindings,
)
from changeproof.outcomes import Outcome, Result
from changeproof.settings import Settings
from tests.vuln.build import REPO, accept, change, deploy, h, obs, prov, scan


def ctx(now: datetime, **tables: Sequence[Record | FindingObservation]) -> Context:
    # findings are stored in per-scan batches
    found = [f for f in tables.pop("finding", ()) if isinstance(f, FindingObservation)]
    tables["scan_findings"] = [
        ScanFindings(id=f"{f.scan_id}/{i}", repo=f.repo, scan_id=f.scan_id, part=i,
                     findings=(f,), provenance=prov(f.scanned_at))
        for i, f in enumerate(found)
    ]  # fmt: skip
    return Context(
        settings=Settings(),
        now=now,
        tables={
            k: tuple((f"{k}{i}", r) for i, r in enumerate(v) if isinstance(r, Record))
            for k, v in tables.items()
        },
    )


def results(control: PatchDeadline | CriticalViaEmergency | FreshScans, c: Context) -> list[Result]:
    return [control.evaluate(s, c, d) for s, d in control.subjects(c)]


def test_registered() -> None:
    ids = {c.id for c in RECORD_CONTROLS}
    assert {"CM-VUL-1", "CM-VUL-2", "CM-VUL-3"} <= ids


def test_vul1_outcomes() -> None:
    c = change(7, h(20))
    scans = [scan("s1", h(0)), scan("s2", h(30))]
    ok = results(PatchDeadline(), ctx(h(500), finding=[obs("s1", h(0))], scan=scans,
                                      change=[c], deployment=[deploy(c, h(40))]))  # fmt: skip
    assert [r.outcome for r in ok] == [Outcome.PASS] and "within the deadline" in ok[0].reasons[0]
    late = results(PatchDeadline(), ctx(h(500), finding=[obs("s1", h(0))], scan=scans,
                                        change=[c], deployment=[deploy(c, h(400))]))  # fmt: skip
    assert late[0].outcome == Outcome.FAIL and "after the deadline" in late[0].reasons[0]
    undeployed = results(
        PatchDeadline(), ctx(h(500), finding=[obs("s1", h(0))], scan=scans, change=[c])
    )
    assert undeployed[0].outcome == Outcome.FAIL and "not deployed" in undeployed[0].reasons[0]
    accepted = results(PatchDeadline(), ctx(h(200), finding=[obs("s1", h(0))], scan=scans[:1],
                                            risk_acceptance=[accept(h(100), h(900))]))  # fmt: skip
    assert accepted[0].outcome == Outcome.EXCEPTION
    info = results(
        PatchDeadline(), ctx(h(9), finding=[obs("s1", h(0), tier="none")], scan=scans[:1])
    )
    assert info[0].outcome == Outcome.NOT_APPLICABLE
    assert all(r.evidence for r in (*ok, *late, *accepted))


def test_vul2_critical_fix_through_emergency() -> None:
    c = change(7, h(20))
    base: dict[str, Sequence[Record | FindingObservation]] = {"finding": [obs("s1", h(0), tier="critical")], "scan": [scan("s1", h(0)), scan("s2", h(30))],
            "change": [c], "deployment": [deploy(c, h(25))]}  # fmt: skip
    normal = results(CriticalViaEmergency(), ctx(h(40), **base))
    assert normal[0].outcome == Outcome.FAIL and "normal path" in normal[0].reasons[0]
    e = Emergency(id="EMG-1", repo=REPO, subject=c.id, incident="INC-1", approver=Actor(login="carol"),
                  declared_at=h(19), provenance=prov(h(19)))  # fmt: skip
    due = results(CriticalViaEmergency(), ctx(h(40), **base, emergency=[e]))
    assert due[0].outcome == Outcome.PASS and "due by" in due[0].reasons[0]
    overdue = results(CriticalViaEmergency(), ctx(h(200), **base, emergency=[e]))
    assert overdue[0].outcome == Outcome.FAIL
    r = RetroReview(id="R-1", subject="EMG-1", reviewer=Actor(login="dave"), reviewed_at=h(50),
                    provenance=prov(h(50)))  # fmt: skip
    done = results(CriticalViaEmergency(), ctx(h(200), **base, emergency=[e], retro_review=[r]))
    assert done[0].outcome == Outcome.PASS and "dave" in done[0].reasons[0]
    high = results(CriticalViaEmergency(), ctx(h(40), **{**base, "finding": [obs("s1", h(0))]}))
    assert high == []  # only critical findings are subjects


def test_vul3_fresh_scans() -> None:
    none = results(FreshScans(), ctx(h(0), change=[change(1, h(0))]))
    assert none[0].outcome == Outcome.FAIL and "no vulnerability scans" in none[0].reasons[0]
    fresh = results(FreshScans(), ctx(h(24), scan=[scan("s1", h(0))]))
    assert fresh[0].outcome == Outcome.PASS
    stale = results(FreshScans(), ctx(h(24 * 8), scan=[scan("s1", h(0))]))
    assert stale[0].outcome == Outcome.FAIL and "old" in stale[0].reasons[0]
    partial = results(FreshScans(), ctx(h(1), scan=[scan("s1", h(0), partial=True)]))
    assert partial[0].outcome == Outcome.FAIL and "partial" in partial[0].reasons[0]


def test_period_scoping() -> None:
    old = ctx(
        h(24 * 60), finding=[obs("s1", h(0))], scan=[scan("s1", h(0))], change=[change(1, h(0))]
    )
    old = Context(settings=old.settings, now=old.now, tables=old.tables,
                  extra={"period": (h(24 * 30), h(24 * 40))})  # fmt: skip
    # the finding is still open during the period: judged; the repo had no change or scan in it
    assert [r.outcome for r in results(PatchDeadline(), old)] == [Outcome.FAIL]
    assert results(FreshScans(), old) == []
    before = Context(settings=old.settings, now=old.now, tables=old.tables,
                     extra={"period": (h(-100), h(-50))})  # fmt: skip
    assert results(PatchDeadline(), before) == []  # detected after the period
    during = Context(settings=old.settings, now=old.now, tables=old.tables,
                     extra={"period": (h(0), h(24 * 3))})  # fmt: skip
    fresh = results(FreshScans(), during)
    assert [r.outcome for r in fresh] == [Outcome.PASS]  # judged as at the period's end
