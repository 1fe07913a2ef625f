"""Evidence tables for every gate rule, through the pure decision (``gate.decide``)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from changeproof import settings as st
from changeproof.errors import ChangeproofError, ConfigError, UsageError
from changeproof.evidence import Deployment
from changeproof.gate import EmergencyRequest, Verdict, decide, validate_request
from tests.gate_helpers import (
    NOW,
    PIPELINE,
    T0,
    approval,
    change,
    deployment,
    evidence,
    grant,
    request,
    settings,
)


def rule(v: Verdict, name: str) -> tuple[str, str]:
    c = next(c for c in v.checks if c.rule == name)
    return c.outcome, " ".join(c.reasons)


def staged(c_sha: str, **kw: object) -> list[Deployment]:
    return [deployment("staging", c_sha, **kw)]  # type: ignore[arg-type]


# --- the happy path -------------------------------------------------------------------------


def test_all_rules_pass_allows() -> None:
    s = settings()
    c = change(1)
    v = decide(request(c.merge_sha), evidence([c], s=s, deployments=staged(c.merge_sha)), s)
    assert v.decision == "allow", v.checks
    assert [x.rule for x in v.checks] == [
        "controlled-branch",
        "changes",
        "staging",
        "authorisation",
        "actor",
    ]
    assert all(x.outcome == "pass" for x in v.checks)
    assert v.emergency is None
    assert c.merge_sha in "".join(v.checks[0].reasons) or "landed on main" in v.checks[0].reasons[0]
    assert len(v.inputs) >= 2  # the change and the staging deployment


# --- controlled branch ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("branch", "outcome"),
    [("main", "pass"), ("master", "pass"), ("feature/x", "fail"), ("release/1", "fail")],
)
def test_controlled_branch(branch: str, outcome: str) -> None:
    s = settings()
    c = change(1, branch=branch)
    v = decide(
        request(c.merge_sha),
        evidence([c], s=s, deployments=staged(c.merge_sha), branch=branch),
        s,
    )
    assert rule(v, "controlled-branch")[0] == outcome
    assert v.decision == ("allow" if outcome == "pass" else "deny")


# --- changes: review and testing of everything shipped --------------------------------------


@pytest.mark.parametrize(
    ("shipped", "outcome", "words"),
    [
        ([change(1), change(2)], "pass", "2 change(s)"),
        ([change(1, reviewed=False), change(2)], "indeterminate", "acme/app#1: CM-REV-1"),
        ([change(1), change(2, reviewer=None)], "fail", "acme/app#2: CM-REV-1"),
        ([change(1, reviewer="alice")], "fail", "CM-REV-1"),  # self-approval does not count
        ([change(1), change(2, ci="failure")], "fail", "acme/app#2: CM-TST-1"),
    ],
    ids=["all-pass", "no-review-evidence", "unreviewed", "self-approved", "failing-ci"],
)
def test_changes_rule(shipped: list[object], outcome: str, words: str) -> None:
    s = settings()
    tip = shipped[-1]
    v = decide(
        request(tip.merge_sha),  # type: ignore[attr-defined]
        evidence(shipped, s=s, deployments=staged(tip.merge_sha)),  # type: ignore[arg-type, attr-defined]
        s,
    )
    got, why = rule(v, "changes")
    assert got == outcome, why
    assert words in why
    assert v.decision == ("allow" if outcome == "pass" else "deny")


def test_changes_rule_accepts_a_recorded_exception() -> None:
    s = settings()
    bad = change(1, reviewer=None)
    tip = change(2)
    ev = evidence(
        [bad, tip],
        s=s,
        deployments=staged(tip.merge_sha),
        exceptions=[grant("CM-REV-1", bad.id)],
    )
    v = decide(request(tip.merge_sha), ev, s)
    assert rule(v, "changes")[0] == "pass"
    assert {x.id: x.outcome for x in v.changes}[bad.id] == "exception"
    assert (
        f"{bad.id} only by exception: CM-REV-1 (exception): excepted by EX-CM-REV-1"
        in rule(v, "changes")[1]
    )
    assert v.decision == "allow"


def test_exception_granted_by_a_participant_does_not_count() -> None:
    s = settings()
    bad = change(1, reviewer=None)
    ev = evidence(
        [bad],
        s=s,
        deployments=staged(bad.merge_sha),
        exceptions=[grant("CM-REV-1", bad.id, approver="alice")],
    )
    assert decide(request(bad.merge_sha), ev, s).decision == "deny"


# --- staging before production --------------------------------------------------------------

ART = "sha256:" + "a" * 64
OTHER_ART = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("deploys", "artifact", "soak", "outcome", "words"),
    [
        (lambda c: [deployment("staging", c)], None, 0, "pass", "deployed successfully to staging"),
        (
            lambda c: [deployment("staging", "f" * 40, artifact=ART)],
            ART,
            0,
            "pass",
            "same artifact",
        ),
        (
            lambda c: [deployment("staging", "f" * 40, artifact=OTHER_ART)],
            ART,
            0,
            "fail",
            "never deployed",
        ),
        (lambda c: [], None, 0, "fail", "staging was skipped"),
        (lambda c: [deployment("staging", c, status="failure")], None, 0, "fail", "failed"),
        (lambda c: [deployment("staging", c, status="started")], None, 0, "fail", "not succeeded"),
        (lambda c: [deployment("staging", c, status="inactive")], None, 0, "pass", "staging"),
        (lambda c: [deployment("production", c)], None, 0, "fail", "never deployed"),
        (lambda c: [deployment("staging", c, repo="acme/other")], None, 0, "fail", "never"),
        (
            lambda c: [deployment("staging", c, at=NOW + timedelta(minutes=5))],
            None,
            0,
            "fail",
            "never",
        ),
        (
            lambda c: [deployment("staging", c, at=NOW - timedelta(minutes=10))],
            None,
            60,
            "fail",
            "60 min staging soak",
        ),
        (
            lambda c: [deployment("staging", c, at=NOW - timedelta(minutes=61))],
            None,
            60,
            "pass",
            "soaked at least 60 min",
        ),
    ],
    ids=[
        "same-commit",
        "same-artifact",
        "other-artifact",
        "skipped",
        "failed",
        "unfinished",
        "superseded-inactive",
        "prod-is-not-staging",
        "other-repo",
        "after-now",
        "soak-not-met",
        "soak-met",
    ],
)
def test_staging_rule(deploys, artifact, soak, outcome, words) -> None:  # type: ignore[no-untyped-def]
    s = settings(deployment=st.Deployment(min_staging_soak_minutes=soak))
    c = change(1)
    v = decide(
        request(c.merge_sha, artifact=artifact),
        evidence([c], s=s, deployments=deploys(c.merge_sha)),
        s,
    )
    got, why = rule(v, "staging")
    assert got == outcome, why
    assert words in why
    assert v.decision == ("allow" if outcome == "pass" else "deny")


def test_soak_raised_by_a_rule_for_the_repository() -> None:
    s = settings(rules=(st.Rule(repos=("acme/*",), min_staging_soak_minutes=120),))
    c = change(1)
    ev = evidence(
        [c], s=s, deployments=[deployment("staging", c.merge_sha, at=NOW - timedelta(minutes=90))]
    )
    got, why = rule(decide(request(c.merge_sha), ev, s), "staging")
    assert got == "fail" and "120 min" in why


# --- authorisation per model ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "actor", "triggered", "approvals", "outcome", "words"),
    [
        ("auto_deploy", PIPELINE, None, [], "pass", "pipeline identity"),
        ("auto_deploy", "ops-bot", None, [], "fail", "must be started by the pipeline"),
        ("manual_trigger", PIPELINE, "dana", [], "pass", "authorised deployer"),
        ("manual_trigger", PIPELINE, "zed", [], "fail", "not an authorised deployer"),
        ("release_manager", PIPELINE, None, [("rm", "approved", 2)], "pass", "approved before"),
        ("release_manager", PIPELINE, None, [], "fail", "record approval"),
        (
            "release_manager",
            PIPELINE,
            None,
            [("alice", "approved", 2)],
            "fail",
            "not a release manager",
        ),
        ("release_manager", PIPELINE, None, [("rm", "approved", 30)], "fail", "no approval"),
        (
            "release_manager",
            PIPELINE,
            None,
            [("rm", "approved", 2), ("rm", "rejected", 3)],
            "fail",
            "rejected",
        ),
        ("release_manager", PIPELINE, None, [("rm-alice", "approved", 2)], "fail", "took part"),
    ],
    ids=[
        "auto-pipeline",
        "auto-person",
        "manual-deployer",
        "manual-stranger",
        "rm-approved",
        "rm-missing",
        "rm-not-rm",
        "rm-after-now",
        "rm-rejected-later",
        "rm-participant",
    ],
)
def test_authorisation_rule(model, actor, triggered, approvals, outcome, words) -> None:  # type: ignore[no-untyped-def]
    s = settings(
        deployment=st.Deployment(
            model=model,
            deployers=("dana",),
            release_managers=("rm", "rm-alice"),
            allowed_production_identities=(PIPELINE, "ops-bot"),
        )
    )
    c = change(1, author="rm-alice")
    appr = [
        approval(by, c.merge_sha, state=state, at=T0 + timedelta(hours=h))
        for by, state, h in approvals
    ]
    v = decide(
        request(c.merge_sha, actor=actor, triggered_by=triggered),
        evidence([c], s=s, deployments=staged(c.merge_sha), approvals=appr),
        s,
    )
    got, why = rule(v, "authorisation")
    assert got == outcome, why
    assert words in why


def test_approval_for_another_environment_does_not_count() -> None:
    s = settings(deployment=st.Deployment(model="release_manager", release_managers=("rm",)))
    c = change(1)
    ev = evidence(
        [c],
        s=s,
        deployments=staged(c.merge_sha),
        approvals=[approval("rm", c.merge_sha, env="staging")],
    )
    assert rule(decide(request(c.merge_sha), ev, s), "authorisation")[0] == "fail"


# --- the actor ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "outcome"),
    [
        (PIPELINE, "pass"),
        ("GitHub-Actions[bot]", "pass"),
        ("gitlab-ci", "pass"),
        ("mallory", "fail"),
        (None, "indeterminate"),
    ],
)
def test_actor_rule(actor: str | None, outcome: str) -> None:
    s = settings()
    c = change(1)
    v = decide(
        request(c.merge_sha, actor=actor), evidence([c], s=s, deployments=staged(c.merge_sha)), s
    )
    assert rule(v, "actor")[0] == outcome
    if outcome != "pass":
        assert v.decision == "deny"


# --- the emergency path ---------------------------------------------------------------------


def em(
    incident: str | None = "INC-42", approver: str | None = "carol", by: str | None = "dave"
) -> EmergencyRequest:
    return EmergencyRequest(
        incident=incident, approver=approver, reason="checkout down", declared_by=by
    )


def test_emergency_lets_through_unreviewed_unstaged_change() -> None:
    s = settings()
    c = change(1, reviewer=None)
    v = decide(request(c.merge_sha, emergency=em()), evidence([c], s=s), s)
    assert v.decision == "allow"
    assert v.emergency is not None
    assert v.emergency.covers == (c.id,)
    assert v.emergency.incident == "INC-42"
    assert "alice" in v.emergency.participants
    out, why = rule(v, "emergency")
    assert out == "exception" and "retro review is due by" in why
    assert rule(v, "staging")[0] == "fail"  # the failures stay on the record


@pytest.mark.parametrize(
    ("req", "words"),
    [
        (em(approver="mallory"), "not a designated emergency approver"),
        (em(approver="carol", by="carol"), "declared"),
        (em(incident=None), "no incident reference"),
        (em(approver=None), "no emergency approver"),
    ],
    ids=["not-designated", "approver-declared", "no-incident", "no-approver"],
)
def test_emergency_refused(req: EmergencyRequest, words: str) -> None:
    s = settings()
    c = change(1, reviewer=None)
    v = decide(request(c.merge_sha, emergency=req), evidence([c], s=s), s)
    assert v.decision == "deny" and v.emergency is None
    out, why = rule(v, "emergency")
    assert out == "fail" and words in why


def test_emergency_approver_who_is_a_participant_is_refused() -> None:
    s = settings(emergency=st.Emergency(approvers=("carol", "alice")))
    c = change(1, reviewer=None)
    v = decide(request(c.merge_sha, emergency=em(approver="alice")), evidence([c], s=s), s)
    assert v.decision == "deny"
    assert "participant" in rule(v, "emergency")[1]


def test_emergency_cannot_override_production_access() -> None:
    s = settings()
    c = change(1, reviewer=None)
    v = decide(request(c.merge_sha, actor="laptop-user", emergency=em()), evidence([c], s=s), s)
    assert v.decision == "deny"
    assert "cannot override actor" in rule(v, "emergency")[1]


def test_emergency_label_with_incident_in_title_and_approval_on_the_change() -> None:
    s = settings()
    c = change(
        1, reviewer="carol", ci="failure", labels=("emergency",), title="Hotfix INC-977 checkout"
    )
    v = decide(request(c.merge_sha), evidence([c], s=s), s)
    assert v.decision == "allow"
    assert v.emergency is not None and v.emergency.incident == "INC-977"
    assert v.emergency.approver.login == "carol"


def test_emergency_label_without_incident_denies() -> None:
    s = settings()
    c = change(1, reviewer=None, labels=("emergency",))
    v = decide(request(c.merge_sha, emergency=None), evidence([c], s=s), s)
    assert v.decision == "deny"
    assert "no incident reference" in rule(v, "emergency")[1]


def test_emergency_not_opened_when_nothing_fails() -> None:
    s = settings()
    c = change(1)
    v = decide(
        request(c.merge_sha, emergency=em()), evidence([c], s=s, deployments=staged(c.merge_sha)), s
    )
    assert v.decision == "allow" and v.emergency is None
    assert any("emergency not needed" in n for n in v.notes)


# --- bad input is an error, never a decision ------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "err", "words"),
    [
        ({"environment": "prod"}, ConfigError, "unknown environment"),
        ({"environment": "staging"}, UsageError, "pre-production"),
        ({"commit": "xyz"}, UsageError, "malformed commit"),
        ({"commit": "abc12"}, UsageError, "malformed commit"),
        ({"artifact": "md5:abc"}, UsageError, "malformed artifact"),
        ({"actor": ""}, UsageError, "--actor is empty"),
        ({"actor": "  "}, UsageError, "--actor is empty"),
        ({"repo": ""}, UsageError, "--repo is empty"),
        (
            {"emergency": EmergencyRequest(incident="whatever", approver="carol")},
            UsageError,
            "incident reference",
        ),
    ],
)
def test_validate_request(kw: dict[str, object], err: type[ChangeproofError], words: str) -> None:
    base: dict[str, object] = {"commit": "a" * 40}
    base.update(kw)
    with pytest.raises(err) as info:
        validate_request(request(**base), settings())  # type: ignore[arg-type]
    assert words in info.value.message


@pytest.mark.parametrize(
    "ref", ["INC-1234", "OPS-42", "PABC123", "https://acme.pagerduty.com/incidents/Q1W2E3"]
)
def test_incident_patterns_accept_common_references(ref: str) -> None:
    validate_request(
        request("a" * 40, emergency=EmergencyRequest(incident=ref, approver="carol")), settings()
    )


# --- an emergency declared before the gate (`record emergency`) -----------------------------


def test_emergency_declared_earlier_lets_it_through() -> None:
    from tests.gate_helpers import emergency

    s = settings()
    c = change(1, reviewer=None)
    e = emergency(c, at=NOW - timedelta(minutes=5))
    v = decide(request(c.merge_sha), evidence([c], s=s, emergencies=[e]), s)
    assert v.decision == "allow" and v.emergency is None and v.declared == e.id
    out, why = rule(v, "emergency")
    assert out == "exception" and e.id in why
    from changeproof.gate import decision_record

    assert decision_record(v, "0" * 64, "store").emergency == e.id


@pytest.mark.parametrize(
    ("kw", "actor", "words"),
    [
        ({"approver": "mallory"}, PIPELINE, "not a designated"),
        ({"participants": ("carol",)}, PIPELINE, "took part"),
        ({}, "laptop", "cannot override actor"),
    ],
    ids=["not-designated", "approver-participant", "production-access"],
)
def test_emergency_declared_earlier_refused(kw: dict[str, object], actor: str, words: str) -> None:
    from tests.gate_helpers import emergency

    s = settings()
    c = change(1, reviewer=None)
    e = emergency(c, at=NOW - timedelta(minutes=5), **kw)  # type: ignore[arg-type]
    v = decide(request(c.merge_sha, actor=actor), evidence([c], s=s, emergencies=[e]), s)
    assert v.decision == "deny" and v.declared is None
    assert words in rule(v, "emergency")[1]


def test_emergency_declared_later_is_not_used() -> None:
    from tests.gate_helpers import emergency

    s = settings()
    c = change(1, reviewer=None)
    e = emergency(c, at=NOW + timedelta(minutes=5))
    v = decide(request(c.merge_sha), evidence([c], s=s, emergencies=[e]), s)
    assert v.decision == "deny"
    assert all(x.rule != "emergency" for x in v.checks)


def test_an_old_emergency_does_not_authorise_a_later_deployment() -> None:
    from tests.gate_helpers import emergency

    s = settings()
    c = change(1, reviewer=None)
    e = emergency(c, at=NOW - timedelta(hours=49))  # its 48 h window has passed
    v = decide(request(c.merge_sha), evidence([c], s=s, emergencies=[e]), s)
    assert v.decision == "deny" and v.declared is None
