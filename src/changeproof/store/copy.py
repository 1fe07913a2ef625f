"""Copy a whole store to another database (SQLite → PostgreSQL, or any direction).

Every table the schema defines is copied row for row — evidence, the commit index, cursors,
runs and results, and the locker's objects, entries and checkpoints with their sequence
numbers and hashes unchanged — so the chain and its signatures verify on the target exactly
as on the source. The target must be empty; everything is written in one transaction (an
interrupted copy leaves the target empty), and the copy is refused if the source changed
while it was being read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from changeproof.errors import StoreError, UsageError
from changeproof.store import Store, bulk_insert, schema

BATCH = 5000


@dataclass
class CopyReport:
    source: str
    target: str
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rows.values())

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "rows": dict(self.rows)}


def _tables() -> list[sa.Table]:
    return list(schema.metadata.sorted_tables)


# columns that move when a row is rewritten in place (upserts keep the row's key)
_VERSION_COLUMNS = {"evidence": "collected_us", "collect_state": "updated_us"}


def _fingerprint(conn: Connection) -> dict[str, tuple[int, Any, Any]]:
    """Row count, highest key and latest write of every table: a write during the copy
    changes it."""
    out: dict[str, tuple[int, Any, Any]] = {}
    for t in _tables():
        pk = next(iter(t.primary_key.columns))
        ver = t.c[_VERSION_COLUMNS[t.name]] if t.name in _VERSION_COLUMNS else pk
        n, top, last = conn.execute(
            sa.select(sa.func.count(), sa.func.max(pk), sa.func.max(ver)).select_from(t)
        ).one()
        out[t.name] = (int(n), top, last)
    return out


def _check_source_tables(conn: Connection, url: str) -> None:
    known = {t.name for t in _tables()} | {"alembic_version"}
    present = set(sa.inspect(conn).get_table_names())
    unknown = sorted(present - known)
    if unknown:
        raise StoreError(
            f"the source database {url} has tables this version does not know: "
            + ", ".join(unknown),
            expected="a changeproof store created by this version's migrations",
            hint="upgrade changeproof to the version that made those tables, then copy",
        )


def _check_target_empty(conn: Connection, url: str) -> None:
    busy = [
        t.name
        for t in _tables()
        if conn.execute(sa.select(sa.literal(1)).select_from(t).limit(1)).first() is not None
    ]
    if busy:
        raise UsageError(
            f"the target database {url} already holds data (tables: {', '.join(busy)})",
            expected="an empty database: two evidence chains cannot be merged into one",
            hint="create a new database (e.g. `createdb changeproof`) and copy into that",
        )


def _reset_identity(conn: Connection, t: sa.Table) -> None:
    """After inserting explicit ids, move PostgreSQL's id sequence past them (otherwise the
    next INSERT would reuse id 1 and fail)."""
    col = t.autoincrement_column
    if col is None or conn.dialect.name != "postgresql":
        return
    conn.execute(
        sa.text(
            f"SELECT setval(pg_get_serial_sequence('{t.name}', '{col.name}'), "
            f"COALESCE((SELECT MAX({col.name}) FROM {t.name}), 0) + 1, false)"
        )
    )


def copy_store(
    src: Store,
    dst: Store,
    *,
    batch: int = BATCH,
    progress: Callable[[int], None] | None = None,
) -> CopyReport:
    """Copy every row of ``src`` into the empty, migrated ``dst`` in one transaction."""
    report = CopyReport(src.url, dst.url)
    try:
        with src.engine.connect() as sconn:
            if sconn.dialect.name == "postgresql":
                # one snapshot for every table: the copy is consistent even under load
                sconn = sconn.execution_options(isolation_level="REPEATABLE READ")
            _check_source_tables(sconn, src.url)
            before = _fingerprint(sconn)
            with dst.engine.begin() as dconn:
                _check_target_empty(dconn, dst.url)
                for t in _tables():
                    order = list(t.primary_key.columns)
                    res = sconn.execution_options(stream_results=True, yield_per=batch).execute(
                        sa.select(t).order_by(*order)
                    )
                    n = 0
                    for part in res.partitions(batch):
                        rows = [dict(r._mapping) for r in part]
                        bulk_insert(dconn, t, rows)
                        n += len(rows)
                        if progress is not None:
                            progress(len(rows))
                    report.rows[t.name] = n
                    _reset_identity(dconn, t)
                if _fingerprint(sconn) != before:
                    raise StoreError(
                        f"the source database {src.url} changed while it was being copied",
                        expected="no collector or check writing to the source during the copy",
                        hint="stop the other changeproof processes and run the copy again "
                        "(nothing was written to the target)",
                    )
                after = _fingerprint(dconn)
                for name, (count, _, _) in before.items():
                    if after[name][0] != count:  # pragma: no cover - a driver bug, not input
                        raise StoreError(
                            f"copied {after[name][0]} rows of {name} but the source has {count}"
                        )
            sconn.rollback()
    except sa.exc.SQLAlchemyError as exc:
        from changeproof.store import _explain_db_error

        raise _explain_db_error(dst.url, exc) from None
    return report


def source_rows(store: Store) -> int:
    """Rows to copy (for a progress bar)."""
    with store.engine.connect() as conn:
        return sum(n for n, _, _ in _fingerprint(conn).values())
