"""Edge tables for every SLA rule of the patch clock (pure lifecycle function)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pytest

from changeproof.evidence import Change, Deployment, FindingObservation, RiskAcceptance, Scan
from changeproof.settings import Settings
from changeproof.vuln.lifecycle import FindingState, Linkage, compute_states
from tests.vuln.build import accept, change, deploy, h, obs, scan

S = Settings()  # critical 72 h, high 336 h, medium 720 h, low 2160 h


def run(
    scans: Sequence[Scan],
    observations: Sequence[FindingObservation],
    now: datetime,
    *,
    changes: Sequence[Change] = (),
    deployments: Sequence[Deployment] = (),
    acceptances: Sequence[RiskAcceptance] = (),
) -> list[FindingState]:
    by_sha = {c.merge_sha: c for c in changes}
    link = Linkage(changes, [(d, by_sha.get(d.commit_sha)) for d in deployments])
    return compute_states(
        [(f"d{i}", o) for i, o in enumerate(observations)], scans, acceptances, link, S, now
    )


def one(states: list[FindingState]) -> FindingState:
    assert len(states) == 1, states
    return states[0]


# --- first detection and deadlines ------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "hours"), [("critical", 72), ("high", 336), ("medium", 720), ("low", 2160)]
)
def test_deadline_is_first_detection_plus_tier_hours(tier: str, hours: int) -> None:
    s = one(run([scan("s1", h(0))], [obs("s1", h(0), tier=tier)], h(1)))  # type: ignore[arg-type]
    assert s.due_at == h(hours) and s.state == "open"


def test_first_detection_is_the_earliest_scan_not_the_latest() -> None:
    st = one(
        run([scan("s1", h(0)), scan("s2", h(100))], [obs("s2", h(100)), obs("s1", h(0))], h(101))
    )
    assert st.first_detected_at == h(0) and st.last_seen_at == h(100)


def test_dependabot_alert_creation_counts_as_detection() -> None:
    o = obs("s1", h(500), scanner="dependabot", alert_created_at=h(10))
    assert one(run([], [o], h(501))).first_detected_at == h(10)


def test_version_bump_that_is_still_vulnerable_keeps_the_clock() -> None:
    st = run([scan("s1", h(0)), scan("s2", h(50))],
             [obs("s1", h(0), version="1.0"), obs("s2", h(50), version="1.1")], h(60))  # fmt: skip
    assert one(st).first_detected_at == h(0)


def test_aliases_join_findings_across_scanners() -> None:
    a = obs("s1", h(0), advisory="PYSEC-2021-1")
    b = obs("s2", h(5), advisory="GHSA-zzzz", aliases=("PYSEC-2021-1", "CVE-2021-9"), scanner="osv")
    st = one(run([scan("s1", h(0)), scan("s2", h(5))], [a, b], h(6)))
    assert st.advisory == "CVE-2021-9" and st.first_detected_at == h(0)
    assert st.scanners == ("osv", "pip-audit")


def test_boundary_exactly_at_the_deadline_is_not_a_breach() -> None:
    assert one(run([scan("s1", h(0))], [obs("s1", h(0))], h(336))).state == "open"
    assert one(run([scan("s1", h(0))], [obs("s1", h(0))], h(336.01))).state == "breached"


# --- escalation never extends a deadline ------------------------------------------------


@pytest.mark.parametrize(
    ("t_escalate", "expected_due"),
    [
        (240, 240 + 72),  # high → critical on day 10: t + 72 h is earlier than day 14
        (300, 336),  # on day 12.5, t + 72 h would be later: the old deadline stands
        (0, 72),  # rescored at the first scan
    ],
)
def test_escalation(t_escalate: float, expected_due: float) -> None:
    st = run([scan("s1", h(0)), scan("s2", h(t_escalate))],
             [obs("s1", h(0), tier="high"), obs("s2", h(t_escalate), tier="critical")], h(t_escalate))  # fmt: skip
    s = one(st)
    assert s.tier == "critical" and s.due_at == h(expected_due)


def test_deescalation_recomputes_from_first_detection_and_keeps_a_breach() -> None:
    s = one(run([scan("s1", h(0)), scan("s2", h(100))],
                [obs("s1", h(0), tier="critical"), obs("s2", h(100), tier="medium")], h(101)))  # fmt: skip
    assert s.due_at == h(720) and s.breached and s.breached_at == h(72) and s.state == "breached"
    ok = one(run([scan("s1", h(0)), scan("s2", h(10))],
                 [obs("s1", h(0), tier="critical"), obs("s2", h(10), tier="medium")], h(11)))  # fmt: skip
    assert ok.due_at == h(720) and not ok.breached


def test_informational_findings_have_no_deadline() -> None:
    s = one(run([scan("s1", h(0))], [obs("s1", h(0), tier="none")], h(9999)))
    assert s.due_at is None and not s.breached and s.state == "open"


# --- absence, partial scans, fix linkage -------------------------------------------------


def test_missing_from_a_partial_scan_is_not_fixed() -> None:
    s = one(run([scan("s1", h(0)), scan("s2", h(10), partial=True)], [obs("s1", h(0))], h(400)))
    assert s.verified_absent_at is None and s.state == "breached"


def test_missing_from_a_scan_of_another_ecosystem_is_not_fixed() -> None:
    s = one(run([scan("s1", h(0)), scan("s2", h(10), eco="npm")], [obs("s1", h(0))], h(20)))
    assert s.verified_absent_at is None and s.state == "open"


def test_fixed_and_deployed_in_time_is_resolved() -> None:
    c = change(7, h(20))
    s = one(run([scan("s1", h(0)), scan("s2", h(30))], [obs("s1", h(0))], h(400),
                changes=[c], deployments=[deploy(c, h(40))]))  # fmt: skip
    assert (s.state, s.fix_change, s.deployed_at, s.breached) == (
        "resolved",
        "acme/api#7",
        h(40),
        False,
    )


def test_fixed_but_not_deployed_keeps_the_clock_running() -> None:
    c = change(7, h(20))
    staging = deploy(c, h(25), env="staging")
    args = ([scan("s1", h(0)), scan("s2", h(30))], [obs("s1", h(0))])
    early = one(run(*args, h(100), changes=[c], deployments=[staging]))
    assert early.state == "fixed-not-deployed" and early.fix_change == "acme/api#7"
    late = one(run(*args, h(400), changes=[c], deployments=[staging]))
    assert late.state == "breached" and late.breached_at == h(336)


def test_deployed_after_the_deadline_is_a_late_resolution() -> None:
    c = change(7, h(20))
    s = one(run([scan("s1", h(0)), scan("s2", h(30))], [obs("s1", h(0))], h(500),
                changes=[c], deployments=[deploy(c, h(400))]))  # fmt: skip
    assert s.state == "resolved" and s.breached and s.resolved_at == h(400)


def test_failed_deployment_and_unrelated_change_do_not_count() -> None:
    fix = change(7, h(20))
    other = change(8, h(21), files=("README.md",))
    s = one(run([scan("s1", h(0)), scan("s2", h(30))], [obs("s1", h(0))], h(100),
                changes=[fix, other], deployments=[deploy(fix, h(40), status="failure")]))  # fmt: skip
    assert s.state == "fixed-not-deployed" and s.fix_change == "acme/api#7"


def test_dependabot_fixed_is_fixed_on_the_branch_not_in_production() -> None:
    o1 = obs("s1", h(0), scanner="dependabot")
    o2 = obs("s2", h(50), scanner="dependabot", status="fixed", status_at=h(45))
    s = one(run([], [o1, o2], h(60)))
    assert s.state == "fixed-not-deployed" and s.fix_reported_at == h(45)


# --- regressions -------------------------------------------------------------------------


def test_reappearance_after_a_verified_fix_is_a_regression_with_a_new_clock() -> None:
    scans = [scan("s1", h(0)), scan("s2", h(30)), scan("s3", h(500))]
    c = change(7, h(20))
    st = run(scans, [obs("s1", h(0)), obs("s3", h(500))], h(501),
             changes=[c], deployments=[deploy(c, h(25))])  # fmt: skip
    first, second = st if st[0].occurrence == 1 else st[::-1]
    assert first.state == "resolved" and not first.breached
    assert second.regression and second.key.endswith("#2")
    assert second.first_detected_at == h(500) and second.due_at == h(836)


def test_reappearance_after_a_partial_scan_continues_the_old_clock() -> None:
    scans = [scan("s1", h(0)), scan("s2", h(30), partial=True), scan("s3", h(500))]
    s = one(run(scans, [obs("s1", h(0)), obs("s3", h(500))], h(501)))
    assert s.first_detected_at == h(0) and s.state == "breached" and not s.regression


# --- risk acceptance ---------------------------------------------------------------------


def test_valid_acceptance_pauses_the_clock() -> None:
    s = one(
        run([scan("s1", h(0))], [obs("s1", h(0))], h(400), acceptances=[accept(h(100), h(1000))])
    )
    assert s.state == "accepted" and not s.breached
    assert s.due_at == h(336 + 300)  # 300 h paused so far (100 → 400)


def test_on_expiry_the_remaining_time_resumes() -> None:
    a = accept(h(100), h(300))  # 200 h paused, 236 h were left when it started
    s = one(run([scan("s1", h(0))], [obs("s1", h(0))], h(400), acceptances=[a]))
    assert s.due_at == h(536) and s.state == "open" and s.acceptance is None
    late = one(run([scan("s1", h(0))], [obs("s1", h(0))], h(537), acceptances=[a]))
    assert late.state == "breached"


def test_acceptance_after_the_deadline_does_not_erase_the_breach() -> None:
    a = accept(h(400), h(1000))
    s = one(run([scan("s1", h(0))], [obs("s1", h(0))], h(500), acceptances=[a]))
    assert s.state == "breached" and s.late_acceptance and s.due_at == h(336)


def test_acceptance_for_another_advisory_does_not_apply() -> None:
    a = accept(h(100), h(1000), advisory="CVE-1999-0001")
    assert (
        one(run([scan("s1", h(0))], [obs("s1", h(0))], h(400), acceptances=[a])).state == "breached"
    )


def test_scanner_dismissal_is_not_an_acceptance() -> None:
    o = obs("s1", h(0), status="dismissed", status_reason="tolerable_risk", scanner="dependabot")
    s = one(run([], [o], h(400)))
    assert s.state == "breached" and any("not a risk acceptance" in n for n in s.notes)
