"""`changeproof collect github` as a user runs it, against a loopback GitHub replay server."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from changeproof.demo_github import GitHubReplay, ReplayServer
from tests.sources.github.conftest import scenario_org

TOKEN = "ghp_replaytoken"


@pytest.fixture
def server() -> Iterator[tuple[str, GitHubReplay]]:
    org, _ = scenario_org()
    replay = GitHubReplay(org, token=TOKEN)
    srv = ReplayServer(replay)
    with srv as url:
        yield url, replay


def run(tmp: Path, *args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHANGEPROOF_", "GITHUB_"))}
    if token is not None:
        env["GITHUB_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "changeproof", "--home", str(tmp / "ws"), *args],
        cwd=tmp, capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def evidence_rows(tmp: Path) -> int:
    db = tmp / "ws" / "store.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return int(conn.execute("select count(*) from evidence").fetchone()[0])


def test_collect_then_recollect(tmp_path: Path, server: tuple[str, GitHubReplay]) -> None:
    url, replay = server
    p = run(tmp_path, "collect", "github", "--repo", "octo-org/api", "--api-url", url,
            "--format", "json")  # fmt: skip
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    (repo,) = out["repositories"]
    assert repo["pull_requests"] == 12 and repo["direct_pushes"] == 1
    assert any("audit log of octo-org is not readable" in n for n in repo["notes"])
    assert out["requests"]["points"] > 0
    before = replay.requests
    p = run(tmp_path, "collect", "github", "--repo", "octo-org/api", "--api-url", url)
    assert p.returncode == 0, p.stderr
    assert "unchanged since the last collect" in p.stdout
    assert replay.requests - before == 2  # the API check and one probe


def test_bad_token_exit_2_nothing_written(tmp_path: Path, server: tuple[str, GitHubReplay]) -> None:
    url, _ = server
    p = run(tmp_path, "collect", "github", "--repo", "octo-org/api", "--api-url", url,
            token="ghp_wrong")  # fmt: skip
    assert p.returncode == 2
    assert "rejected the token" in p.stderr and "GITHUB_TOKEN" in p.stderr
    assert evidence_rows(tmp_path) == 0


def test_missing_token(tmp_path: Path, server: tuple[str, GitHubReplay]) -> None:
    url, _ = server
    p = run(tmp_path, "collect", "github", "--repo", "octo-org/api", "--api-url", url, token=None)
    assert p.returncode == 2 and "no GitHub token" in p.stderr


def test_repo_not_found(tmp_path: Path, server: tuple[str, GitHubReplay]) -> None:
    url, _ = server
    p = run(tmp_path, "collect", "github", "--repo", "octo-org/api", "--repo", "octo-org/gone",
            "--api-url", url)  # fmt: skip
    assert p.returncode == 2
    assert "octo-org/gone was not found" in p.stderr
    assert evidence_rows(tmp_path) == 0  # validated before anything is written


def test_url_that_is_not_github(tmp_path: Path, server: tuple[str, GitHubReplay]) -> None:
    url, _ = server
    p = run(tmp_path, "collect", "github", "--repo", "octo-org/api", "--api-url", url + "/wiki")
    assert p.returncode == 2 and "does not look like the GitHub API" in p.stderr
    assert evidence_rows(tmp_path) == 0


def test_org_discovers_repositories(tmp_path: Path, server: tuple[str, GitHubReplay]) -> None:
    url, _ = server
    p = run(tmp_path, "collect", "github", "--org", "octo-org", "--api-url", url)
    assert p.returncode == 0, p.stderr
    assert "octo-org/api: 12 merged PR(s)" in p.stdout


def test_nothing_to_collect(tmp_path: Path) -> None:
    p = run(tmp_path, "collect", "github")
    assert p.returncode == 2 and "no GitHub repositories" in p.stderr


def test_unfinished_run_makes_the_population_incomplete(
    tmp_path: Path, server: tuple[str, GitHubReplay]
) -> None:
    url, replay = server
    replay.fail("graphql:MergedPullRequests", 500, times=50)
    p = run(tmp_path, "collect", "github", "--repo", "octo-org/api", "--api-url", url)
    assert p.returncode == 2 and "recorded as incomplete coverage" in p.stderr
    p = run(tmp_path, "check", "--format", "json")
    results = json.loads(p.stdout)
    results = results["results"] if isinstance(results, dict) else results
    pop = [r for r in results if r["control"] == "CM-POP-1" and r["repo"] == "octo-org/api"]
    assert pop and pop[0]["outcome"] == "fail"
    assert any("incomplete" in reason for reason in pop[0]["reasons"])
    replay.faults.clear()  # the next run resumes and closes the gap
    assert (
        run(tmp_path, "collect", "github", "--repo", "octo-org/api", "--api-url", url).returncode
        == 0
    )
    results = json.loads(run(tmp_path, "check", "--format", "json").stdout)
    results = results["results"] if isinstance(results, dict) else results
    pop = [r for r in results if r["control"] == "CM-POP-1" and r["repo"] == "octo-org/api"]
    assert pop and pop[0]["outcome"] == "pass", pop[0]["reasons"]


def test_enterprise_server_paths(tmp_path: Path, server: tuple[str, GitHubReplay]) -> None:
    url, replay = server
    p = run(tmp_path, "collect", "github", "--repo", "octo-org/api", "--api-url", url + "/api/v3")
    assert p.returncode == 0, p.stderr
    assert "graphql:Probe" in replay.log  # POST /api/graphql, derived from /api/v3
