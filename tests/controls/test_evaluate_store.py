"""The evaluator's storage path: streaming order, the background results writer, atomic runs."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from changeproof.evaluate import (
    Period,
    ResultGroup,
    _ResultWriter,
    iter_changes,
    result_group,
    run_check,
    stored_results,
)
from changeproof.outcomes import Outcome, Result
from changeproof.settings import Settings
from changeproof.store import Store, schema
from changeproof.workspace import Workspace
from tests.controls.builders import MERGED, change
from tests.controls.storing import put

NOW = MERGED + timedelta(days=2)


def _seed(workspace: Workspace, store: Store) -> None:
    put(
        workspace,
        store,
        change(repo="acme/web", number=1, merged_at=MERGED - timedelta(hours=5)),
        change(repo="acme/api", number=2, merged_at=MERGED),
        change(repo="acme/api", number=1, merged_at=MERGED - timedelta(hours=9)),
    )


def test_changes_stream_per_repository_in_merge_order(workspace: Workspace, store: Store) -> None:
    _seed(workspace, store)
    assert [c.id for _, c in iter_changes(store)] == ["acme/api#1", "acme/api#2", "acme/web#1"]
    assert [c.id for _, c in iter_changes(store, repo="acme/web")] == ["acme/web#1"]
    late = [c.id for _, c in iter_changes(store, start=MERGED - timedelta(hours=6))]
    assert late == ["acme/api#2", "acme/web#1"]


def _count_runs(store: Store) -> tuple[int, int]:
    with store.connect() as conn:
        runs = conn.execute(sa.select(sa.func.count()).select_from(schema.runs)).scalar_one()
        res = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(schema.result_groups.c.n), 0))
        ).scalar_one()
    return int(runs), int(res)


def test_a_failing_run_keeps_nothing_and_stops_its_writer(
    workspace: Workspace, store: Store
) -> None:
    _seed(workspace, store)
    before = threading.active_count()
    seen: list[ResultGroup] = []

    def boom(g: ResultGroup) -> None:
        seen.append(g)
        if len(seen) == 2:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        run_check(store, Settings(), NOW, period=Period(None, None), keep=boom)
    assert _count_runs(store) == (0, 0)
    assert threading.active_count() == before
    ok = run_check(store, Settings(), NOW)
    assert _count_runs(store)[1] == len(stored_results(store, ok.run_id)) > 20


def test_writer_thread_stores_in_order_and_reports_its_errors(store: Store) -> None:
    rows = [
        Result(control="CM-X", subject=f"s{i}", outcome=Outcome.PASS, reasons=("ok",))
        for i in range(25)
    ]
    # enough rows for SQLite's many-rows-per-statement slices and a remainder after them
    many = [
        Result(control="CM-Y", subject=f"m{i}", outcome=Outcome.FAIL, reasons=("no",))
        for i in range(4_321)
    ]
    with store.engine.begin() as conn:
        w = _ResultWriter(conn, 6, batch=3_000)
        for r in many:
            w.add_groups((result_group([r]),))
        w.close()
        stored = conn.execute(
            sa.select(schema.result_groups.c.subject, schema.result_groups.c.body)
            .where(schema.result_groups.c.run_id == 6)
            .order_by(schema.result_groups.c.id)
        ).all()
    assert [tuple(g) for g in stored] == [(r.subject, result_group([r])[6]) for r in many]
    with store.engine.begin() as conn:
        w = _ResultWriter(conn, 7, batch=4)
        for r in rows:
            w.add_groups((result_group([r]),))
        w.close()
        got = (
            conn.execute(
                sa.select(schema.result_groups.c.subject)
                .where(schema.result_groups.c.run_id == 7)
                .order_by(schema.result_groups.c.id)
            )
            .scalars()
            .all()
        )
    assert got == [f"s{i}" for i in range(25)]

    with pytest.raises(sa.exc.SQLAlchemyError), store.engine.begin() as conn:
        w = _ResultWriter(conn, 8, batch=2)
        w.sql = w.sql.replace("INSERT INTO result_groups", "INSERT INTO no_such_table")
        w.copy_sql = w.copy_sql.replace("COPY result_groups", "COPY no_such_table")
        for r in rows[:6]:
            w.add_groups((result_group([r]),))
        w.close()
    with store.connect() as conn:
        n = conn.execute(
            sa.select(sa.func.count())
            .select_from(schema.result_groups)
            .where(schema.result_groups.c.run_id == 8)
        ).scalar_one()
    assert n == 0
