"""scripts/pg: a throw-away PostgreSQL that starts on loopback, answers, and is gone after stop."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "pg"


def pg(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHANGEPROOF_PG_STATE": str(state)}
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )


def test_usage_is_explained(tmp_path: Path) -> None:
    r = pg(tmp_path / "state.env")
    assert r.returncode == 2 and "usage: scripts/pg start|stop|url|status" in r.stderr
    r = pg(tmp_path / "state.env", "status")
    assert r.returncode == 1 and "down" in r.stderr
    assert pg(tmp_path / "state.env", "stop").returncode == 0  # nothing to stop is fine


@pytest.mark.slow
def test_start_url_stop(tmp_path: Path) -> None:
    if not (any(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or shutil.which("initdb")):
        pytest.skip("PostgreSQL server binaries are not installed")
    if (
        os.geteuid() == 0
        and subprocess.run(["id", "postgres"], check=False, capture_output=True).returncode
    ):
        pytest.skip("running as root without a postgres OS user")
    state = tmp_path / "state.env"
    r = pg(state, "start")
    assert r.returncode == 0, r.stderr
    try:
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in r.stdout.strip().splitlines()
        )
        url = exports["CHANGEPROOF_TEST_PG_URL"].strip("'")
        assert url.startswith("postgresql://postgres@127.0.0.1:")
        assert pg(state, "url").stdout.strip() == url
        import psycopg

        with psycopg.connect(url, connect_timeout=10) as conn:
            row = conn.execute("SELECT current_database(), inet_server_addr()::text").fetchone()
        assert row is not None and row[0] == "changeproof" and row[1].startswith("127.0.0.1")
        data_dir = dict(
            line.split("=", 1) for line in state.read_text().splitlines() if "=" in line
        )["PG_DIR"].strip("'")
        assert Path(data_dir).is_dir()
    finally:
        stop = pg(state, "stop")
    assert stop.returncode == 0, stop.stderr
    assert not Path(data_dir).exists() and not state.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=3)
