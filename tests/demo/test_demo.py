"""`changeproof demo` end to end: generated org → loopback replay → real GitHub source →
record → ingest → check → audit → verify, and the injected failure modes are found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from changeproof.demo import build_org


def test_generator_is_deterministic_and_injects_failures() -> None:
    _, a = build_org(30, 11)
    _, b = build_org(30, 11)
    assert a == b
    assert a.prs == 90
    assert a.emergencies and a.bypasses
    _, c = build_org(30, 12)
    assert c != a


def test_demo_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEPROOF_")}
    r = subprocess.run(
        [sys.executable, "-m", "changeproof", "demo", "--out", str(out), "--scale", "12"],
        capture_output=True, text=True, env=env, timeout=600, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Audit package:" in r.stdout
    pkg = out / "audit"
    assert (pkg / "index.html").exists() and (pkg / "manifest.json").exists()
    assert (out / "audit.zip").exists()
    base = [sys.executable, "-m", "changeproof", "--home", str(out / ".changeproof"),
            "--config", str(out / "changeproof.toml")]  # fmt: skip
    v = subprocess.run([*base, "verify", str(out / "audit.zip")], capture_output=True, text=True,
                       env=env, check=False)  # fmt: skip
    assert v.returncode == 0, v.stdout + v.stderr
    c = subprocess.run([*base, "check", "--format", "json"], capture_output=True, text=True,
                       env=env, check=False)  # fmt: skip
    assert c.returncode == 1  # the demo organisation has failures, and check says so
    results = json.loads(c.stdout)["results"]
    _, facts = build_org(12, 7)
    failing = {(x["control"], x["subject"]) for x in results if x["outcome"] == "fail"}
    for pr in facts.self_merged:
        assert ("CM-REV-1", pr) in failing
    for pr in facts.failing_checks:
        assert ("CM-TST-1", pr) in failing
    pushes = {s for (ctl, s) in failing if ctl == "CM-REV-5"}
    for p in facts.direct_pushes:
        assert p in pushes
    assert any(ctl == "CM-CFG-2" for ctl, _ in failing)  # the bypass
    emergencies = [x for x in results if x["control"] == "CM-EMG-2"]
    assert any(x["outcome"] == "fail" for x in emergencies)  # the late retro review
