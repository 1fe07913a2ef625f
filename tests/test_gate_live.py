"""`gate --live`: GitHub REST responses (derived from the octokit OpenAPI examples) served by a
loopback HTTP server, the real HTTP client, and the decision recorded in the locker."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from changeproof.errors import SourceError
from changeproof.evidence import Change, GateDecision
from changeproof.gate import GateRequest
from changeproof.gate_live import run_live
from changeproof.settings import Settings, Testing
from changeproof.store import Store
from changeproof.workspace import Workspace

FIX = Path(__file__).parent / "fixtures" / "github_live"
REPO = "acme/app"
SHA = "a" * 40  # the merge commit being deployed
HEAD = "b" * 40  # the PR head that was reviewed and tested
SETTINGS = """
[testing]
required_checks = ["ci"]
dependency_scanning_checks = ["deps"]
sast_checks = ["sast"]
"""


def example(name: str) -> Any:
    return copy.deepcopy(json.loads((FIX / f"{name}.json").read_text())["value"])


def pr_tables(
    number: int, merge: str, head: str, *, reviewer: str | None, ci: str = "success", day: int = 1
) -> dict[str, Any]:
    """One consistent merged pull request (by octocat) built from the examples."""
    simple = example("pull-request-simple-items")[0]
    pr = example("pull-request")
    for p in (simple, pr):
        p.update(
            number=number,
            merged_at=f"2026-02-0{day}T12:00:00Z",
            merge_commit_sha=merge,
            state="closed",
        )
        p["head"]["sha"] = head
        p["base"]["ref"] = "main"
        p["labels"] = []
    pr["merged_by"] = {"login": "octocat", "type": "User"}
    pr["changed_files"] = 2  # the two files served below
    reviews = example("pull-request-review-items")
    reviews[0].update(state="APPROVED", commit_id=head, submitted_at=f"2026-02-0{day}T11:00:00Z")
    reviews[0]["user"]["login"] = reviewer
    commits = example("commit-items")
    commits[0]["sha"] = head
    commits[0]["commit"]["committer"]["date"] = f"2026-02-0{day}T10:00:00Z"
    commits[0]["commit"]["author"]["date"] = f"2026-02-0{day}T10:00:00Z"
    runs = example("check-run-paginated")
    template = runs["check_runs"][0]
    runs["check_runs"] = []
    for name in ("ci", "deps", "sast"):
        r = copy.deepcopy(template)
        r.update(
            name=name,
            head_sha=head,
            status="completed",
            conclusion=ci,
            completed_at=f"2026-02-0{day}T11:30:00Z",
        )
        runs["check_runs"].append(r)
    runs["total_count"] = 3
    status = example("combined-commit-status")
    status["statuses"] = []
    return {
        f"/repos/{REPO}/commits/{merge}/pulls": [simple],
        f"/repos/{REPO}/pulls/{number}": pr,
        f"/repos/{REPO}/pulls/{number}/reviews": reviews if reviewer else [],
        f"/repos/{REPO}/pulls/{number}/commits": commits,
        # the shape GitHub documents for GET /pulls/{n}/files (no example in the OpenAPI corpus)
        f"/repos/{REPO}/pulls/{number}/files": [
            {"filename": "app/checkout.py", "status": "modified", "additions": 3, "deletions": 1},
            {"filename": "app/cart.py", "status": "renamed", "previous_filename": "app/basket.py"},
        ],
        f"/repos/{REPO}/commits/{head}/check-runs": runs,
        f"/repos/{REPO}/commits/{head}/status": status,
    }


def deployment_tables(
    did: int, sha: str, env: str, state: str, day: int
) -> tuple[Any, dict[str, Any]]:
    deps = example("deployment-items")
    deps[0].update(sha=sha, environment=env, created_at=f"2026-02-0{day}T13:00:00Z", id=did)
    st = example("deployment-status-items")
    st[0].update(state=state, created_at=f"2026-02-0{day}T13:05:00Z")
    return deps[0], {f"/repos/{REPO}/deployments/{did}/statuses": st}


def responses(
    *, staged: bool = True, reviewer: str = "hubot", ci: str = "success"
) -> dict[str, Any]:
    """PR #42 merged as SHA, staged, nothing in production yet."""
    table = pr_tables(42, SHA, HEAD, reviewer=reviewer, ci=ci)
    dep, statuses = deployment_tables(7, SHA, "staging", "success", 1)
    table.update(statuses)
    table[f"/repos/{REPO}/deployments?sha={SHA}"] = [dep] if staged else []
    table[f"/repos/{REPO}/deployments?environment=production"] = []
    return table


