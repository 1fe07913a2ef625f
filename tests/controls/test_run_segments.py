"""A check commits its results in segments and counts only once finished; workers read the
changes they judge themselves, listed a page at a time. None of it may change a result."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

import changeproof.evaluate as ev
from changeproof.evaluate import Period, build_context, run_check
from changeproof.evidence import Change
from changeproof.settings import Settings, Testing
from changeproof.store import Store, now_utc, schema, to_us
from changeproof.web import queries
from changeproof.workspace import Workspace
from tests.controls.storing import put
from tests.controls.test_parallel_check import NOW, _rows, _variety
from tests.test_migration_result_groups import _migrate

SETTINGS = Settings(testing=Testing(required_checks=("build", "test")))


def _runs(store: Store) -> list[tuple[int, bool, int]]:
    """(run id, finished, stored groups) of every run."""
    r, g = schema.runs, schema.result_groups
    with store.connect() as conn:
        rows = conn.execute(sa.select(r.c.id, r.c.finished_us).order_by(r.c.id)).all()
        out = []
        for i, fin in rows:
            n = conn.execute(
                sa.select(sa.func.count()).select_from(g).where(g.c.run_id == i)
            ).scalar_one()
            out.append((int(i), fin is not None, int(n)))
    return out


@pytest.mark.parametrize(("jobs", "segment", "page"), [(1, 2, 50_000), (2, 5, 7), (2, 1, 1)])
def test_segments_and_id_pages_store_the_same_run(
    workspace: Workspace,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    jobs: int,
    segment: int,
    page: int,
) -> None:
    put(workspace, store, *_variety())
    whole = run_check(store, SETTINGS, NOW, segment=None)
    monkeypatch.setattr(ev, "_ID_PAGE", page)  # keyset pages of a few ids: many boundaries
    run = run_check(store, SETTINGS, NOW, jobs=jobs, parallel_from=0, batch=3, segment=segment)
    assert run.results_digest == whole.results_digest
    assert _rows(store, run.run_id) == _rows(store, whole.run_id)
    window = Period(NOW - timedelta(days=29), NOW - timedelta(days=25))
    a = run_check(store, SETTINGS, NOW, period=window, repo="acme/web", segment=None)
    b = run_check(store, SETTINGS, NOW, period=window, repo="acme/web", jobs=jobs, parallel_from=0)
    assert a.results_digest == b.results_digest
    assert _rows(store, a.run_id) == _rows(store, b.run_id)


def test_a_run_counts_only_once_it_is_finished(workspace: Workspace, store: Store) -> None:
    put(workspace, store, *_variety())
    first = run_check(store, SETTINGS, NOW)
    seen: list[tuple[list[tuple[int, bool, int]], object]] = []
    calls = [0]

    def look(_: object) -> None:
        calls[0] += 1
        if calls[0] == 60:  # the writer is at most a few bounded batches behind by now
            seen.append((_runs(store), queries.latest_run(store)))

    second = run_check(store, SETTINGS, NOW, keep=look, segment=4, batch=3)
    # while it ran: its committed segments were there, the run unfinished, and what readers
    # showed was still the first run
    (during, latest) = seen[0]
    assert during[0] == (first.run_id, True, during[0][2])
    assert during[1][0] == second.run_id and not during[1][1] and during[1][2] >= 20
    assert isinstance(latest, dict) and latest["id"] == first.run_id
    after = queries.latest_run(store)
    assert after is not None and after["id"] == second.run_id
    assert [f for _, f, _ in _runs(store)] == [True, True]


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_run_that_fails_after_committed_segments_leaves_nothing(
    workspace: Workspace, store: Store, jobs: int
) -> None:
    put(workspace, store, *_variety())
    kept = run_check(store, SETTINGS, NOW)
    before = _runs(store)
    seen: list[object] = []

    def boom(g: object) -> None:
        seen.append(g)
        if len(seen) == 60:
            raise KeyboardInterrupt  # as Ctrl-C would, long after the first segments

    with pytest.raises(KeyboardInterrupt):
        run_check(store, SETTINGS, NOW, keep=boom, segment=5, jobs=jobs, parallel_from=0)
    assert _runs(store) == before
    assert _rows(store, kept.run_id)  # the finished run is untouched


def _unfinished(store: Store, owner: str | None, beat_us: int | None) -> int:
    with store.engine.begin() as conn:
        run_id = int(
            conn.execute(
                sa.insert(schema.runs).values(
                    started_us=to_us(NOW),
                    settings_digest="x",
                    scope="{}",
                    tool_version="0",
                    result_count=0,
                    owner=owner,
                    beat_us=beat_us,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        )
        conn.execute(
            sa.insert(schema.result_groups).values(
                run_id=run_id,
                subject="acme/api#1",
                repo="acme/api",
                outcomes=" CM-REV-1:pass ",
                worst="pass",
                n=1,
                digest="0" * 64,
                body=b"{}",
            )
        )
    return run_id


def test_the_next_check_removes_runs_whose_writer_is_gone(
    workspace: Workspace, store: Store
) -> None:
    put(workspace, store, *_variety()[:10])
    host = socket.gethostname()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    # killed and not yet reaped by its parent (a zombie): gone as well
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    killed.kill()
    while os.waitid(os.P_PID, killed.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
        time.sleep(0.01)
    now_us = to_us(now_utc())
    hour = 3600 * 1_000_000
    dead_here = _unfinished(store, f"{host}:{ended.pid}", now_us)
    zombie_here = _unfinished(store, f"{host}:{killed.pid}", now_us)
    silent_elsewhere = _unfinished(store, "elsewhere:1", now_us - hour)
    busy_elsewhere = _unfinished(store, "elsewhere:1", now_us)
    alive_here = _unfinished(store, f"{host}:{os.getpid()}", now_us)
    no_owner = _unfinished(store, None, None)
    try:
        run = run_check(store, SETTINGS, NOW)
    finally:
        killed.wait()
    left = {i: (f, n) for i, f, n in _runs(store)}
    # the gone writers' runs are removed (SQLite may give the new run a removed run's id);
    # a check still writing (here or on another machine) keeps its rows
    assert set(left) == {busy_elsewhere, alive_here, run.run_id}
    assert {dead_here, zombie_here, silent_elsewhere, no_owner} & set(left) <= {run.run_id}
    assert left[busy_elsewhere] == left[alive_here] == (False, 1)
    assert left[run.run_id][0] and left[run.run_id][1] > 1


def test_workers_skip_rows_that_are_not_changes_or_are_gone(
    workspace: Workspace, store: Store
) -> None:
    put(workspace, store, *_variety()[:12])
    t = schema.evidence
    with store.connect() as conn:
        rows = conn.execute(sa.select(t.c.id, t.c.kind).order_by(t.c.id)).all()
    changes = [int(i) for i, k in rows if k == Change.kind]
    other = next(int(i) for i, k in rows if k != Change.kind)
    ctx = build_context(store, SETTINGS, NOW, extra={"period": (None, None)})
    judge = ev._Judge(ctx, ev._Population(store, ctx, Period(None, None), None))
    judge.store = store
    wanted = [changes[3], other, changes[0], 10**12, changes[1]]
    try:
        chunk = judge.batch_ids(wanted)
    finally:
        judge.close()
    with store.connect() as conn:
        bodies = dict(conn.execute(sa.select(t.c.id, t.c.body).where(t.c.id.in_(changes))).all())
    expected = [msgspec.json.decode(bodies[i], type=Change).id for i in wanted if i in changes]
    assert chunk.ids == expected  # in the order asked, the deployment and the gone id skipped
    assert [g[0] for g in chunk.groups] == expected


def test_downgrading_drops_unfinished_runs(workspace: Workspace, store: Store) -> None:
    put(workspace, store, *_variety()[:10])
    done = run_check(store, SETTINGS, NOW)
    _unfinished(store, "elsewhere:1", to_us(now_utc()))
    _migrate(store, "0003")
    with store.connect() as conn:
        ids = conn.execute(sa.select(schema.runs.c.id)).scalars().all()
        groups = conn.execute(
            sa.select(sa.func.count()).select_from(schema.result_groups)
        ).scalar_one()
    assert ids == [done.run_id]
    assert groups == len(_rows(store, done.run_id))
    _migrate(store, "0004")
    assert store.schema_version() == "0004"


def test_deployments_from_the_context_judge_as_the_stored_ones(
    workspace: Workspace, store: Store
) -> None:
    # the record loop and the population take deployments from the context when it loaded
    # them (one decode, not one per deployment control); a context without them reads the
    # store: the same groups either way, with a period and a repository too
    put(workspace, store, *_variety())
    window = Period(NOW - timedelta(days=27), NOW - timedelta(days=22))
    for period, repo in ((None, None), (window, None), (window, "acme/web")):
        loaded = build_context(store, SETTINGS, NOW)
        bare = build_context(store, SETTINGS, NOW, record_controls=())
        assert loaded.table("deployment") and not bare.table("deployment")
        a = [
            g
            for c in ev.iter_result_groups(
                store, SETTINGS, NOW, period=period, repo=repo, ctx=loaded
            )
            for g in c.groups
        ]
        b = [
            g
            for c in ev.iter_result_groups(store, SETTINGS, NOW, period=period, repo=repo, ctx=bare)
            for g in c.groups
        ]
        assert a == b
        assert sum(1 for g in a if "/prod/" in g[0]) >= (3 if repo else 9) * (period is None)


def test_only_a_database_other_processes_can_open_is_judged_in_workers(
    tmp_path: Path,
) -> None:
    # workers read the changes on connections of their own: an in-memory SQLite database
    # exists only in its own connection, so a check on one judges in-process
    cases = {
        "sqlite://": False,
        "sqlite:///:memory:": False,
        f"sqlite:///{tmp_path / 'store.db'}": True,
        "postgresql+psycopg://u@127.0.0.1:1/db": True,
    }
    for url, expected in cases.items():
        s = Store.open(url, migrate=False)
        try:
            assert s.reopenable is expected, url
        finally:
            s.close()


@pytest.mark.parametrize("fail", [False, True])
def test_the_writers_sqlite_settings_do_not_outlive_the_run(
    workspace: Workspace, store: Store, fail: bool
) -> None:
    """The check writes with a bigger page cache and in-memory statement journals, and gives
    its connection back to the pool as it found it (after a failure, too)."""
    sqlite = store.dialect == "sqlite"
    put(workspace, store, *_variety())
    pragmas = ("cache_size", "temp_store") if sqlite else ()
    with store.connect() as conn:
        defaults = [conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in pragmas]
    returned: list[list[object]] = []
    statements: list[str] = []

    def checkin(dbapi_conn: object, _record: object) -> None:
        cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
        returned.append([cur.execute(f"PRAGMA {p}").fetchone()[0] for p in pragmas])

    def seen(_c: object, _cur: object, statement: str, *_: object) -> None:
        statements.append(statement)

    sa.event.listen(store.engine, "checkin", checkin)
    sa.event.listen(store.engine, "before_cursor_execute", seen)

    def boom(_: object) -> None:
        raise RuntimeError("stop")

    try:
        if fail:
            with pytest.raises(RuntimeError):
                run_check(store, SETTINGS, NOW, keep=boom, segment=4, batch=3)
        else:
            run_check(store, SETTINGS, NOW, segment=4, batch=3)
    finally:
        sa.event.remove(store.engine, "checkin", checkin)
        sa.event.remove(store.engine, "before_cursor_execute", seen)
    if not sqlite:  # nothing of it on other databases
        assert not [s for s in statements if "PRAGMA" in s]
        return
    assert "PRAGMA temp_store=MEMORY" in statements
    assert "PRAGMA cache_size=-65536" in statements
    assert returned and all(r == defaults for r in returned)
