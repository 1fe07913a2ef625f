"""Migration 0003: a store's per-result rows become one group per run and subject, and back,
with nothing lost — on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import changeproof.store
from changeproof.evaluate import run_check, stored_results
from changeproof.outcomes import Outcome, Result
from changeproof.settings import Settings
from changeproof.store import SCHEMA_HEAD, Store, schema
from changeproof.workspace import Workspace
from tests.controls.builders import MERGED, change
from tests.controls.storing import put

_enc = msgspec.json.Encoder(order="sorted")
OLD = sa.Table(
    "results",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run_id", sa.BigInteger),
    sa.Column("control", sa.String(32)),
    sa.Column("subject", sa.String(512)),
    sa.Column("repo", sa.String(256)),
    sa.Column("outcome", sa.String(16)),
    sa.Column("digest", sa.String(64)),
    sa.Column("body", sa.LargeBinary),
)


def _migrate(store: Store, to: str) -> None:
    cfg = Config()
    cfg.set_main_option(
        "script_location", str(Path(changeproof.store.__file__).parent / "migrations")
    )
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        if to < (store.schema_version() or ""):
            command.downgrade(cfg, to)
        else:
            command.upgrade(cfg, to)


def _old_rows() -> list[dict[str, object]]:
    rows = []
    for run_id, subject, outcomes in (
        (1, "acme/api#1", ("pass", "fail", "not_applicable")),
        (1, "acme/api#2", ("pass", "pass", "pass")),
        (1, "population", ("indeterminate",)),
        (2, "acme/api#1", ("exception", "pass")),
    ):
        for i, outcome in enumerate(outcomes):
            r = Result(
                control=f"CM-REV-{i + 1}",
                subject=subject,
                repo=None if subject == "population" else "acme/api",
                outcome=Outcome(outcome),
                reasons=(f"{outcome} because {i}",),
            )
            body = _enc.encode(r)
            rows.append(
                {
                    "run_id": run_id,
                    "control": r.control,
                    "subject": subject,
                    "repo": r.repo,
                    "outcome": outcome,
                    "digest": hashlib.sha256(body).hexdigest(),
                    "body": body,
                }
            )
    return rows


def test_old_results_become_groups_and_come_back(store: Store) -> None:
    _migrate(store, "0002")
    rows = _old_rows()
    with store.engine.begin() as conn:
        conn.execute(OLD.insert(), rows)
    _migrate(store, SCHEMA_HEAD)
    assert store.schema_version() == SCHEMA_HEAD
    t = schema.result_groups
    with store.connect() as conn:
        got = conn.execute(
            sa.select(t.c.run_id, t.c.subject, t.c.outcomes, t.c.worst, t.c.n).order_by(t.c.id)
        ).all()
    assert [tuple(g) for g in got] == [
        (1, "acme/api#1", " CM-REV-1:pass CM-REV-2:fail CM-REV-3:not_applicable ", "fail", 3),
        (1, "acme/api#2", " CM-REV-1:pass CM-REV-2:pass CM-REV-3:pass ", "pass", 3),
        (1, "population", " CM-REV-1:indeterminate ", "indeterminate", 1),
        (2, "acme/api#1", " CM-REV-1:exception CM-REV-2:pass ", "exception", 2),
    ]
    # each result decodes from its group exactly as it was stored
    results = stored_results(store, 1) + stored_results(store, 2)
    assert [_enc.encode(r) for r in results] == [r["body"] for r in rows]
    assert [r.subject for r in stored_results(store, 1, "acme/api#2")] == ["acme/api#2"] * 3
    # and back: the same rows, in the same order
    _migrate(store, "0002")
    with store.connect() as conn:
        back = conn.execute(sa.select(*(OLD.c[k] for k in rows[0])).order_by(OLD.c.id)).all()
    assert [dict(r._mapping) for r in back] == [dict(r) for r in rows]
    _migrate(store, SCHEMA_HEAD)


def test_a_check_after_the_migration_stores_groups(workspace: Workspace, store: Store) -> None:
    _migrate(store, "0002")
    _migrate(store, SCHEMA_HEAD)
    put(workspace, store, change(repo="acme/api", number=1, merged_at=MERGED))
    run = run_check(store, Settings(), MERGED)
    results = stored_results(store, run.run_id)
    assert {r.subject for r in results} >= {"acme/api#1"}
    with store.connect() as conn:
        n = conn.execute(sa.select(sa.func.sum(schema.result_groups.c.n))).scalar()
        bodies = conn.execute(sa.select(schema.result_groups.c.body)).scalars().all()
    assert n == len(results)
    assert all(bytes(b).startswith(b'{"evidence":') for b in bodies)  # the grouped layout
    # a downgrade turns the grouped layout back into one row per result too
    _migrate(store, "0002")
    with store.connect() as conn:
        back = conn.execute(
            sa.select(OLD.c.run_id, OLD.c.control, OLD.c.subject, OLD.c.body).order_by(OLD.c.id)
        ).all()
    assert [(r.run_id, r.control, r.subject, bytes(r.body)) for r in back] == [
        (run.run_id, r.control, r.subject, _enc.encode(r)) for r in results
    ]
    _migrate(store, SCHEMA_HEAD)


def test_postgresql_compresses_bodies_with_lz4(store: Store) -> None:
    if store.dialect != "postgresql":
        pytest.skip("a PostgreSQL storage setting")
    with store.connect() as conn:
        got: dict[str, str] = dict(
            conn.execute(
                sa.text(
                    "SELECT c.relname, a.attcompression FROM pg_attribute a"
                    " JOIN pg_class c ON c.oid = a.attrelid"
                    " WHERE a.attname = 'body' AND c.relname IN ('result_groups', 'evidence')"
                    " AND c.relnamespace = current_schema()::regnamespace"
                )
            ).all()
        )
    assert got == {"result_groups": "l", "evidence": "l"}
