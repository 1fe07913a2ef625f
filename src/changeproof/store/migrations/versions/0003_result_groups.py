"""results stored one row per subject and run (result_groups), not one row per result

Existing runs are carried over: consecutive result rows of one run and subject become one
group, bodies joined into a JSON array in their order (each body was already canonical JSON,
so the array is what a new run stores). A run's recorded results digest is kept as it was.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 09:40:00
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# frozen here: a migration must not change when the package's outcome order does
_SEVERITY = {"indeterminate": 4, "fail": 3, "exception": 2, "pass": 1, "not_applicable": 0}
_BATCH = 2000


def _groups_table() -> sa.Table:
    return sa.Table(
        "result_groups",
        sa.MetaData(),
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("repo", sa.String(256), nullable=True),
        sa.Column("outcomes", sa.Text(), nullable=False),
        sa.Column("worst", sa.String(16), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
    )


def _results_table() -> sa.Table:
    return sa.Table(
        "results",
        sa.MetaData(),
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("control", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("repo", sa.String(256), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
    )


def _group(rows: list[Any]) -> dict[str, Any]:
    body = b"[" + b",".join(bytes(r.body) for r in rows) + b"]"
    return {
        "run_id": rows[0].run_id,
        "subject": rows[0].subject,
        "repo": rows[0].repo,
        "outcomes": " " + " ".join(f"{r.control}:{r.outcome}" for r in rows) + " ",
        "worst": max((r.outcome for r in rows), key=lambda o: _SEVERITY.get(o, 5)),
        "n": len(rows),
        "digest": hashlib.sha256(body).hexdigest(),
        "body": body,
    }


def _old_groups(conn: sa.Connection, old: sa.Table) -> Iterator[dict[str, Any]]:
    run: list[Any] = []
    # a statement option: Connection.execution_options would stream every later statement too
    q = sa.select(old).order_by(old.c.id).execution_options(yield_per=_BATCH)
    for row in conn.execute(q):
        if run and (row.run_id, row.subject) != (run[0].run_id, run[0].subject):
            yield _group(run)
            run = []
        run.append(row)
    if run:
        yield _group(run)


def _lz4(conn: sa.Connection, *tables: str) -> None:
    """PostgreSQL 14+: compress large bodies with lz4 where the server was built with it (a
    fraction of the default pglz's CPU to write and to read; it applies to rows written from
    now on). Elsewhere nothing changes."""
    if conn.dialect.name != "postgresql" or (conn.dialect.server_version_info or (0,)) < (14,):
        return
    for table in tables:
        try:
            with conn.begin_nested():
                conn.exec_driver_sql(f"ALTER TABLE {table} ALTER COLUMN body SET COMPRESSION lz4")
        except sa.exc.DBAPIError:
            return  # a server without lz4 support keeps pglz


def upgrade() -> None:
    groups = _groups_table()
    groups.create(op.get_bind())
    op.create_index("ix_result_groups_run_subject", "result_groups", ["run_id", "subject"])
    conn = op.get_bind()
    _lz4(conn, "result_groups", "evidence")
    batch: list[dict[str, Any]] = []
    for g in _old_groups(conn, _results_table()):
        batch.append(g)
        if len(batch) >= _BATCH:
            conn.execute(groups.insert(), batch)
            batch = []
    if batch:
        conn.execute(groups.insert(), batch)
    op.drop_index("ix_results_run_subject", table_name="results")
    op.drop_index("ix_results_run_control", table_name="results")
    op.drop_table("results")


def downgrade() -> None:
    import msgspec

    from changeproof.outcomes import decode_group

    encode = msgspec.json.Encoder(order="sorted").encode

    old = _results_table()
    old.create(op.get_bind())
    op.create_index("ix_results_run_control", "results", ["run_id", "control"])
    op.create_index("ix_results_run_subject", "results", ["run_id", "subject"])
    conn = op.get_bind()
    groups = _groups_table()
    batch: list[dict[str, Any]] = []
    q = sa.select(groups).order_by(groups.c.id).execution_options(yield_per=_BATCH)
    for g in conn.execute(q):
        tokens = g.outcomes.split()
        stored = bytes(g.body)
        # a JSON array of results (what this migration made), or the grouped layout runs
        # stored since (outcomes.encode_group): each result's own canonical JSON either way
        parts = (
            [bytes(raw) for raw in msgspec.json.decode(stored, type=list[msgspec.Raw])]
            if stored[:1] == b"["
            else [encode(r) for r in decode_group(stored)]
        )
        for token, body in zip(tokens, parts, strict=True):
            control, outcome = token.rsplit(":", 1)
            batch.append(
                {
                    "run_id": g.run_id,
                    "control": control,
                    "subject": g.subject,
                    "repo": g.repo,
                    "outcome": outcome,
                    "digest": hashlib.sha256(body).hexdigest(),
                    "body": body,
                }
            )
        if len(batch) >= _BATCH:
            conn.execute(old.insert(), batch)
            batch = []
    if batch:
        conn.execute(old.insert(), batch)
    op.drop_index("ix_result_groups_run_subject", table_name="result_groups")
    op.drop_table("result_groups")