class FakeGitHub:
    """A loopback server answering GET paths from a table (404 otherwise)."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table
        self.seen: list[str] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = set(parse_qsl(url.query))
                outer.seen.append(url.path)
                auth = self.headers.get("authorization", "")
                # a key "PATH?k=v" answers only requests carrying k=v; a bare PATH any other
                hits = [
                    k
                    for k in outer.table
                    if k.split("?", 1)[0] == url.path
                    and set(parse_qsl(k.partition("?")[2])) <= query
                ]
                if "test-token" not in auth:
                    self._send(401, {"message": "Bad credentials"})
                elif hits:
                    self._send(200, outer.table[max(hits, key=len)])
                else:
                    self._send(404, {"message": "Not Found"})

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    d = tmp_path / "proj"
    d.mkdir()
    (d / "changeproof.toml").write_text(SETTINGS)
    return d


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    g = FakeGitHub(responses())
    yield g
    g.close()


def cli(
    cwd: Path, *args: str, token: str | None = "test-token"
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("CHANGEPROOF_", "GITHUB_", "GH_"))
    }
    if token is not None:
        env["GITHUB_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "changeproof", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


LIVE = (
    "gate",
    "--live",
    "--env",
    "production",
    "--commit",
    SHA,
    "--repo",
    REPO,
    "--actor",
    "github-actions[bot]",
    "--at",
    "2026-02-02T00:00:00Z",
)


def test_live_allows_and_records_into_the_locker(proj: Path, github: FakeGitHub) -> None:
    r = cli(proj, *LIVE, "--api-url", github.url, "--format", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(r.stdout)
    assert data["decision"] == "allow"
    assert [c["id"] for c in data["changes"]] == ["acme/app#42"]
    assert any("live mode" in n for n in data["notes"])
    assert f"/repos/{REPO}/pulls/42/reviews" in github.seen
    ws = Workspace.resolve(str(proj / ".changeproof"), None, str(proj / "changeproof.toml"))
    store = Store.open(ws.db_url)
    try:
        (g,) = store.records(GateDecision)
        assert g.mode == "live" and g.decision == "allow"
        # GitHub's raw responses are in the locker, named among the decision's inputs
        with store.connect() as conn:
            kinds: dict[str, str] = dict(
                conn.exec_driver_sql("SELECT digest, kind FROM locker_entries").all()
            )
        assert "github.live" in {kinds.get(d) for d in g.inputs}
        # mapped changes are not written (they would re-index commits outside collection)
        assert store.get(Change, "acme/app#42") is None
    finally:
        store.close()
    assert cli(proj, "verify").returncode == 0


def test_live_denies_self_approved_and_unstaged(proj: Path) -> None:
    g = FakeGitHub(responses(staged=False, reviewer="octocat"))
    try:
        r = cli(proj, *LIVE, "--api-url", g.url)
    finally:
        g.close()
    assert r.returncode == 1
    assert "staging was skipped" in r.stdout
    assert "CM-REV-1" in r.stdout


@pytest.mark.parametrize(
    ("token", "api", "words"),
    [
        (None, None, "needs a GitHub token"),
        ("wrong", None, "rejected the token"),
        ("test-token", "http://127.0.0.1:1", "error:"),
    ],
    ids=["no-token", "bad-token", "unreachable"],
)
def test_live_cannot_decide_exits_2(
    proj: Path, github: FakeGitHub, token: str | None, api: str | None, words: str
) -> None:
    r = cli(proj, *LIVE, "--api-url", api or github.url, token=token)
    assert r.returncode == 2, r.stdout + r.stderr
    assert words in r.stderr
    assert "ALLOW" not in r.stdout


def test_live_with_injected_transport(proj: Path) -> None:
    """The same path through httpx.MockTransport: a 500 that never heals is 'cannot decide'."""
    table = responses()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/check-runs"):
            return httpx.Response(500, json={"message": "boom"})
        return httpx.Response(200, json=table.get(request.url.path, []))

    ws = Workspace.resolve(str(proj / ".changeproof"), None, str(proj / "changeproof.toml"))
    s = Settings(testing=Testing(required_checks=("ci",)))
    req = GateRequest(
        repo=REPO,
        environment="production",
        commit=SHA,
        now=datetime(2026, 2, 2, tzinfo=UTC),
        actor="github-actions[bot]",
    )
    with pytest.raises(SourceError):
        run_live(
            ws,
            s,
            req,
            api_url="https://api.example.test",
            transport=httpx.MockTransport(handler),
            token="t",
        )
    assert not (proj / ".changeproof" / "store.db").exists()  # nothing recorded


PREV = "c" * 40  # in production now
MID = "d" * 40  # PR #41, merged after PREV, never reviewed


def test_live_judges_every_change_since_the_previous_production_deployment(proj: Path) -> None:
    table = responses()
    table.update(pr_tables(41, MID, "e" * 40, reviewer=None))
    prod, statuses = deployment_tables(5, PREV, "production", "inactive", 1)
    table.update(statuses)
    table[f"/repos/{REPO}/deployments?environment=production"] = [prod]
    table[f"/repos/{REPO}/compare/{PREV}...{SHA}"] = {
        "status": "ahead",
        "total_commits": 3,
        "commits": [
            {"sha": MID, "parents": [{"sha": PREV}, {"sha": "e" * 40}]},
            {"sha": "e" * 40, "parents": [{"sha": PREV}]},
            {"sha": SHA, "parents": [{"sha": MID}, {"sha": HEAD}]},
        ],
    }
    g = FakeGitHub(table)
    try:
        r = cli(proj, *LIVE, "--api-url", g.url, "--format", "json")
        assert r.returncode == 1, r.stdout + r.stderr
        data = json.loads(r.stdout)
        assert [c["id"] for c in data["changes"]] == ["acme/app#41", "acme/app#42"]
        assert data["previous_deployment"] == "github:acme/app:5"
        changes = next(c for c in data["checks"] if c["rule"] == "changes")
        assert "acme/app#41: CM-REV-1" in changes["reasons"][1]
        # a commit that does not descend from production cannot be judged: exit 2
        table[f"/repos/{REPO}/compare/{PREV}...{SHA}"] = {"status": "diverged", "commits": []}
        r = cli(proj, *LIVE, "--api-url", g.url)
        assert r.returncode == 2 and "does not descend" in r.stderr
    finally:
        g.close()


def test_live_release_manager_approval_of_the_run(proj: Path) -> None:
    """Release-manager model: the environment reviewers' approval of this workflow run
    (GitHub deployment protection) is the sign-off; without --run-id there is none."""
    (proj / "changeproof.toml").write_text(
        SETTINGS + '\n[deployment]\nmodel = "release_manager"\nrelease_managers = ["rm-ann"]\n'
    )
    approvals = example("environment-approvals-items")
    approvals[0]["user"]["login"] = "rm-ann"
    approvals[0]["environments"][0]["name"] = "production"
    table = responses()
    table[f"/repos/{REPO}/actions/runs/99/approvals"] = approvals
    g = FakeGitHub(table)
    try:
        r = cli(proj, *LIVE, "--api-url", g.url)
        assert r.returncode == 1 and "release-manager model" in r.stdout
        r = cli(proj, *LIVE, "--api-url", g.url, "--run-id", "99", "--format", "json")
        assert r.returncode == 0, r.stdout + r.stderr
        auth = next(c for c in json.loads(r.stdout)["checks"] if c["rule"] == "authorisation")
        assert "rm-ann" in auth["reasons"][0]
    finally:
        g.close()
