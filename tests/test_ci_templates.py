"""The GitHub Action (action.yml) and the GitLab CI template: their scripts run for real
against a workspace, with the variables the CI systems would set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import GitRepo
from tests.test_gate_e2e import Proj, merge_pr

ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)


def action() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "action.yml").read_text())
    assert isinstance(data, dict)
    return data


def clean_env(**kw: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHANGEPROOF_", "GITHUB_", "CI_", "GITLAB_"))
    }
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env.update(kw)
    return env


@pytest.fixture
def staged(tmp_path: Path, repo: GitRepo) -> tuple[Proj, str]:
    d = tmp_path / "proj"
    d.mkdir()
    p = Proj(d, repo)
    p.ok("init")
    sha = merge_pr(repo, 1)
    p.collect()
    p.review(1)
    p.ok(
        "record",
        "deployment",
        "--env",
        "staging",
        "--repo",
        "acme/app",
        "--commit",
        sha,
        "--at",
        "2026-01-02T10:00:00Z",
    )
    return p, sha


def test_action_metadata() -> None:
    a = action()
    assert a["runs"]["using"] == "composite"
    for name in (
        "command",
        "environment",
        "commit",
        "repo",
        "actor",
        "live",
        "emergency",
        "incident",
        "approver",
    ):
        assert name in a["inputs"], name
    assert a["inputs"]["environment"]["required"] is True
    assert a["outputs"]["decision"]["value"] == "${{ steps.run.outputs.decision }}"
    step = next(s for s in a["runs"]["steps"] if s.get("id") == "run")
    # inputs reach the script only through env (no ${{ }} inside the script text)
    assert "${{" not in step["run"]
    assert subprocess.run(["bash", "-n"], input=step["run"], text=True, check=False).returncode == 0


def run_action(p: Proj, tmp: Path, **inputs: str) -> tuple[int, str, str]:
    step = next(s for s in action()["runs"]["steps"] if s.get("id") == "run")
    out = tmp / "github_output"
    out.write_text("")
    env = {
        "CP_COMMAND": "gate", "CP_ENV": "production", "CP_COMMIT": "", "CP_REPO": "acme/app",
        "CP_ARTIFACT": "", "CP_ACTOR": "github-actions[bot]", "CP_TRIGGERED_BY": "", "CP_LIVE": "false",
        "CP_COLLECT": "false", "CP_EMERGENCY": "false", "CP_INCIDENT": "", "CP_APPROVER": "",
        "CP_STATUS": "success", "CP_URL": "https://ci.example/run/1", "CP_DB": "",
        "CP_HOME": str(p.root / ".changeproof"), "CP_CONFIG": str(p.root / "changeproof.toml"),
    }  # fmt: skip
    env.update(inputs)
    r = subprocess.run(
        ["bash", "-c", step["run"]],
        env=clean_env(
            RUNNER_TEMP=str(tmp),
            GITHUB_OUTPUT=str(out),
            GITHUB_STEP_SUMMARY=str(tmp / "summary.md"),
            **env,
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return r.returncode, r.stdout + r.stderr, out.read_text()


def test_action_gate_allow_deny_and_record(staged: tuple[Proj, str], tmp_path: Path) -> None:
    p, sha = staged
    rc, log, outputs = run_action(p, tmp_path, CP_COMMIT=sha)
    assert rc == 0, log
    assert "decision=allow" in outputs and "record=gate:acme/app:production:" in outputs
    assert "::notice title=changeproof gate::ALLOW" in log
    assert "changeproof gate" in (tmp_path / "summary.md").read_text()
    rc, log, outputs = run_action(p, tmp_path, CP_COMMIT=sha, CP_ACTOR="someone-laptop")
    assert rc == 1 and "decision=deny" in outputs
    rc, log, _ = run_action(p, tmp_path, CP_COMMIT="")
    assert rc == 2 and "must not be empty" in log
    rc, log, _ = run_action(p, tmp_path, CP_COMMAND="record-deployment", CP_COMMIT=sha)
    assert rc == 0 and "→ production (success)" in log
    rc, log, _ = run_action(p, tmp_path, CP_COMMAND="deploy-everything", CP_COMMIT=sha)
    assert rc == 2


def gitlab_script(job: str) -> tuple[str, dict[str, str]]:
    t = yaml.safe_load((ROOT / "ci" / "gitlab" / "changeproof.gitlab-ci.yml").read_text())
    assert t[job]["extends"] == ".changeproof"
    assert t[".changeproof"]["variables"]["GIT_DEPTH"] == "0"
    return "\n".join(t[job]["script"]), {k: str(v) for k, v in t["variables"].items()}


def test_gitlab_template_collects_gates_and_records(
    staged: tuple[Proj, str], repo: GitRepo
) -> None:
    p, sha = staged
    script, variables = gitlab_script(".changeproof-gate")
    ci = {
        **variables,
        "CI_COMMIT_SHA": sha,
        "CI_PROJECT_PATH": "acme/app",
        "GITLAB_USER_LOGIN": "dana",
        "CHANGEPROOF_ENVIRONMENT": "production",
        "CHANGEPROOF_ACTOR": "gitlab-ci",
        "CHANGEPROOF_HOME": str(p.root / ".changeproof"),
        "CHANGEPROOF_CONFIG": str(p.root / "changeproof.toml"),
    }
    r = subprocess.run(
        ["sh", "-c", script],
        cwd=repo.path,
        env=clean_env(**ci),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "section_start" in r.stdout and "ALLOW" in r.stdout
    assert (repo.path / "changeproof-gate.json").exists()
    rec, _ = gitlab_script(".changeproof-record-deployment")
    r = subprocess.run(
        ["sh", "-c", rec],
        cwd=repo.path,
        env=clean_env(**ci, CI_JOB_URL="https://gitlab.example/job/9"),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "→ production (success)" in r.stdout
    del ci["CHANGEPROOF_ENVIRONMENT"]
    r = subprocess.run(
        ["sh", "-c", script],
        cwd=repo.path,
        env=clean_env(**ci),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert r.returncode == 2
