"""The spine end to end through the real console script: init → collect → check → verify,
and every kind of bad input the spine issue names."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GitRepo

CLI = [sys.executable, "-m", "changeproof"]


def run(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEPROOF_")}
    e.update(env or {})
    return subprocess.run(
        [*CLI, *args], check=False, cwd=cwd, capture_output=True, text=True, env=e, timeout=120
    )


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    d = tmp_path / "proj"
    d.mkdir()
    return d


def build_history(repo: GitRepo) -> None:
    repo.branch("feature")
    repo.commit("feature work", {"app.py": "1"}, author="Bob <bob@example.com>")
    repo.checkout("main")
    repo.merge("feature", "Merge pull request #1 from acme/feature")
    repo.commit("pushed straight to main", {"app.py": "2"}, author="Mallory <m@example.com>")


def test_end_to_end(repo: GitRepo, proj: Path) -> None:
    build_history(repo)
    assert run(proj, "init").returncode == 0
    assert (proj / "changeproof.toml").exists()
    r = run(proj, "collect", "git", str(repo.path), "--repo", "acme/app")
    assert r.returncode == 0, r.stderr
    assert "1 direct push" in r.stdout
    r = run(proj, "check", "--format", "json")
    assert r.returncode == 1  # the direct push fails, the PR is indeterminate (no review evidence)
    data = json.loads(r.stdout)
    assert set(data) >= {"period", "results", "summary"}
    outcome = {
        (x["control"], x["subject"].split("@")[0].split("#")[-1]): x["outcome"]
        for x in data["results"]
    }
    assert outcome[("CM-REV-1", "1")] == "indeterminate"
    assert data["summary"]["CM-REV-5"]["fail"] == 1
    fails = [x for x in data["results"] if x["outcome"] == "fail"]
    assert all(x["remediation"] for x in fails)
    r = run(proj, "check", "--format", "csv")
    assert r.stdout.splitlines()[0] == "control,subject,repo,outcome,reasons,remediation"
    r = run(proj, "check")
    assert "Summary" in r.stdout and "Fix:" in r.stdout
    r = run(proj, "verify")
    assert r.returncode == 0 and r.stdout.startswith("intact")


def test_check_explain_and_reproducible(repo: GitRepo, proj: Path) -> None:
    build_history(repo)
    run(proj, "collect", "git", str(repo.path), "--repo", "acme/app")
    r = run(proj, "check", "--explain", "acme/app#1")
    assert r.returncode == 1 and "no review evidence" in r.stdout
    a = run(proj, "check", "--format", "json", "--as-of", "2026-06-01T00:00:00Z")
    b = run(proj, "check", "--format", "json", "--as-of", "2026-06-01T00:00:00Z")
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    ja.pop("run")
    jb.pop("run")
    assert ja == jb


def test_empty_period(repo: GitRepo, proj: Path) -> None:
    build_history(repo)
    run(proj, "collect", "git", str(repo.path))
    r = run(proj, "check", "--period", "2000-01-01..2000-01-31")
    assert r.returncode == 0
    assert "nothing to judge" in r.stdout


def test_a_sqlite_store_outside_the_workspace(repo: GitRepo, proj: Path, tmp_path: Path) -> None:
    """--db may name a SQLite file anywhere: read-only commands look for that file, not for
    the workspace's default one."""
    build_history(repo)
    db = f"sqlite:///{tmp_path / 'elsewhere' / 'evidence.db'}"
    (tmp_path / "elsewhere").mkdir()
    assert run(proj, "--db", db, "collect", "git", str(repo.path)).returncode == 0
    assert not (proj / ".changeproof" / "store.db").exists()
    r = run(proj, "--db", db, "check", "--format", "json")
    assert r.returncode == 1, r.stderr
    assert json.loads(r.stdout)["summary"]["CM-REV-5"]["fail"] == 1
    gone = run(proj, "--db", f"sqlite:///{tmp_path / 'nowhere.db'}", "check")
    assert gone.returncode == 2 and "no evidence store" in gone.stderr


def test_check_before_collect_is_a_clear_error(proj: Path) -> None:
    r = run(proj, "check")
    assert r.returncode == 2
    assert r.stderr.startswith("error: no evidence store") or "collect" in r.stderr
    assert "Traceback" not in r.stderr


def test_not_a_git_repository(proj: Path, tmp_path: Path) -> None:
    r = run(proj, "collect", "git", str(tmp_path))
    assert r.returncode == 2
    assert "is not a git repository" in r.stderr and "Traceback" not in r.stderr
    assert not (proj / ".changeproof" / "store.db").exists()


