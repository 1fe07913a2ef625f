"""`changeproof ingest SCANNER`, `findings` and `record risk-acceptance` through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import GitRepo
from tests.vuln.corpus import DD, SAMPLES

CLI = [sys.executable, "-m", "changeproof"]


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEPROOF_")}
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=120, check=False)  # fmt: skip


def test_ingest_board_and_acceptance(tmp_path: Path) -> None:
    r = run(tmp_path, "ingest", "trivy", str(SAMPLES["trivy"]), str(DD / "trivy" / "all_statuses.json"),
            "--repo", "acme/app", "--scanned-at", "2026-01-01T00:00Z", "--format", "json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [x["findings"] for x in out] == [5, 7]
    assert {x["scanned_at_source"] for x in out} == {"option"}
    board = json.loads(run(tmp_path, "findings", "--format", "json", "--at", "2026-01-02").stdout)
    assert board["counts"] == {"open": 12}
    crit = next(f for f in board["findings"] if f["tier"] == "critical")
    assert crit["due_at"].startswith("2026-01-04T00:00")
    r = run(tmp_path, "record", "risk-acceptance", "--repo", "acme/app", "--advisory", crit["advisory"],
            "--requester", "bob", "--approver", "carol", "--reason", "not reachable",
            "--accepted-at", "2026-01-02", "--expires", "10d")  # fmt: skip
    assert r.returncode == 0, r.stderr
    later = json.loads(run(tmp_path, "findings", "--format", "json", "--at", "2026-01-05").stdout)
    states = {f["id"]: f["state"] for f in later["findings"]}
    assert states[crit["id"]] == "accepted"
    breached = run(tmp_path, "findings", "--breached", "--at", "2026-06-01")
    assert breached.returncode == 0 and "breached" in breached.stdout
    self_approved = run(tmp_path, "record", "risk-acceptance", "--repo", "acme/app", "--advisory", "X",
                        "--requester", "bob", "--approver", "bob", "--reason", "r", "--expires", "1d")  # fmt: skip
    assert self_approved.returncode == 2 and "own risk acceptance" in self_approved.stderr


def test_bad_file_ingests_nothing_from_any_file(tmp_path: Path) -> None:
    cut = tmp_path / "cut.json"
    cut.write_bytes(SAMPLES["grype"].read_bytes()[:5000])
    r = run(tmp_path, "ingest", "grype", str(SAMPLES["grype"]), str(cut), "--repo", "acme/app")
    assert r.returncode == 2
    assert str(cut) in r.stderr and "JSON path $" in r.stderr
    board = json.loads(run(tmp_path, "findings", "--format", "json").stdout)
    assert board["findings"] == []  # the good first file was rolled back too
    wrong = run(tmp_path, "ingest", "snyk", str(SAMPLES["pip-audit"]), "--repo", "acme/app")
    assert wrong.returncode == 2 and "changeproof ingest pip-audit" in wrong.stderr


def test_fix_linked_to_change_and_production_deployment(tmp_path: Path, repo: GitRepo) -> None:
    """The store path: the change that touched requirements.txt (from the commit index) and the
    production deployment of its merge commit resolve the finding."""
    repo.commit("pin deps", {"requirements.txt": "aiohttp==3.6.2"})
    repo.branch("fix")
    repo.commit("bump aiohttp", {"requirements.txt": "aiohttp==3.7.4"})
    repo.checkout("main")
    merge = repo.merge("fix", "Merge pull request #5 from acme/fix")
    proj = tmp_path / "proj"
    proj.mkdir()
    assert run(proj, "collect", "git", str(repo.path), "--repo", "acme/app").returncode == 0
    before = SAMPLES["pip-audit"]
    doc = json.loads(before.read_text())
    doc["dependencies"] = [d for d in doc["dependencies"] if d["name"] != "aiohttp"]
    after = tmp_path / "after.json"
    after.write_text(json.dumps(doc))
    r = run(proj, "ingest", "pip-audit", str(before), "--repo", "acme/app",
            "--scanned-at", "2025-12-31T12:00Z")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run(proj, "ingest", "pip-audit", str(after), "--repo", "acme/app",
            "--scanned-at", "2026-01-01T01:00Z")  # fmt: skip
    assert r.returncode == 0, r.stderr
    board = json.loads(
        run(proj, "findings", "--format", "json", "--at", "2026-01-01T01:30Z").stdout
    )
    aio = next(f for f in board["findings"] if f["package"] == "aiohttp")
    assert aio["state"] == "fixed-not-deployed" and aio["fix_change"] == "acme/app#5"
    r = run(proj, "record", "deployment", "--env", "production", "--repo", "acme/app",
            "--commit", merge, "--at", "2026-01-01T02:00Z")  # fmt: skip
    assert r.returncode == 0, r.stderr
    board = json.loads(run(proj, "findings", "--format", "json", "--at", "2026-01-02").stdout)
    aio = next(f for f in board["findings"] if f["package"] == "aiohttp")
    assert aio["state"] == "resolved" and aio["deployed_at"].startswith("2026-01-01T02:00")
    assert aio["first_detected_at"].startswith("2025-12-31T12:00")
    assert board["counts"] == {"open": 6, "resolved": 1}
