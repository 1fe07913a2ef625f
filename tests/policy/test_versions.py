"""Policy approvals in the real store and locker: which version was in force, and findings."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import msgspec
import pytest
import sqlalchemy as sa

from changeproof.errors import UsageError
from changeproof.evidence import PolicyApproval
from changeproof.locker import verify_locker
from changeproof.policy import document_digest, render_markdown
from changeproof.policy.versions import (
    Window,
    approvals,
    approve,
    effective_from,
    policy_findings,
    policy_in_force,
    policy_status,
)
from changeproof.settings import Settings
from changeproof.store import Store, schema, to_us
from changeproof.workspace import Workspace
from tests.policy.helpers import FIXED_CONTROLS

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def settings_v(version: str, approvals_n: int = 1, effective: date | None = None) -> Settings:
    base = msgspec.to_builtins(Settings())
    base["organisation"]["policy_version"] = version
    base["organisation"]["effective_date"] = effective
    base["review"]["approvals"] = approvals_n
    return msgspec.convert(base, Settings)


def do_approve(
    store: Store, ws: Workspace, s: Settings, at: datetime, by: str = "Dana Lee"
) -> PolicyApproval:
    return approve(
        store,
        ws.signer(),
        s,
        version=s.organisation.policy_version,
        by=by,
        now=at,
        controls=FIXED_CONTROLS,
    )


def codes(
    store: Store,
    s: Settings,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
) -> list[str]:
    found = policy_findings(store, s, Window(start, end), controls=FIXED_CONTROLS, now=now)
    return [f.code for f in found]


def test_approval_stores_the_exact_text_in_the_locker(store: Store, workspace: Workspace) -> None:
    s = settings_v("1.0")
    a = do_approve(store, workspace, s, T0)
    md = render_markdown(s, FIXED_CONTROLS)
    assert a.document_sha256 == document_digest(md) == a.provenance.raw_sha256
    assert a.settings_version == s.version
    assert a.approver.name == "Dana Lee" and a.approved_at == T0
    with store.connect() as conn:
        body = conn.execute(
            sa.select(schema.locker_objects.c.body).where(
                schema.locker_objects.c.digest == a.document_sha256
            )
        ).scalar_one()
    assert bytes(body).decode("utf-8") == md
    assert approvals(store) == [a]
    report = verify_locker(store, workspace.public_key_pem())
    assert report.ok


def test_never_approved_is_a_finding(store: Store) -> None:
    assert codes(store, settings_v("1.0")) == ["policy-never-approved"]


def test_approved_then_settings_change_then_new_version(store: Store, workspace: Workspace) -> None:
    s1 = settings_v("1.0")
    do_approve(store, workspace, s1, T0)
    assert codes(store, s1) == []
    s1b = settings_v("1.0", approvals_n=2)  # settings moved on, version label did not
    findings = policy_findings(store, s1b, controls=FIXED_CONTROLS)
    assert [f.code for f in findings] == ["policy-changed-unapproved"]
    assert "The settings changed after version 1.0 was approved by Dana Lee" in findings[0].message
    assert "raise policy_version" in findings[0].hint
    # approving the changed text under the old label is refused, and nothing is written
    with pytest.raises(UsageError, match="already approved for a different text"):
        do_approve(store, workspace, s1b, T0 + timedelta(days=1))
    assert len(approvals(store)) == 1
    s2 = settings_v("1.1", approvals_n=2)
    do_approve(store, workspace, s2, T0 + timedelta(days=2))
    assert codes(store, s2) == []
    # going back to the old settings: approved once, but superseded by the version in force
    f = policy_findings(store, s1, controls=FIXED_CONTROLS)
    assert [x.code for x in f] == ["policy-superseded-in-use"]
    assert "render version 1.0" in f[0].message and "version 1.1" in f[0].message
    # before 1.1 took effect, the old settings were the policy in force
    assert codes(store, s1, now=T0 + timedelta(days=1)) == []


def test_text_change_without_settings_change(store: Store, workspace: Workspace) -> None:
    s = settings_v("1.0")
    do_approve(store, workspace, s, T0)
    # a new control in the catalogue changes the text, not the settings
    f = policy_findings(store, s, controls=FIXED_CONTROLS[:2])
    assert [x.code for x in f] == ["policy-changed-unapproved"]
    assert "the settings did not" in f[0].message


def test_version_must_match_the_settings(store: Store, workspace: Workspace) -> None:
    with pytest.raises(UsageError, match=r"the settings name policy version '1\.0'"):
        approve(store, workspace.signer(), settings_v("1.0"), version="2.0", by="x", now=T0)
    assert approvals(store) == []


def test_version_in_force_over_time(store: Store, workspace: Workspace) -> None:
    a1 = do_approve(store, workspace, settings_v("1.0"), T0)
    # approved on 1 Feb, effective from 1 Mar
    a2 = do_approve(
        store, workspace, settings_v("2.0", 2, date(2026, 3, 1)), datetime(2026, 2, 1, tzinfo=UTC)
    )
    assert effective_from(a2) == datetime(2026, 3, 1, tzinfo=UTC)
    assert policy_in_force(store, T0 - timedelta(seconds=1)) is None
    assert policy_in_force(store, T0) == a1
    assert policy_in_force(store, datetime(2026, 2, 15, tzinfo=UTC)) == a1
    assert policy_in_force(store, datetime(2026, 3, 1, tzinfo=UTC)) == a2
    mid_feb = datetime(2026, 2, 15, tzinfo=UTC)
    s2 = settings_v("2.0", 2, date(2026, 3, 1))
    assert codes(store, s2, now=mid_feb) == []  # approved, pending its effective date
    assert codes(store, settings_v("1.0"), now=mid_feb) == []  # still the version in force
    assert codes(store, settings_v("1.0"), now=datetime(2026, 3, 2, tzinfo=UTC)) == [
        "policy-superseded-in-use"
    ]
    st = policy_status(
        store,
        settings_v("2.0", 2, date(2026, 3, 1)),
        Window(datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)),
        controls=FIXED_CONTROLS,
    )
    assert [a.policy_version for a in st.during] == ["1.0", "2.0"]
    assert st.ok


def test_period_before_any_approval_is_a_gap(store: Store, workspace: Workspace) -> None:
    s = settings_v("1.0")
    do_approve(store, workspace, s, T0)
    f = policy_findings(
        store,
        s,
        Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)),
        controls=FIXED_CONTROLS,
    )
    assert [x.code for x in f] == ["policy-gap"]
    assert "from 2026-01-01 00:00 UTC until 2026-01-05 09:00 UTC" in f[0].message
    f = policy_findings(
        store,
        s,
        Window(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 12, 1, tzinfo=UTC)),
        controls=FIXED_CONTROLS,
    )
    assert [x.code for x in f] == ["policy-gap"]
    assert "at any time in the period" in f[0].message


def _run(store: Store, at: datetime, settings_digest: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            sa.insert(schema.runs).values(
                started_us=to_us(at),
                finished_us=to_us(at),
                settings_digest=settings_digest,
                scope="{}",
                tool_version="test",
                result_count=0,
            )
        )


def test_checks_run_on_unapproved_settings_are_findings(store: Store, workspace: Workspace) -> None:
    s = settings_v("1.0")
    do_approve(store, workspace, s, T0)
    drifted = settings_v("1.0", approvals_n=3)
    _run(store, T0 + timedelta(days=1), s.version)  # judged by the approved settings: fine
    _run(store, T0 + timedelta(days=2), drifted.version)
    _run(store, T0 + timedelta(days=3), drifted.version)
    _run(store, T0 - timedelta(days=1), drifted.version)  # before any approval: the gap rule's
    f = policy_findings(store, s, Window(T0, T0 + timedelta(days=10)), controls=FIXED_CONTROLS)
    assert [x.code for x in f] == ["checks-ran-on-unapproved-settings"]
    assert "2 check run(s) used settings version " + drifted.version[:12] in f[0].message
    assert "From 2026-01-07 09:00 UTC" in f[0].message
    # outside the period: not reported
    assert codes(store, s, T0 + timedelta(days=5), T0 + timedelta(days=10)) == []


def test_status_dict_is_plain_json(store: Store, workspace: Workspace) -> None:
    s = settings_v("1.0")
    do_approve(store, workspace, s, T0, by="Dana Lee <dana@example.com>")
    d = policy_status(store, s, controls=FIXED_CONTROLS).to_dict()
    assert d["ok"] is True and d["findings"] == []
    latest = d["latest_approval"]
    assert isinstance(latest, dict)
    assert latest["approver"]["name"] == "Dana Lee"
    assert latest["approver"]["email"] == "dana@example.com"
    msgspec.json.encode(d)
