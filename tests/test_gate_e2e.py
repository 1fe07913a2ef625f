"""The gate end to end through the real console script, on a real git repository:
merge → collect → staging recorded → gate; emergencies and their clocks; bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from changeproof.evidence import Actor, Change, CheckResult, GateDecision, Review
from changeproof.store import Store
from changeproof.workspace import Workspace
from tests.conftest import GitRepo

CLI = [sys.executable, "-m", "changeproof"]
PIPE = "github-actions[bot]"

SETTINGS = """
[[repositories]]
name = "acme/app"
platform = "github"

[testing]
required_checks = ["ci"]
dependency_scanning_checks = ["deps"]
sast_checks = ["sast"]

[emergency]
approvers = ["carol"]
"""


class Proj:
    def __init__(self, root: Path, repo: GitRepo) -> None:
        self.root = root
        self.repo = repo
        (root / "changeproof.toml").write_text(SETTINGS)

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        e = {k: v for k, v in os.environ.items() if not k.startswith(("CHANGEPROOF_", "GITHUB_"))}
        e.update(env or {})
        return subprocess.run(
            [*CLI, *args],
            check=False,
            cwd=self.root,
            capture_output=True,
            text=True,
            env=e,
            timeout=120,
        )

    def ok(self, *args: str) -> str:
        r = self.run(*args)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r.stdout

    def collect(self) -> None:
        self.ok("collect", "git", str(self.repo.path), "--repo", "acme/app")

    def store(self) -> Store:
        ws = Workspace.resolve(
            str(self.root / ".changeproof"), None, str(self.root / "changeproof.toml")
        )
        return Store.open(ws.db_url)

    def review(self, number: int, reviewer: str = "rita", ci: str = "success") -> str:
        """Add the forge's evidence (an approval on the head, passing checks) to a collected
        change, as the GitHub source would; returns the merge commit."""
        s = self.store()
        try:
            found = s.get(Change, f"acme/app#{number}")
            assert found is not None
            c = found[1]
            assert c.head_sha is not None
            at = c.merged_at
            c = msgspec.structs.replace(
                c,
                platform="github",
                reviews=(
                    Review(
                        reviewer=Actor(login=reviewer),
                        state="APPROVED",
                        submitted_at=at,
                        commit_sha=c.head_sha,
                    ),
                ),
                checks=tuple(
                    CheckResult(name=n, conclusion=ci, commit_sha=c.head_sha, completed_at=at)  # type: ignore[arg-type]
                    for n in ("ci", "deps", "sast")
                ),
            )
            with s.writer() as w:
                w.put(c)
            return c.merge_sha
        finally:
            s.close()

    def decisions(self) -> list[GateDecision]:
        s = self.store()
        try:
            return s.records(GateDecision)
        finally:
            s.close()


def merge_pr(repo: GitRepo, n: int, author: str = "Bob <bob@example.com>") -> str:
    repo.branch(f"feature{n}")
    repo.commit(f"feature {n}", {f"f{n}.py": str(n)}, author=author)
    repo.checkout("main")
    return repo.merge(f"feature{n}", f"Merge pull request #{n} from acme/feature{n}")


@pytest.fixture
def proj(tmp_path: Path, repo: GitRepo) -> Proj:
    d = tmp_path / "proj"
    d.mkdir()
    p = Proj(d, repo)
    p.ok("init")
    (d / "changeproof.toml").write_text(SETTINGS)  # init leaves an existing file alone
    return p


def gate(
    p: Proj, sha: str, *extra: str, at: str = "2026-01-02T12:00:00Z"
) -> subprocess.CompletedProcess[str]:
    return p.run(
        "gate",
        "--env",
        "production",
        "--commit",
        sha,
        "--actor",
        PIPE,
        "--at",
        at,
        "--format",
        "json",
        *extra,
    )


def test_merge_staging_then_production_allowed(proj: Proj, repo: GitRepo) -> None:
    sha = merge_pr(repo, 1)
    proj.collect()
    proj.review(1)
    # git history alone proves no review: the gate denies
    r = gate(proj, sha)
    assert r.returncode == 1
    # staged and reviewed: allowed
    proj.ok(
        "record",
        "deployment",
        "--env",
        "staging",
        "--repo",
        "acme/app",
        "--commit",
        sha[:10],
        "--actor",
        PIPE,
        "--at",
        "2026-01-02T10:00:00Z",
    )
    r = gate(proj, sha)
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(r.stdout)
    assert data["decision"] == "allow" and data["exit_code"] == 0
    assert {c["rule"]: c["outcome"] for c in data["checks"]} == {
        "controlled-branch": "pass",
        "changes": "pass",
        "staging": "pass",
        "authorisation": "pass",
        "actor": "pass",
    }
    assert data["commit"] == sha
    # the decision is evidence: in the store, its raw payload in the locker, the locker intact
    ds = proj.decisions()
    assert [d.decision for d in ds] == ["deny", "allow"]
    assert ds[-1].id == data["record"]["id"] and len(ds[-1].inputs) >= 2
    assert proj.run("verify").returncode == 0
    # text output reads as plain words
    t = proj.run(
        "gate",
        "--env",
        "production",
        "--commit",
        sha,
        "--actor",
        PIPE,
        "--at",
        "2026-01-02T12:05:00Z",
    )
    assert t.returncode == 0 and t.stdout.startswith("ALLOW: deploy acme/app@")
    # afterwards the deployment controls judge the recorded production deployment
    proj.ok(
        "record",
        "deployment",
        "--env",
        "production",
        "--repo",
        "acme/app",
        "--commit",
        sha,
        "--actor",
        PIPE,
        "--at",
        "2026-01-02T12:10:00Z",
    )
    r = proj.run("check", "--format", "json")
    res = {
        (x["control"]): x["outcome"]
        for x in json.loads(r.stdout)["results"]
        if x["control"].startswith("CM-DEP")
    }
    assert res == {"CM-DEP-1": "pass", "CM-DEP-2": "pass", "CM-DEP-3": "pass", "CM-DEP-4": "pass"}


def test_staging_skipped_failed_and_unknown_actor_deny(proj: Proj, repo: GitRepo) -> None:
    first = merge_pr(repo, 1)
    second = merge_pr(repo, 2, author="Dora <dora@example.com>")
    proj.collect()
    proj.review(1)
    proj.review(2)
    proj.ok(
        "record",
        "deployment",
        "--env",
        "production",
        "--repo",
        "acme/app",
        "--commit",
        first,
        "--actor",
        PIPE,
        "--at",
        "2026-01-02T09:00:00Z",
    )
    # staging skipped
    r = gate(proj, second)
    assert r.returncode == 1
    data = json.loads(r.stdout)
    staging = next(c for c in data["checks"] if c["rule"] == "staging")
    assert staging["outcome"] == "fail" and "staging was skipped" in staging["reasons"][0]
    # only the change since the previous production deployment is shipped
    assert [c["id"] for c in data["changes"]] == ["acme/app#2"]
    assert data["previous_deployment"]
    # staging failed
    proj.ok(
        "record",
        "deployment",
        "--env",
        "staging",
        "--repo",
        "acme/app",
        "--commit",
        second,
        "--status",
        "failure",
        "--at",
        "2026-01-02T10:00:00Z",
    )
    r = gate(proj, second)
    assert r.returncode == 1 and "failed" in r.stdout
    # staging succeeded, but an unknown actor deploys
    proj.ok(
        "record",
        "deployment",
        "--env",
        "staging",
        "--repo",
        "acme/app",
        "--commit",
        second,
        "--status",
        "success",
        "--at",
        "2026-01-02T11:00:00Z",
    )
    r = proj.run(
        "gate",
        "--env",
        "production",
        "--commit",
        second,
        "--actor",
        "mallory",
        "--at",
        "2026-01-02T12:00:00Z",
    )
    assert r.returncode == 1
    assert "mallory is not an allowed production identity" in r.stdout
    assert r.stdout.startswith("DENY")
    # and with the pipeline it goes through
    assert gate(proj, second).returncode == 0


def test_github_format_annotations_and_summary(proj: Proj, repo: GitRepo, tmp_path: Path) -> None:
    sha = merge_pr(repo, 1)
    proj.collect()
    proj.review(1)
    summary = tmp_path / "summary.md"
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    args = (
        "gate",
        "--env",
        "production",
        "--commit",
        sha,
        "--actor",
        PIPE,
        "--at",
        "2026-01-02T12:00:00Z",
        "--format",
        "github",
    )
    r = proj.run(*args, env=env)
    assert r.returncode == 1
    assert "::error title=changeproof gate%3A staging (CM-DEP-2)::" in r.stdout
    assert "### changeproof gate — ⛔ DENY" in summary.read_text()
    proj.ok(
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
    r = proj.run(*args, env=env)
    assert r.returncode == 0
    assert "::notice title=changeproof gate::ALLOW" in r.stdout
    assert summary.read_text().count("### changeproof gate") == 2
    g = proj.run(*args[:-1], "gitlab")
    assert g.returncode == 0 and "section_start" in g.stdout and "section_end" in g.stdout


def test_emergency_path_clock_and_retro_review(proj: Proj, repo: GitRepo) -> None:
    sha = merge_pr(repo, 1, author="Bob <bob@example.com>")
    proj.collect()  # no review evidence, no staging: would be denied
    base = (
        "gate",
        "--env",
        "production",
        "--commit",
        sha,
        "--actor",
        PIPE,
        "--at",
        "2026-01-02T03:00:00Z",
        "--format",
        "json",
    )
    # a non-designated approver cannot open the path
    r = proj.run(*base, "--emergency", "--incident", "INC-7", "--approver", "mallory")
    assert r.returncode == 1 and "not a designated emergency approver" in r.stdout
    # a malformed incident reference is bad input
    assert (
        proj.run(*base, "--emergency", "--incident", "asap", "--approver", "carol").returncode == 2
    )
    r = proj.run(
        *base,
        "--emergency",
        "--incident",
        "INC-7",
        "--approver",
        "carol",
        "--reason",
        "checkout down",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(r.stdout)
    em = data["emergency"]
    assert em["incident"] == "INC-7" and em["approver"] == "carol"
    eid = em["id"]
    # the register shows the clock: open, then due soon, then overdue (exit 1)
    reg = json.loads(proj.ok("emergencies", "--format", "json", "--as-of", "2026-01-02T04:00:00Z"))
    assert [(x["id"], x["status"]) for x in reg["emergencies"]] == [(eid, "open")]
    assert reg["emergencies"][0]["due_at"].startswith("2026-01-04T03:00:00")
    reg = json.loads(proj.ok("emergencies", "--format", "json", "--as-of", "2026-01-03T20:00:00Z"))
    assert reg["emergencies"][0]["status"] == "due_soon"
    late = proj.run("emergencies", "--as-of", "2026-01-04T04:00:00Z")
    assert late.returncode == 1 and "OVERDUE" in late.stdout and "overdue by 1.0 h" in late.stdout
    # the author cannot close it; nor can the approver
    r = proj.run(
        "record",
        "review",
        "--subject",
        eid,
        "--by",
        "bob@example.com",
        "--at",
        "2026-01-02T10:00:00Z",
    )
    assert r.returncode == 2 and "participant" in r.stderr
    r = proj.run(
        "record", "review", "--subject", eid, "--by", "carol", "--at", "2026-01-02T10:00:00Z"
    )
    assert r.returncode == 2 and "approved the emergency" in r.stderr
    # an independent review within the window closes it
    out = proj.ok(
        "record",
        "review",
        "--subject",
        "acme/app#1",
        "--by",
        "erin",
        "--at",
        "2026-01-02T10:00:00Z",
    )
    assert "within the 48 h window" in out
    reg = proj.run("emergencies", "--format", "json", "--as-of", "2026-01-05T00:00:00Z")
    assert reg.returncode == 0
    got = json.loads(reg.stdout)["emergencies"][0]
    assert got["status"] == "closed" and got["reviewed_by"] == "erin"
    # check: the unreviewed change is now an exception (emergency completed), EMG-1/2 pass
    res = json.loads(
        proj.run("check", "--format", "json", "--all", "--as-of", "2026-01-05T00:00:00Z").stdout
    )["results"]
    by = {(x["control"], x["subject"]): x["outcome"] for x in res}
    assert by[("CM-EMG-1", eid)] == "pass"
    assert by[("CM-EMG-2", eid)] == "pass"
    assert by[("CM-REV-1", "acme/app#1")] == "exception"


def test_emergency_overdue_without_review_fails_check(proj: Proj, repo: GitRepo) -> None:
    sha = merge_pr(repo, 1)
    proj.collect()
    proj.ok(
        "record",
        "emergency",
        "--repo",
        "acme/app",
        "--commit",
        sha,
        "--incident",
        "OPS-12",
        "--approver",
        "carol",
        "--by",
        "dave",
        "--at",
        "2026-01-02T00:00:00Z",
    )
    res = json.loads(
        proj.run("check", "--format", "json", "--as-of", "2026-01-05T00:00:00Z").stdout
    )["results"]
    emg2 = [x for x in res if x["control"] == "CM-EMG-2"]
    assert emg2 and emg2[0]["outcome"] == "fail" and "overdue" in emg2[0]["reasons"][0]
    # the gate uses the emergency declared earlier: no --emergency needed
    r = proj.run(
        "gate", "--env", "production", "--commit", sha, "--actor", PIPE, "--at", "2026-01-02T01:00:00Z"
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ALLOW (EMERGENCY)")
    assert proj.decisions()[-1].emergency is not None
    # refused declarations: not designated, bad incident, approver is the author
    assert (
        proj.run(
            "record",
            "emergency",
            "--repo",
            "acme/app",
            "--commit",
            sha,
            "--incident",
            "OPS-12",
            "--approver",
            "zed",
        ).returncode
        == 2
    )
    assert (
        proj.run(
            "record",
            "emergency",
            "--repo",
            "acme/app",
            "--commit",
            sha,
            "--incident",
            "soon",
            "--approver",
            "carol",
        ).returncode
        == 2
    )


def test_record_approval_and_release_manager_model(proj: Proj, repo: GitRepo) -> None:
    (proj.root / "changeproof.toml").write_text(
        SETTINGS + '\n[deployment]\nmodel = "release_manager"\nrelease_managers = ["rm-ann"]\n'
    )
    sha = merge_pr(repo, 1)
    proj.collect()
    proj.review(1)
    proj.ok(
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
    r = gate(proj, sha)
    assert r.returncode == 1 and "release-manager model" in r.stdout
    out = proj.ok(
        "record",
        "approval",
        "--env",
        "production",
        "--repo",
        "acme/app",
        "--commit",
        sha[:9],
        "--by",
        "rm-ann",
        "--at",
        "2026-01-02T11:00:00Z",
    )
    assert "approved" in out
    assert gate(proj, sha).returncode == 0


# --- cannot decide: exit 2, nothing recorded, never an allow --------------------------------


def test_bad_input_exits_2_and_records_nothing(proj: Proj, repo: GitRepo, tmp_path: Path) -> None:
    sha = merge_pr(repo, 1)
    proj.collect()
    proj.review(1)
    proj.ok(
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
    cases = {
        "unknown env": ("gate", "--env", "prod", "--commit", sha, "--actor", PIPE),
        "pre-production env": ("gate", "--env", "staging", "--commit", sha, "--actor", PIPE),
        "commit not found": ("gate", "--env", "production", "--commit", "0" * 40, "--actor", PIPE),
        "malformed commit": ("gate", "--env", "production", "--commit", "main", "--actor", PIPE),
        "malformed timestamp": (
            "gate",
            "--env",
            "production",
            "--commit",
            sha,
            "--actor",
            PIPE,
            "--at",
            "yesterday",
        ),
        "empty actor": ("gate", "--env", "production", "--commit", sha, "--actor", ""),
        "unknown repo": (
            "gate",
            "--env",
            "production",
            "--commit",
            sha,
            "--actor",
            PIPE,
            "--repo",
            "acme/nope",
        ),
        "emergency without incident": (
            "gate",
            "--env",
            "production",
            "--commit",
            sha,
            "--actor",
            PIPE,
            "--emergency",
            "--approver",
            "carol",
        ),
        "unreachable store": (
            "--db",
            "postgresql://cp@127.0.0.1:1/cp",
            "gate",
            "--env",
            "production",
            "--commit",
            sha,
            "--actor",
            PIPE,
        ),
        "no store": (
            "--home",
            str(tmp_path / "empty"),
            "gate",
            "--env",
            "production",
            "--commit",
            sha,
            "--actor",
            PIPE,
        ),
        "broken settings": (
            "--config",
            str(tmp_path / "bad.toml"),
            "gate",
            "--env",
            "production",
            "--commit",
            sha,
            "--actor",
            PIPE,
        ),
    }
    (tmp_path / "bad.toml").write_text("[deployment\nmodel = ")
    before = len(proj.decisions())
    for name, args in cases.items():
        r = proj.run(*args)
        assert r.returncode == 2, (name, r.returncode, r.stdout, r.stderr)
        assert "ALLOW" not in r.stdout, name
        assert r.stderr.startswith("error:"), (name, r.stderr)
    assert len(proj.decisions()) == before
    # bad record input is refused the same way
    for args in (
        ("record", "deployment", "--env", "qa", "--repo", "acme/app", "--commit", sha),
        (
            "record",
            "deployment",
            "--env",
            "staging",
            "--repo",
            "acme/app",
            "--commit",
            sha,
            "--at",
            "31/12/2026",
        ),
        ("record", "deployment", "--env", "staging", "--repo", "", "--commit", sha),
        (
            "record",
            "deployment",
            "--env",
            "staging",
            "--repo",
            "acme/app",
            "--commit",
            sha,
            "--artifact",
            "sha256:xyz",
        ),
        (
            "record",
            "approval",
            "--env",
            "production",
            "--repo",
            "acme/app",
            "--commit",
            "zz",
            "--by",
            "rm",
        ),
        ("record", "review", "--subject", "EMG-nope", "--by", "erin"),
    ):
        assert proj.run(*args).returncode == 2, args


def test_closed_stdout_keeps_the_deny(proj: Proj, repo: GitRepo) -> None:
    """A deny piped into a reader that is already gone still exits 1, and is recorded."""
    sha = merge_pr(repo, 1)
    proj.collect()
    cmd = " ".join([*CLI, "gate", "--env", "production", "--commit", sha, "--actor", "mallory"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEPROOF_")}
    r = subprocess.run(
        ["bash", "-c", f'{cmd} --format json | true; echo "rc=${{PIPESTATUS[0]}}"'],
        cwd=proj.root,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert r.stdout.strip() == "rc=1", r.stdout + r.stderr
    assert [d.decision for d in proj.decisions()] == ["deny"]


def test_gate_on_postgresql(tmp_path: Path, repo: GitRepo, pg_url: str) -> None:
    """The general path (SQLAlchemy store, real locker) decides and records the same way."""
    d = tmp_path / "pgproj"
    d.mkdir()
    p = Proj(d, repo)
    db = ("--db", pg_url)
    sha = merge_pr(repo, 1)
    p.ok(*db, "collect", "git", str(repo.path), "--repo", "acme/app")
    s = Store.open(pg_url)
    try:
        found = s.get(Change, "acme/app#1")
        assert found is not None and found[1].head_sha
        c = found[1]
        head = c.head_sha
        assert head is not None
        c = msgspec.structs.replace(
            c,
            platform="github",
            reviews=(
                Review(
                    reviewer=Actor(login="rita"),
                    state="APPROVED",
                    submitted_at=c.merged_at,
                    commit_sha=head,
                ),
            ),
            checks=tuple(
                CheckResult(name=n, conclusion="success", commit_sha=head, completed_at=c.merged_at)
                for n in ("ci", "deps", "sast")
            ),
        )
        with s.writer() as w:
            w.put(c)
    finally:
        s.close()
    args = (
        *db,
        "gate",
        "--env",
        "production",
        "--commit",
        sha[:12],
        "--actor",
        PIPE,
        "--at",
        "2026-01-02T12:00:00Z",
    )
    assert p.run(*args).returncode == 1  # not staged
    p.ok(
        *db,
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
    r = p.run(*args, "--format", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["commit"] == sha
    s = Store.open(pg_url)
    try:
        assert [g.decision for g in s.records(GateDecision)] == ["deny", "allow"]
    finally:
        s.close()
    assert p.run(*db, "verify").returncode == 0


def test_gate_imports_only_what_the_decision_needs(proj: Proj, repo: GitRepo) -> None:
    """Start-up: on the default SQLite store the gate loads no SQLAlchemy, Alembic, rich,
    Jinja or HTTP client (measured by the interpreter's own import log, not by timing)."""
    sha = merge_pr(repo, 1)
    proj.collect()
    proj.review(1)
    proj.ok(
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
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEPROOF_")}
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "changeproof", "gate", "--env", "production",
         "--commit", sha, "--actor", PIPE, "--at", "2026-01-02T12:00:00Z"],
        cwd=proj.root, capture_output=True, text=True, env=env, check=False, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    loaded = {
        line.rsplit("|", 1)[-1].strip()
        for line in r.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "changeproof.gate" in loaded
    heavy = {
        m for m in loaded if m.split(".")[0] in {"sqlalchemy", "alembic", "rich", "jinja2", "httpx"}
    }
    assert not heavy, sorted(heavy)
