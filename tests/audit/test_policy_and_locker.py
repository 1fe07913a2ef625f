"""The package's period-level evidence: the approved policy version(s) in force with their exact
text, every policy finding (never approved, settings changed without a new approval, text
altered in the locker), and the workspace locker's verification feeding CM-POP-2."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

from changeproof.audit import verify_package
from changeproof.evidence import PolicyApproval
from changeproof.policy import approve, document_digest, render_markdown
from changeproof.settings import Settings
from changeproof.store import Store, schema
from changeproof.workspace import Workspace
from tests.audit.builders import T0
from tests.audit.conftest import AuditFn


def with_changes(version: str = "1.0", approvals: int = 1) -> Settings:
    base = msgspec.to_builtins(Settings())
    base["organisation"]["policy_version"] = version
    base["review"]["approvals"] = approvals
    return msgspec.convert(base, Settings)


def do_approve(
    store: Store, ws: Workspace, s: Settings, at: datetime, by: str = "Dana Lee"
) -> PolicyApproval:
    return approve(store, ws.signer(), s, version=s.organisation.policy_version, by=by, now=at)


def meta(pkg: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((pkg / "audit.json").read_text())
    return data


def csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def pop2(pkg: Path) -> dict[str, Any]:
    level = json.loads((pkg / "results/population-results.json").read_text())["population_level"]
    found = [r for r in level if r["control"] == "CM-POP-2"]
    assert len(found) == 1, level
    return dict(found[0])


def cli_verify(pkg: Path) -> subprocess.CompletedProcess[str]:
    """`changeproof verify PACKAGE` as an auditor runs it: no workspace, only the package."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEPROOF_")}
    return subprocess.run(
        [sys.executable, "-m", "changeproof", "verify", str(pkg)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=env,
        cwd=pkg.parent,
    )


def oscal_findings(pkg: Path) -> dict[str, str]:
    ar = json.loads((pkg / "oscal/assessment-results.json").read_text())
    return {
        f["target"]["target-id"]: f["target"]["status"]["state"]
        for f in ar["assessment-results"]["results"][0]["findings"]
    }


# --- the policy in force ------------------------------------------------------------------


def test_versions_in_force_with_their_approved_text(
    audit: AuditFn, populated: Store, workspace: Workspace
) -> None:
    v1, v2 = with_changes("1.0"), with_changes("2.0", approvals=2)
    a1 = do_approve(populated, workspace, v1, T0 - timedelta(days=20))
    mid = T0 + timedelta(days=10, hours=3)
    a2 = do_approve(populated, workspace, v2, mid, by="Sam Roe <sam@example.com>")
    res = audit(settings=v2)
    pkg = res.out
    policy = meta(pkg)["policy"]
    versions = policy["in_force_during_period"]
    assert [v["version"] for v in versions] == ["1.0", "2.0"]
    first, second = versions
    assert first["approver"] == "Dana Lee" and first["approved_at"] == "2025-12-12T00:00:00Z"
    assert first["in_force_from"] == "2026-01-01T00:00:00Z"
    assert first["in_force_until"] == second["in_force_from"] == "2026-01-11T03:00:00Z"
    assert second["in_force_until"] == "2026-02-01T00:00:00Z"
    assert second["approver"] == "Sam Roe <sam@example.com>" and second["effective_date"] is None
    for v, a, s in ((first, a1, v1), (second, a2, v2)):
        text = (pkg / v["text_file"]).read_bytes()
        # the exact approved text: it hashes to the approval's digest and re-renders the same
        assert hashlib.sha256(text).hexdigest() == v["document_sha256"] == a.document_sha256
        assert text.decode() == render_markdown(s)
        assert v["settings_version"] == s.version
        # the approval record and its raw payload travel with the evidence
        assert (pkg / f"evidence/records/{v['record_sha256']}.json").is_file()
        assert (pkg / f"evidence/raw/{a.document_sha256}").read_bytes() == text
    assert policy["findings"] == [] and csv_rows(pkg / "reconciliation/policy-findings.csv") == []
    assert policy["settings_in_use"]["approved"] is True
    assert res.policy["findings"] == [] and len(res.policy["in_force"]) == 2  # type: ignore[arg-type]
    html = (pkg / "index.html").read_text()
    section = html[html.index('<h2 id="policy">') : html.index('<h2 id="reconciliation">')]
    assert "Dana Lee" in section and "Sam Roe &lt;sam@example.com&gt;" in section
    assert a1.document_sha256 in section and f'href="{first["text_file"]}"' in section
    assert "2026-01-11T03:00:00Z" in section
    assert "no policy finding" in html
    assert oscal_findings(pkg)["policy-approval"] == "satisfied"
    ar = json.loads((pkg / "oscal/assessment-results.json").read_text())
    hrefs = {r["rlinks"][0]["href"] for r in ar["assessment-results"]["back-matter"]["resources"]}
    assert f"../{first['text_file']}" in hrefs and f"../{second['text_file']}" in hrefs
    assert "sha256sum policy/*.md" in (pkg / "VERIFY.md").read_text()
    assert verify_package(pkg, trusted_key=workspace.public_key_pem()).ok
    ok = cli_verify(pkg)
    assert ok.returncode == 0 and ok.stdout.startswith("intact"), ok.stdout + ok.stderr


def test_settings_changed_after_approval_is_a_finding(
    audit: AuditFn, populated: Store, workspace: Workspace
) -> None:
    approved = with_changes("1.0")
    a = do_approve(populated, workspace, approved, T0 - timedelta(days=5))
    changed = with_changes("1.0", approvals=2)  # the checks now demand more; nobody approved it
    res = audit(settings=changed)
    pkg = res.out
    policy = meta(pkg)["policy"]
    # the version in force is still the approved one, shown with its approved text
    assert [v["document_sha256"] for v in policy["in_force_during_period"]] == [a.document_sha256]
    assert policy["settings_in_use"]["approved"] is False
    assert policy["settings_in_use"]["document_sha256"] == document_digest(render_markdown(changed))
    codes = [f["code"] for f in policy["findings"]]
    assert "policy-changed-unapproved" in codes and res.policy["findings"] == codes
    finding = next(f for f in policy["findings"] if f["code"] == "policy-changed-unapproved")
    assert "settings changed after version 1.0 was approved" in finding["message"]
    listed = csv_rows(pkg / "reconciliation/policy-findings.csv")
    assert [r["code"] for r in listed] == codes and listed[0]["what_to_do"]
    html = (pkg / "index.html").read_text()
    rec = html[html.index('<h2 id="reconciliation">') : html.index('<h2 id="worksheet">')]
    assert "policy-changed-unapproved" in rec and "settings changed after version 1.0" in rec
    assert "no approval is recorded for that exact text" in html
    assert oscal_findings(pkg)["policy-changed-unapproved"] == "not-satisfied"
    assert verify_package(pkg).ok


def test_no_approved_policy_is_a_finding_not_a_crash(audit: AuditFn) -> None:
    res = audit()
    pkg = res.out
    policy = meta(pkg)["policy"]
    assert policy["in_force_during_period"] == [] and policy["approvals_recorded"] == 0
    assert [f["code"] for f in policy["findings"]] == ["policy-never-approved"]
    assert [r["code"] for r in csv_rows(pkg / "reconciliation/policy-findings.csv")] == [
        "policy-never-approved"
    ]
    assert not (pkg / "policy").exists()
    html = (pkg / "index.html").read_text()
    assert "no approved policy version" in html
    assert "No approved policy version was in force at any time in the period." in html
    assert "No version of the Change Management Policy has ever been approved" in html
    assert oscal_findings(pkg)["policy-never-approved"] == "not-satisfied"
    assert verify_package(pkg).ok


def test_approval_after_the_period_leaves_a_gap(
    audit: AuditFn, populated: Store, workspace: Workspace
) -> None:
    do_approve(populated, workspace, Settings(), T0 + timedelta(days=35))
    res = audit()
    policy = meta(res.out)["policy"]
    assert policy["in_force_during_period"] == []
    assert "policy-gap" in [f["code"] for f in policy["findings"]]


def test_altered_policy_text_in_the_locker_is_a_finding(
    audit: AuditFn, populated: Store, workspace: Workspace
) -> None:
    a = do_approve(populated, workspace, Settings(), T0 - timedelta(days=1))
    o = schema.locker_objects
    with populated.engine.begin() as conn:
        conn.execute(
            sa.update(o).where(o.c.digest == a.document_sha256).values(body=b"# A nicer policy\n")
        )
    res = audit()
    policy = meta(res.out)["policy"]
    (v,) = policy["in_force_during_period"]
    assert v["text_file"] is None and not (res.out / "policy").exists()
    assert "policy-text-altered" in [f["code"] for f in policy["findings"]]
    assert pop2(res.out)["outcome"] == "fail"  # and the locker itself no longer verifies


# --- the locker (CM-POP-2) ------------------------------------------------------------------


@pytest.mark.parametrize("jobs", [1, 2])  # 2: the locker is verified in a forked process
def test_intact_locker_passes_cm_pop_2(audit: AuditFn, workspace: Workspace, jobs: int) -> None:
    res = audit(jobs=jobs)
    pkg = res.out
    r = pop2(pkg)
    assert r["outcome"] == "pass", r["reasons"]
    lv = meta(pkg)["locker_verification"]
    assert lv["intact"] is True and lv["problems"] == []
    assert lv["entries"] > 60 and lv["checkpoints"] >= 1 and lv["objects"] == lv["entries"]
    assert f"over {lv['entries']} entries" in r["reasons"][0]
    assert res.locker == {k: lv[k] for k in ("intact", "entries", "objects", "checkpoints")}
    counts = json.loads((pkg / "results/population-results.json").read_text())["counts"]
    assert counts["CM-POP-2"] == {"pass": 1}
    html = (pkg / "index.html").read_text()
    section = html[html.index('<h3 id="locker">') :]
    assert f"<dd>{lv['entries']}</dd>" in section and "every signed checkpoint verify" in section
    assert oscal_findings(pkg)["CM-POP-2"] == "satisfied"
    assert verify_package(pkg, trusted_key=workspace.public_key_pem()).ok
    ok = cli_verify(pkg)
    assert ok.returncode == 0 and ok.stdout.startswith("intact"), ok.stdout + ok.stderr


@pytest.mark.parametrize("jobs", [1, 2])
def test_tampered_locker_fails_cm_pop_2(audit: AuditFn, populated: Store, jobs: int) -> None:
    e = schema.locker_entries
    with populated.engine.begin() as conn:
        victim = conn.execute(sa.select(e.c.seq).order_by(e.c.seq).limit(1).offset(5)).scalar_one()
        conn.execute(sa.delete(e).where(e.c.seq == victim))
    res = audit(jobs=jobs)
    pkg = res.out
    r = pop2(pkg)
    assert r["outcome"] == "fail"
    assert r["reasons"][0].startswith("the locker does not verify")
    assert any(f"expected entry #{victim}" in x for x in r["reasons"])
    lv = meta(pkg)["locker_verification"]
    assert lv["intact"] is False and lv["first_problem"].startswith(f"entry #{victim + 1}")
    assert res.locker["intact"] is False
    html = (pkg / "index.html").read_text()
    assert "does NOT verify" in html and f"expected entry #{victim}" in html
    assert oscal_findings(pkg)["CM-POP-2"] == "not-satisfied"