def test_missing_branch(repo: GitRepo, proj: Path) -> None:
    r = run(proj, "collect", "git", str(repo.path), "--branch", "nope")
    assert r.returncode == 2 and "branch 'nope' does not exist" in r.stderr


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[review]\napprovals = 0\n", "review.approvals"),
        ('[review]\napprovals = "two"\n', "review.approvals"),
        ("[emergency]\nretro_review_hours = -5\n", "emergency.retro_review_hours"),
        ("[reviw]\napprovals = 1\n", "unknown key 'reviw'"),
        ("[review]\napprovals = 1\n[deployment\nmodel =", "not valid TOML"),
        ('[deployment]\nmodel = "yolo"\n', "deployment.model"),
    ],
)
def test_bad_settings(repo: GitRepo, proj: Path, text: str, needle: str) -> None:
    (proj / "changeproof.toml").write_text(text)
    r = run(proj, "collect", "git", str(repo.path))
    assert r.returncode == 2
    assert needle in r.stderr
    assert "changeproof.toml" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (proj / ".changeproof" / "store.db").exists()


def test_verbose_shows_traceback(proj: Path, tmp_path: Path) -> None:
    r = run(proj, "--verbose", "collect", "git", str(tmp_path))
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_locked_database(repo: GitRepo, proj: Path) -> None:
    run(proj, "collect", "git", str(repo.path))
    repo.commit("more (#2)")
    db = proj / ".changeproof" / "store.db"
    holder = sqlite3.connect(db, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        r = run(proj, "collect", "git", str(repo.path))
    finally:
        holder.rollback()
        holder.close()
    assert r.returncode == 2
    assert "locked" in r.stderr and "Traceback" not in r.stderr
    r = run(proj, "collect", "git", str(repo.path))
    assert r.returncode == 0 and "1 new" in r.stdout  # nothing half-written was kept


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_workspace(repo: GitRepo, proj: Path) -> None:
    home = proj / "ro"
    home.mkdir()
    home.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        r = run(proj, "--home", str(home), "collect", "git", str(repo.path))
    finally:
        home.chmod(stat.S_IRWXU)
    assert r.returncode == 2 and "read-only" in r.stderr


def test_read_only_store_file(repo: GitRepo, proj: Path) -> None:
    run(proj, "collect", "git", str(repo.path))
    repo.commit("more (#3)")
    db = proj / ".changeproof" / "store.db"
    # simulate a read-only database even for root: open it through a read-only URI
    r = run(proj, "--db", f"sqlite:///file:{db}?mode=ro&uri=true", "collect", "git", str(repo.path))
    assert r.returncode == 2
    assert "cannot be written" in r.stderr and "Traceback" not in r.stderr


def test_verify_detects_tampering_via_cli(repo: GitRepo, proj: Path) -> None:
    build_history(repo)
    run(proj, "collect", "git", str(repo.path))
    db = proj / ".changeproof" / "store.db"
    con = sqlite3.connect(db)
    digest = con.execute("SELECT digest FROM locker_objects ORDER BY digest LIMIT 1").fetchone()[0]
    con.execute("UPDATE locker_objects SET body = X'00' || body WHERE digest = ?", (digest,))
    con.commit()
    con.close()
    r = run(proj, "verify", "--format", "json")
    assert r.returncode == 1
    data = json.loads(r.stdout)
    assert data["intact"] is False and digest[:16] in data["first_problem"]


def test_init_print_and_help(proj: Path) -> None:
    r = run(proj, "init", "--print")
    assert r.returncode == 0 and "[review]" in r.stdout
    r = run(proj, "--help")
    assert r.returncode == 0 and "Examples" in r.stdout
    r = run(proj, "check", "--help")
    assert "Exit codes" in r.stdout


def test_this_repository_collects(proj: Path) -> None:
    """The Quickstart's main job on this very repository (when run from a git checkout)."""
    here = Path(__file__).resolve().parents[1]
    if not (here / ".git").exists():
        pytest.skip("not running from a git checkout")
    shallow = subprocess.run(
        ["git", "-C", str(here), "rev-parse", "--is-shallow-repository"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    r = run(proj, "collect", "git", str(here))
    if shallow == "true":
        assert r.returncode == 2 and "unshallow" in r.stderr
        return
    assert r.returncode == 0, r.stderr
