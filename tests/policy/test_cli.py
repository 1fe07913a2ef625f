"""`changeproof policy` through the real console script."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "changeproof"]


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEPROOF_")}
    return subprocess.run(
        [*CLI, *args], check=False, cwd=cwd, capture_output=True, text=True, env=env, timeout=180
    )


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    d = tmp_path / "proj"
    d.mkdir()
    (d / "changeproof.toml").write_text(
        '[organisation]\nname = "Acme"\npolicy_owner = "CTO"\npolicy_version = "1.0"\n'
        "[review]\napprovals = 2\n",
        encoding="utf-8",
    )
    return d


def test_render_approve_status(proj: Path) -> None:
    r = run(proj, "policy", "--format", "md")
    assert r.returncode == 0, r.stderr
    assert "at least **2** (two) distinct independent human approvals" in r.stdout
    digest = hashlib.sha256(r.stdout.encode("utf-8")).hexdigest()

    r = run(proj, "policy", "status")
    assert r.returncode == 1
    assert "FINDING [policy-never-approved]" in r.stdout

    r = run(proj, "policy", "approve", "--version", "2.0", "--by", "Dana Lee")
    assert r.returncode == 2
    assert "the settings name policy version '1.0'" in r.stderr

    r = run(proj, "policy", "approve", "--version", "1.0", "--by", "Dana Lee", "--format", "json")
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["document_sha256"] == digest  # `policy --format md | sha256sum`

    r = run(proj, "policy", "status", "--format", "json")
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stdout)["ok"] is True

    r = run(proj, "policy", "--format", "html", "--out", "policy.html")
    assert r.returncode == 0, r.stderr
    html = (proj / "policy.html").read_text(encoding="utf-8")
    assert "<th>Approved by</th><td>Dana Lee</td>" in html

    # the settings move on without a new approval: a finding, and the rendering says so
    cfg = proj / "changeproof.toml"
    cfg.write_text(cfg.read_text().replace("approvals = 2", "approvals = 1"), encoding="utf-8")
    r = run(proj, "policy", "status", "--period", "2026-01-01..")
    assert r.returncode == 1
    assert "FINDING [policy-changed-unapproved] The settings changed after version 1.0" in r.stdout
    r = run(proj, "policy", "--format", "html", "--out", "policy.html")
    assert "Not approved" in (proj / "policy.html").read_text(encoding="utf-8")


def test_binary_formats_need_out_and_write_files(proj: Path) -> None:
    r = run(proj, "policy", "--format", "pdf")
    assert r.returncode == 2
    assert "--format pdf needs --out FILE" in r.stderr
    r = run(proj, "policy", "--format", "docx", "--out", "p.docx")
    assert r.returncode == 0, r.stderr
    assert (proj / "p.docx").read_bytes()[:2] == b"PK"
    assert not list(proj.glob(".*.tmp"))


def test_bad_settings_are_an_error_not_a_document(proj: Path) -> None:
    (proj / "changeproof.toml").write_text("[review]\napprovals = 0\n", encoding="utf-8")
    r = run(proj, "policy", "--format", "md", "--out", "p.md")
    assert r.returncode == 2
    assert "review.approvals" in r.stderr
    assert not (proj / "p.md").exists()


def test_help_has_examples(proj: Path) -> None:
    r = run(proj, "policy", "--help")
    assert r.returncode == 0
    assert "Examples:" in r.stdout and "approve" in r.stdout and "status" in r.stdout


def test_approve_at_an_earlier_time_keeps_both_times(tmp_path: Path) -> None:
    """An approval given at a meeting and recorded later says both when, and refuses the future."""
    import json as _json
    import os as _os
    import subprocess as _sp
    import sys as _sys

    env = {k: v for k, v in _os.environ.items() if not k.startswith("CHANGEPROOF_")}
    base = [_sys.executable, "-m", "changeproof", "--home", str(tmp_path / "ws"),
            "--config", str(tmp_path / "none.toml")]  # fmt: skip
    r = _sp.run([*base, "policy", "approve", "--version", "1.0", "--by", "Dana Lee",
                 "--at", "2026-03-04T10:00:00Z", "--format", "json"],
                capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rec = _json.loads(r.stdout)
    assert rec["approved_at"].startswith("2026-03-04T10:00:00")
    assert not rec["provenance"]["collected_at"].startswith("2026-03-04")
    r = _sp.run([*base, "policy", "approve", "--version", "1.0", "--by", "Dana Lee",
                 "--at", "2999-01-01"], capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert r.returncode == 2 and "in the future" in r.stderr
