"""`changeproof db copy --to URL`: a whole SQLite store into another database (PostgreSQL
when CHANGEPROOF_TEST_PG_URL is set, else a second SQLite file), chain unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from changeproof.errors import UsageError
from changeproof.store import Store, schema
from changeproof.store.copy import copy_store
from tests.conftest import GitRepo

CLI = [sys.executable, "-m", "changeproof"]


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEPROOF_")}
    return subprocess.run(
        [*CLI, "--home", str(cwd / "ws"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'target.db'}"


def history(repo: GitRepo) -> None:
    for i in range(1, 6):
        repo.branch(f"f{i}")
        repo.commit(f"feature {i}", {f"app{i}.py": str(i)}, author="Bob <bob@example.com>")
        repo.checkout("main")
        repo.merge(f"f{i}", f"Merge pull request #{i} from acme/f{i}")
    repo.commit("pushed straight to main", {"app.py": "x"})


def dump(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, in key order (ids included)."""
    out: dict[str, list[tuple[object, ...]]] = {}
    with Store.open(url, migrate=False) as s, s.connect() as conn:
        for t in schema.metadata.sorted_tables:
            rows = conn.execute(sa.select(t).order_by(*t.primary_key.columns)).all()
            out[t.name] = [
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows
            ]
    return out


def test_copy_keeps_every_row_and_the_chain(repo: GitRepo, tmp_path: Path, target_url: str) -> None:
    history(repo)
    assert run(tmp_path, "collect", "git", str(repo.path), "--repo", "acme/app").returncode == 0
    assert run(tmp_path, "check", "--format", "json").returncode in (0, 1)
    repo.commit("one more direct push", {"b.py": "y"})
    assert run(tmp_path, "collect", "git", str(repo.path), "--repo", "acme/app").returncode == 0
    r = run(tmp_path, "db", "copy", "--to", target_url, "--format", "json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["locker"]["intact"] is True
    assert report["locker"]["checkpoints"] == 2
    assert report["rows"]["evidence"] > 0 and report["rows"]["result_groups"] > 0
    source = dump(f"sqlite:///{tmp_path / 'ws' / 'store.db'}")
    assert dump(target_url) == source  # row for row, ids, hashes and signatures alike
    # the workspace works on the target: verify, and new writes continue ids and chain
    v = run(tmp_path, "--db", target_url, "verify")
    assert v.returncode == 0 and v.stdout.startswith("intact"), v.stdout + v.stderr
    c1 = json.loads(run(tmp_path, "check", "--format", "json").stdout)
    c2 = json.loads(run(tmp_path, "--db", target_url, "check", "--format", "json").stdout)
    assert c1["results"] == c2["results"]
    repo.commit("after the move", {"c.py": "z"})
    r = run(tmp_path, "--db", target_url, "collect", "git", str(repo.path), "--repo", "acme/app")
    assert r.returncode == 0 and "1 new first-parent" in r.stdout, r.stdout + r.stderr
    assert run(tmp_path, "--db", target_url, "verify").returncode == 0
    with Store.open(target_url) as s, s.connect() as conn:
        runs = conn.execute(sa.select(schema.runs.c.id).order_by(schema.runs.c.id)).scalars()
        assert list(runs) == [1, 2]  # the copied run, then the check run on the target


def test_copy_refuses_a_target_with_data(repo: GitRepo, tmp_path: Path, target_url: str) -> None:
    assert run(tmp_path, "collect", "git", str(repo.path)).returncode == 0
    assert run(tmp_path, "db", "copy", "--to", target_url).returncode == 0
    before = dump(target_url)
    r = run(tmp_path, "db", "copy", "--to", target_url)
    assert r.returncode == 2
    assert "already holds data" in r.stderr and "Try:" in r.stderr
    assert dump(target_url) == before


def test_copy_refuses_its_own_database(repo: GitRepo, tmp_path: Path) -> None:
    assert run(tmp_path, "collect", "git", str(repo.path)).returncode == 0
    own = f"sqlite:///{tmp_path / 'ws' / 'store.db'}"
    r = run(tmp_path, "db", "copy", "--to", own)
    assert r.returncode == 2 and "own database" in r.stderr


def test_unreachable_target_is_a_clear_error(repo: GitRepo, tmp_path: Path) -> None:
    assert run(tmp_path, "collect", "git", str(repo.path)).returncode == 0
    r = run(tmp_path, "db", "copy", "--to", "postgresql://nobody@127.0.0.1:1/none")
    assert r.returncode == 2
    assert "cannot reach the database" in r.stderr


def test_copy_store_api_refuses_non_empty_target(tmp_path: Path) -> None:
    a = Store.open(f"sqlite:///{tmp_path / 'a.db'}")
    b = Store.open(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        with b.writer() as w:
            w.set_meta("x", "1")
        with pytest.raises(UsageError, match="already holds data"):
            copy_store(a, b)
        report = copy_store(b, a)
        assert report.rows["meta"] == 1 and report.total == 1
        assert a.get_meta("x") == "1"
    finally:
        a.close()
        b.close()
