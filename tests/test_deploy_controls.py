"""CM-DEP-1..4 and CM-EMG-1/2 over records, and the emergency exception of change controls."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from changeproof import settings as st
from changeproof.controls import RECORD_CONTROLS, by_id
from changeproof.controls.base import Context
from changeproof.controls.exceptions import apply_exceptions
from changeproof.evaluate import evaluate_change
from changeproof.evidence import (
    Deployment,
    Emergency,
    GateCheck,
    GateDecision,
    GateOutcome,
    Record,
    ShippedChange,
)
from changeproof.gate import decide, decision_record
from changeproof.outcomes import Outcome, Result
from tests.gate_helpers import (
    NOW,
    PIPELINE,
    T0,
    approval,
    change,
    deployment,
    dig,
    emergency,
    evidence,
    pairs,
    prov,
    request,
    retro,
    settings,
)


def ctx(s: st.Settings, *records: Record, now=NOW) -> Context:  # type: ignore[no-untyped-def]
    tables: dict[str, list[tuple[str, Record]]] = {}
    for r in records:
        tables.setdefault(r.kind, []).append((dig(r), r))
    return Context(settings=s, now=now, tables={k: tuple(v) for k, v in tables.items()})


def judge(control: str, subject: Record, c: Context) -> Result:
    return apply_exceptions(by_id(control).evaluate(subject, c, dig(subject)), frozenset(), c)


def test_registered() -> None:
    ids = [c.id for c in RECORD_CONTROLS]
    for cid in ("CM-DEP-1", "CM-DEP-2", "CM-DEP-3", "CM-DEP-4", "CM-EMG-1", "CM-EMG-2"):
        assert cid in ids
        assert by_id(cid).definition.remediation


# --- CM-DEP-2 / CM-DEP-4 --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("staging_at", "status", "outcome"),
    [
        (-30, "success", "pass"),
        (None, None, "fail"),
        (-30, "failure", "fail"),
        (+30, "success", "fail"),
    ],
)
def test_dep2(staging_at: int | None, status: str | None, outcome: str) -> None:
    s = settings()
    prod = deployment("production", "c" * 40, at=T0 + timedelta(hours=5))
    recs: list[Record] = [prod]
    if staging_at is not None:
        recs.append(
            deployment(
                "staging",
                "c" * 40,
                status=status or "success",
                at=prod.started_at + timedelta(minutes=staging_at),
            )
        )
    assert judge("CM-DEP-2", prod, ctx(s, *recs)).outcome.value == outcome


def test_dep_controls_ignore_non_production() -> None:
    s = settings()
    stg = deployment("staging", "c" * 40)
    for cid in ("CM-DEP-1", "CM-DEP-2", "CM-DEP-3", "CM-DEP-4"):
        assert judge(cid, stg, ctx(s, stg)).outcome is Outcome.NOT_APPLICABLE


@pytest.mark.parametrize(
    ("actor", "outcome"), [(PIPELINE, "pass"), ("bob-laptop", "fail"), (None, "indeterminate")]
)
def test_dep4(actor: str | None, outcome: str) -> None:
    s = settings()
    prod = deployment("production", "c" * 40, actor=actor)
    assert judge("CM-DEP-4", prod, ctx(s, prod)).outcome.value == outcome


# --- CM-DEP-1 / CM-DEP-3 from the gate decision ---------------------------------------------


def gate_record(
    allow: bool,
    changes: tuple[ShippedChange, ...],
    commit: str,
    at: datetime = NOW,
    participants: tuple[str, ...] = ("alice",),
    emergency: str | None = None,
) -> GateDecision:
    return GateDecision(
        id=f"gate:{commit[:8]}:{at.isoformat()}",
        repo="acme/app",
        environment="production",
        commit_sha=commit,
        branch="main",
        decision="allow" if allow else "deny",
        emergency=emergency,
        checks=(
            GateCheck(
                rule="controlled-branch", control="CM-DEP-1", outcome="pass", reasons=("on main",)
            ),
        ),
        changes=changes,
        participants=participants,
        settings_version="x",
        tool_version="0",
        decided_at=at,
        provenance=prov(at),
    )


def sc(i: int, outcome: GateOutcome = "pass") -> ShippedChange:
    return ShippedChange(
        id=f"acme/app#{i}",
        outcome=outcome,
        digest="0" * 64,
        failing=(("CM-REV-1: nope",) if outcome != "pass" else ()),
    )


@pytest.mark.parametrize(
    ("decision", "outcome", "words"),
    [
        (None, "indeterminate", "no gate decision"),
        (gate_record(True, (sc(1), sc(2)), "c" * 40), "pass", "all 2 change(s)"),
        (gate_record(False, (sc(1),), "c" * 40), "fail", "denied"),
        (gate_record(True, (sc(1), sc(2, "fail")), "c" * 40), "fail", "acme/app#2"),
        (
            gate_record(True, (sc(1),), "c" * 40, at=NOW + timedelta(days=1)),
            "indeterminate",
            "no gate decision",
        ),
    ],
    ids=["none", "allowed", "denied", "shipped-failing", "decided-after"],
)
def test_dep1(decision: GateDecision | None, outcome: str, words: str) -> None:
    s = settings()
    prod = deployment("production", "c" * 40, at=NOW + timedelta(minutes=1))
    recs: list[Record] = [prod] + ([decision] if decision else [])
    r = judge("CM-DEP-1", prod, ctx(s, *recs))
    assert r.outcome.value == outcome, r.reasons
    assert words in " ".join(r.reasons)


def test_dep1_emergency_completed_becomes_exception() -> None:
    s = settings()
    c = change(1, reviewer=None)
    e = emergency(c, at=NOW)
    g = gate_record(True, (sc(1, "fail"),), c.merge_sha, emergency=e.id)
    prod = deployment("production", c.merge_sha, at=NOW + timedelta(minutes=1))
    pending = judge("CM-DEP-1", prod, ctx(s, prod, g, e, now=NOW + timedelta(hours=1)))
    assert pending.outcome is Outcome.INDETERMINATE
    rr = retro(e, "erin", NOW + timedelta(hours=3))
    done = judge("CM-DEP-1", prod, ctx(s, prod, g, e, rr, now=NOW + timedelta(hours=4)))
    assert done.outcome is Outcome.EXCEPTION


def test_dep3_release_manager_uses_gate_participants() -> None:
    s = settings(
        deployment=st.Deployment(model="release_manager", release_managers=("rm", "alice"))
    )
    commit = "c" * 40
    prod = deployment("production", commit, at=NOW + timedelta(minutes=1))
    ok = approval("rm", commit, at=NOW - timedelta(minutes=5))
    self_ = approval("alice", commit, at=NOW - timedelta(minutes=5))
    g = gate_record(True, (sc(1),), commit)
    assert judge("CM-DEP-3", prod, ctx(s, prod, ok, g)).outcome is Outcome.PASS
    assert judge("CM-DEP-3", prod, ctx(s, prod, self_, g)).outcome is Outcome.FAIL
    # without a gate decision independence cannot be judged
    assert judge("CM-DEP-3", prod, ctx(s, prod, ok)).outcome is Outcome.INDETERMINATE


def test_dep3_emergency_approval_authorises() -> None:
    s = settings(deployment=st.Deployment(model="release_manager", release_managers=("rm",)))
    c = change(1)
    e = emergency(c, at=NOW)
    prod = deployment("production", c.merge_sha, at=NOW + timedelta(minutes=1))
    r = judge("CM-DEP-3", prod, ctx(s, prod, e))
    assert r.outcome is Outcome.PASS and "emergency path" in r.reasons[0]


def test_gate_decision_feeds_dep1() -> None:
    """The record the gate writes is what CM-DEP-1 reads afterwards."""
    s = settings()
    c = change(1)
    stg = deployment("staging", c.merge_sha)
    v = decide(request(c.merge_sha), evidence([c], s=s, deployments=[stg]), s)
    g = decision_record(v, "0" * 64, "store")
    prod = deployment("production", c.merge_sha, at=NOW + timedelta(minutes=2))
    assert judge("CM-DEP-1", prod, ctx(s, prod, g, stg)).outcome is Outcome.PASS
    assert judge("CM-DEP-2", prod, ctx(s, prod, g, stg)).outcome is Outcome.PASS


# --- CM-EMG-1 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "outcome", "words"),
    [
        ({}, "pass", "designated emergency approver"),
        ({"incident": "urgent!!"}, "fail", "matches none"),
        ({"approver": "mallory"}, "fail", "not a designated"),
        ({"approver": "carol", "by": "carol"}, "fail", "both declared and approved"),
        ({"participants": ("carol",)}, "fail", "took part"),
    ],
)
def test_emg1(kw: dict[str, object], outcome: str, words: str) -> None:
    s = settings()
    e = emergency(change(1), **kw)  # type: ignore[arg-type]
    r = judge("CM-EMG-1", e, ctx(s, e))
    assert r.outcome.value == outcome
    assert words in " ".join(r.reasons)


def test_emg1_declared_after_the_deployment_fails() -> None:
    s = settings()
    c = change(1)
    e = emergency(c, at=NOW)
    early = deployment("production", c.merge_sha, at=NOW - timedelta(hours=2))
    r = judge("CM-EMG-1", e, ctx(s, e, early))
    assert r.outcome is Outcome.FAIL and "after the production deployment" in r.reasons[0]


# --- CM-EMG-2: the clock --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("review", "now_h", "outcome", "status"),
    [
        (None, 1, "indeterminate", "open"),
        (None, 40, "indeterminate", "due_soon"),
        (None, 49, "fail", "overdue"),
        (("erin", 20), 60, "pass", "closed"),
        (("erin", 50), 60, "fail", "closed_late"),
        (("alice", 20), 60, "fail", "overdue"),  # a participant's review does not count
        (("carol", 20), 60, "fail", "overdue"),  # nor the approver's
        (("dependabot[bot]", 20), 60, "fail", "overdue"),
    ],
)
def test_emg2(review: tuple[str, int] | None, now_h: int, outcome: str, status: str) -> None:
    s = settings()
    e = emergency(change(1), at=NOW)
    recs: list[Record] = [e]
    if review:
        recs.append(retro(e, review[0], NOW + timedelta(hours=review[1])))
    r = judge("CM-EMG-2", e, ctx(s, *recs, now=NOW + timedelta(hours=now_h)))
    assert r.outcome.value == outcome, r.reasons
    assert r.details["status"] == status


def test_emg2_window_from_settings() -> None:
    s = settings(emergency=st.Emergency(approvers=("carol",), retro_review_hours=24))
    e = emergency(change(1), at=NOW)
    r = judge("CM-EMG-2", e, ctx(s, e, now=NOW + timedelta(hours=25)))
    assert r.outcome is Outcome.FAIL and "window 24 h" in r.reasons[0]


# --- failing change controls excepted by a completed emergency ------------------------------


def change_results(c: object, s: st.Settings, *recs: Record, now=NOW) -> dict[str, Outcome]:  # type: ignore[no-untyped-def]
    ems = {e.id: (dig(e), e) for e in recs if isinstance(e, Emergency)}
    rr: dict[str, list] = {}  # type: ignore[type-arg]
    for d, r in pairs(x for x in recs if x.kind == "retro_review"):
        rr.setdefault(r.subject, []).append((d, r))  # type: ignore[attr-defined]
    cx = Context(
        settings=s,
        now=now,
        emergencies=ems,
        retro_reviews={k: tuple(v) for k, v in rr.items()},
        tables={"deployment": tuple(pairs(x for x in recs if isinstance(x, Deployment)))},
    )
    return {r.control: r.outcome for r in evaluate_change(c, dig(c), cx)}  # type: ignore[arg-type]


def test_rev1_failure_excepted_only_after_timely_independent_review() -> None:
    s = settings()
    c = change(1, reviewer=None)
    e = emergency(c, at=NOW)
    assert change_results(c, s)["CM-REV-1"] is Outcome.FAIL
    assert change_results(c, s, e, now=NOW + timedelta(hours=2))["CM-REV-1"] is Outcome.FAIL
    done = retro(e, "erin", NOW + timedelta(hours=10))
    assert (
        change_results(c, s, e, done, now=NOW + timedelta(hours=12))["CM-REV-1"]
        is Outcome.EXCEPTION
    )
    late = retro(e, "erin", NOW + timedelta(hours=60))
    assert change_results(c, s, e, late, now=NOW + timedelta(hours=61))["CM-REV-1"] is Outcome.FAIL
    # a badly declared emergency excepts nothing
    bad = emergency(c, at=NOW, approver="mallory")
    ok_review = retro(bad, "erin", NOW + timedelta(hours=1))
    assert (
        change_results(c, s, bad, ok_review, now=NOW + timedelta(hours=2))["CM-REV-1"]
        is Outcome.FAIL
    )


def test_emergency_excepts_only_the_listed_controls() -> None:
    s = settings()
    c = change(1, reviewer="alice", ci="failure")  # self-approved, failing CI
    e = emergency(c, at=NOW)
    done = retro(e, "erin", NOW + timedelta(hours=1))
    got = change_results(c, s, e, done, now=NOW + timedelta(hours=2))
    assert got["CM-REV-1"] is Outcome.EXCEPTION
    assert got["CM-TST-1"] is Outcome.EXCEPTION
    assert got["CM-REV-2"] is Outcome.FAIL  # self-approval is not something an emergency excuses


def test_dep3_github_environment_approval_while_waiting() -> None:
    """GitHub timestamps a deployment when it starts waiting for reviewers: an approval
    after creation but before completion authorised it; elsewhere it must precede the start."""
    import msgspec

    s = settings(deployment=st.Deployment(model="release_manager", release_managers=("rm",)))
    commit = "c" * 40
    prod = deployment("production", commit, at=NOW)
    prod = msgspec.structs.replace(prod, finished_at=NOW + timedelta(minutes=30))
    ok = approval("rm", commit, at=NOW + timedelta(minutes=10))
    g = gate_record(True, (sc(1),), commit, at=NOW + timedelta(minutes=12))
    gh = msgspec.structs.replace(prod, system="github")
    assert judge("CM-DEP-3", gh, ctx(s, gh, ok, g)).outcome is Outcome.PASS
    assert judge("CM-DEP-3", prod, ctx(s, prod, ok, g)).outcome is Outcome.FAIL
