"""The catalogue, exceptions register and re-derivable results through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from changeproof.controls import ALL_CONTROLS
from changeproof.store import Store
from changeproof.workspace import Workspace
from tests.controls.builders import MERGED, change, commit, review, snapshot, team
from tests.controls.storing import put

CLI = [sys.executable, "-m", "changeproof"]
AS_OF = (MERGED + timedelta(days=3)).isoformat()


def run(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEPROOF_")}
    if not ws.is_sqlite:
        env["CHANGEPROOF_DB"] = ws.db_url
    return subprocess.run(
        [*CLI, "--home", str(ws.home), "--config", str(ws.config_path), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


# --- changeproof controls --------------------------------------------------------------


def test_controls_json_lists_every_definition(tmp_path: Path) -> None:
    ws = Workspace.resolve(str(tmp_path / "ws"), None, str(tmp_path / "c.toml"))
    r = run(ws, "controls", "--format", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert isinstance(data, list)
    assert [d["id"] for d in data] == [c.id for c in ALL_CONTROLS]
    rev4 = next(d for d in data if d["id"] == "CM-REV-4")
    assert rev4["mappings"] == {
        "soc2": ["CC8.1"],
        "iso27001": ["A.8.32", "A.8.28"],
        "pci_dss": ["6.2.3.1"],
    }
    for d in data:
        assert {
            "id",
            "title",
            "mappings",
            "remediation",
            "statement",
            "evidence",
            "procedure",
            "pass_criterion",
            "outcomes",
            "subject",
        } <= set(d)


def test_controls_table_and_markdown(tmp_path: Path) -> None:
    ws = Workspace.resolve(str(tmp_path / "ws"), None, str(tmp_path / "c.toml"))
    table = run(ws, "controls")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert any(
        ln.startswith("CM-TST-1") and "Required checks passed before merge" in ln for ln in lines
    )
    assert any("soc2: CC8.1; iso27001: A.8.29, A.8.32; pci_dss: 6.2.4" in ln for ln in lines)
    md = run(ws, "controls", "--format", "md")
    assert md.returncode == 0
    assert "## CM-POP-2 — The evidence locker verifies" in md.stdout
    assert "| SOC 2 (TSC 2017) | CC8.1, CC7.2 |" in md.stdout
    assert md.stdout.count("**Remediation:**") == len(ALL_CONTROLS)
    bad = run(ws, "controls", "--format", "xml")
    assert bad.returncode == 2


# --- changeproof record exception ------------------------------------------------------


def _seed(ws: Workspace, store: Store) -> None:
    pr_self = change(number=8, reviews=(review("alice"),), commits=(commit(co_authors=("carol",)),))
    put(ws, store, snapshot(MERGED - timedelta(days=5)), change(), pr_self)


def test_exception_refuses_a_participant_approver(workspace: Workspace, store: Store) -> None:
    _seed(workspace, store)
    for who in ("alice", "carol"):
        r = run(
            workspace,
            "record",
            "exception",
            "--control",
            "CM-REV-1",
            "--subject",
            "acme/api#8",
            "--reason",
            "hotfix",
            "--approver",
            who,
            "--expires",
            "2027-01-01",
        )
        assert r.returncode == 2
        assert (
            f"{who} cannot approve an exception for acme/api#8: they are a participant" in r.stderr
        )
    glob = run(
        workspace,
        "record",
        "exception",
        "--control",
        "CM-REV-1",
        "--subject",
        "acme/api#*",
        "--reason",
        "x",
        "--approver",
        "alice",
        "--expires",
        "2027-01-01",
    )
    assert glob.returncode == 2 and "participant" in glob.stderr
    assert store.count("exception") == 0  # nothing half-written


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--control", "CM-XYZ-1"), "unknown control 'CM-XYZ-1'"),
        (("--expires", "2020-01-01"), "is not after the grant time"),
        (("--expires", "next tuesday"), "malformed --expires time"),
        (("--reason", "  "), "--reason is empty"),
    ],
)
def test_exception_bad_input(
    workspace: Workspace, store: Store, args: tuple[str, ...], message: str
) -> None:
    base = {
        "--control": "CM-REV-1",
        "--subject": "acme/api#8",
        "--reason": "ok",
        "--approver": "dana",
        "--expires": "2027-01-01",
    }
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    r = run(workspace, "record", "exception", *[x for kv in base.items() for x in kv])
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_exception_covers_until_it_expires_and_never_passes(
    workspace: Workspace, store: Store
) -> None:
    _seed(workspace, store)
    granted = (MERGED + timedelta(days=1)).isoformat()
    expires = (MERGED + timedelta(days=10)).isoformat()
    r = run(
        workspace,
        "record",
        "exception",
        "--control",
        "CM-REV-1",
        "--subject",
        "acme/api#8",
        "--reason",
        "reviewed on the incident call",
        "--approver",
        "dana",
        "--at",
        granted,
        "--expires",
        expires,
        "--format",
        "json",
    )
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["covers_changes"] == ["acme/api#8"] and rec["record"]["approver"]["login"] == "dana"

    def outcome(as_of: datetime) -> dict[str, dict[str, Any]]:
        out = run(workspace, "check", "--format", "json", "--as-of", as_of.isoformat())
        data = json.loads(out.stdout)
        return {x["control"]: x for x in data["results"] if x["subject"] == "acme/api#8"}

    during = outcome(MERGED + timedelta(days=3))
    assert during["CM-REV-1"]["outcome"] == "exception"
    assert during["CM-REV-1"]["reasons"][0].startswith("excepted by EXC-")
    assert "approved by dana" in during["CM-REV-1"]["reasons"][0]
    assert during["CM-REV-2"]["outcome"] == "fail"  # the exception covers one control only
    assert outcome(MERGED + timedelta(days=11))["CM-REV-1"]["outcome"] == "fail"  # expired
    assert outcome(MERGED + timedelta(hours=12))["CM-REV-1"]["outcome"] == "fail"  # not yet granted


# --- re-derivable results ----------------------------------------------------------------


def test_same_evidence_same_as_of_gives_byte_identical_results(
    workspace: Workspace, store: Store
) -> None:
    _seed(workspace, store)
    put(workspace, store, team("security", ("sam",), MERGED - timedelta(days=9)))
    a = run(workspace, "check", "--format", "json", "--as-of", AS_OF)
    b = run(workspace, "check", "--format", "json", "--as-of", AS_OF)
    assert a.returncode == b.returncode == 1
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    assert ja["run"]["id"] != jb["run"]["id"]
    assert ja["run"]["results_digest"] == jb["run"]["results_digest"]
    assert ja["run"]["settings_version"] == jb["run"]["settings_version"]
    bytes_a = json.dumps(ja["results"], sort_keys=True).encode()
    bytes_b = json.dumps(jb["results"], sort_keys=True).encode()
    assert bytes_a == bytes_b and len(ja["results"]) > 10
    # the stored rows of both runs are byte-identical too, and carry the evidence digests
    from changeproof.evaluate import stored_results

    ra, rb = stored_results(store, ja["run"]["id"]), stored_results(store, jb["run"]["id"])
    assert ra == rb
    assert all(r.evidence for r in ra if r.subject == "acme/api#7")
    # a different as-of can change verdicts, and then the digest
    c = run(
        workspace, "check", "--format", "json", "--as-of", (MERGED + timedelta(days=30)).isoformat()
    )
    assert json.loads(c.stdout)["run"]["results_digest"] != ja["run"]["results_digest"]


def test_explain_shows_why(workspace: Workspace, store: Store) -> None:
    _seed(workspace, store)
    r = run(workspace, "check", "--explain", "acme/api#8", "--format", "json", "--as-of", AS_OF)
    assert r.returncode == 1
    data = json.loads(r.stdout)
    assert data["subject"] == "acme/api#8" and len(data["evidence_digest"]) == 64
    assert "carol (co-author)" in data["participants"]
    assert data["approvals"][0]["why_not"].startswith("alice is a participant")
    by = {x["control"]: x for x in data["results"]}
    assert by["CM-REV-1"]["outcome"] == "fail" and by["CM-REV-1"]["remediation"]
    assert by["CM-TST-1"]["outcome"] == "pass"
    text = run(workspace, "check", "--explain", "acme/api#8", "--as-of", AS_OF)
    assert "approval by alice" in text.stdout and "Fix:" in text.stdout
    missing = run(workspace, "check", "--explain", "acme/api#999")
    assert missing.returncode == 2 and "no change 'acme/api#999'" in missing.stderr


def test_check_table_prints_the_fix_for_each_failure(workspace: Workspace, store: Store) -> None:
    _seed(workspace, store)
    r = run(workspace, "check", "--as-of", AS_OF)
    assert r.returncode == 1
    block = r.stdout.split("acme/api#8", 1)[1].split("\n\n", 1)[0]
    assert "CM-REV-1   FAIL" in block and "Fix:" in block
    assert datetime.fromisoformat(AS_OF).tzinfo is UTC


def test_explain_a_promotion_rebuilds_the_source_index(workspace: Workspace, store: Store) -> None:
    from tests.controls.test_population_and_paths import _promotion, _release_change

    workspace.config_path.write_text(
        'controlled_branches = ["main", "release"]\n\n'
        '[[promotions]]\nsource = "release"\ntarget = "main"\n'
    )
    a, b = "1" * 40, "2" * 40
    put(workspace, store, _release_change(1, a), _release_change(2, b), _promotion((a, b)))
    r = run(workspace, "check", "--explain", "acme/api#50", "--format", "json")
    by = {x["control"]: x for x in json.loads(r.stdout)["results"]}
    assert by["CM-REV-1"]["outcome"] == "pass", by["CM-REV-1"]
    assert "path 2" in by["CM-REV-1"]["reasons"][0]
    full = run(workspace, "check", "--format", "json")
    rows = [x for x in json.loads(full.stdout)["results"] if x["subject"] == "acme/api#50"]
    assert next(x for x in rows if x["control"] == "CM-REV-1") == by["CM-REV-1"]
