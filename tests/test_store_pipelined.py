"""Writer.pipelined(): batches written by a second thread inside the same transaction, on
SQLite and PostgreSQL (the `store` fixture runs each test on both) — same rows as writing
directly, the locker chain intact, and all or nothing when either side fails."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

from changeproof.errors import StoreError
from changeproof.evidence import Change
from changeproof.locker import Locker, verify_locker
from changeproof.store import (
    SQLITE_ROWS_PER_STATEMENT,
    Store,
    bulk_write_pragmas,
    schema,
    upsert,
)
from changeproof.workspace import Workspace
from tests.test_store_portable import change, sha

# more than one Writer/Locker batch (2,000) and a multi-row statement remainder on SQLite
N = 2 * 2000 + SQLITE_ROWS_PER_STATEMENT + 17


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "store-writer"]


def test_pipelined_writes_what_direct_writes_do(store: Store, workspace: Workspace) -> None:
    signer = workspace.signer()
    sqlite = store.dialect == "sqlite"
    with store.writer(Locker(signer)) as w:
        pragmas = "PRAGMA cache_size", "PRAGMA temp_store"
        before = [w.conn.exec_driver_sql(p).scalar() for p in pragmas] if sqlite else None
        with w.pipelined():
            if sqlite:  # a bigger page cache, and statement journals in memory
                assert [w.conn.exec_driver_sql(p).scalar() for p in pragmas] == [-65536, 2]
            for i in range(N):
                w.put_raw(f"payload {i}".encode(), kind="t", source="unit")
                w.put(change(i), seq=i * 1000)
            for i in range(40):  # repeated in the unit of work: stored and chained once
                w.put_raw(f"payload {i}".encode(), kind="t", source="unit")
            w.set_cursor("git", "acme/api:main", "abc")
        if sqlite:  # neither is left behind
            assert [w.conn.exec_driver_sql(p).scalar() for p in pragmas] == before
    with store.writer(Locker(signer)) as w:  # and a later direct unit of work continues it
        w.put_raw(b"payload 3", kind="t", source="unit")
        w.put_raw(b"one more", kind="t", source="unit")
        w.put(change(5, "retitled"))
    assert not writer_threads()
    assert store.count("change") == N
    got = store.get(Change, "acme/api#7")
    assert got is not None and got[1] == change(7)
    body = msgspec.json.Encoder(order="sorted").encode(change(7))
    assert got[0] == hashlib.sha256(body).hexdigest()
    got5 = store.get(Change, "acme/api#5")
    assert got5 is not None and got5[1].title == "retitled"
    assert store.cursor("git", "acme/api:main") == "abc"
    found = store.change_for_commit("acme/api", sha(N - 1))
    assert found is not None and found[1].number == N - 1
    rep = verify_locker(store, workspace.public_key_pem())
    assert rep.ok, rep.problems
    assert (rep.entries, rep.objects, rep.checkpoints) == (N + 1, N + 1, 2)
    e = schema.locker_entries
    with store.connect() as conn:
        seqs = [r[0] for r in conn.execute(sa.select(e.c.seq).order_by(e.c.seq))]
        first = conn.execute(sa.select(e.c.digest).where(e.c.seq == 1)).scalar_one()
    assert seqs == list(range(1, N + 2))  # gap-free, in the order the payloads came
    assert first == hashlib.sha256(b"payload 0").hexdigest()


def test_a_failed_write_on_the_writer_thread_keeps_nothing(
    store: Store, workspace: Workspace
) -> None:
    with pytest.raises(StoreError), store.writer(Locker(workspace.signer())) as w, w.pipelined():
        for i in range(N):
            w.put_raw(f"x{i}".encode(), kind="t", source="unit")
            w.put(change(i))
        # branch is NOT NULL: this batch fails on the writer thread
        w.index_commits(
            [{"repo": "acme/api", "sha": "f" * 40, "branch": None, "change_key": "k", "seq": 1}]
        )
        w.flush()
        for i in range(N, N + 3000):  # the caller carries on until it hears of the error
            w.put(change(i))
    assert not writer_threads()
    assert store.count("change") == 0
    rep = verify_locker(store, workspace.public_key_pem())
    assert rep.ok and rep.entries == 0 and rep.objects == 0


def test_an_error_in_the_caller_stops_the_writer_and_keeps_nothing(
    store: Store, workspace: Workspace
) -> None:
    with (
        pytest.raises(RuntimeError, match="interrupted"),
        store.writer(Locker(workspace.signer())) as w,
        w.pipelined(),
    ):
        for i in range(N):
            w.put_raw(f"x{i}".encode(), kind="t", source="unit")
            w.put(change(i))
        raise RuntimeError("interrupted")
    assert not writer_threads()
    assert store.count("change") == 0
    rep = verify_locker(store, workspace.public_key_pem())
    assert rep.ok and rep.entries == 0 and rep.objects == 0
    with store.writer() as w:  # the database is free for the next unit of work
        w.put(change(1))
    assert store.count("change") == 1


def test_many_row_statements_upsert_like_single_rows(store: Store) -> None:
    """Upserts of more rows than one SQLite statement holds: the latest values win and no
    key is stored twice."""
    n = SQLITE_ROWS_PER_STATEMENT * 2 + 3
    rows = [
        {
            "source": "unit",
            "scope": f"s{i:05d}",
            "cursor": f"c{i}",
            "updated_us": i,
            "complete": True,
        }
        for i in range(n)
    ]
    meta = [{"key": f"k{i:05d}", "value": f"v{i}"} for i in range(n)]
    with store.engine.begin() as conn:
        upsert(conn, schema.collect_state, rows, ("source", "scope"))
        upsert(conn, schema.meta, meta, ("key",))
    changed = [{**r, "cursor": f"{r['cursor']}'"} if i % 3 == 0 else r for i, r in enumerate(rows)]
    with store.engine.begin() as conn:
        upsert(conn, schema.collect_state, changed, ("source", "scope"))
        upsert(conn, schema.meta, [{"key": "k00001", "value": "new"}], ("key",))
    assert store.cursor("unit", "s00000") == "c0'"
    assert store.cursor("unit", "s00001") == "c1"
    assert store.cursor("unit", f"s{n - 1:05d}") == (
        f"c{n - 1}'" if (n - 1) % 3 == 0 else f"c{n - 1}"
    )
    assert store.get_meta("k00001") == "new" and store.get_meta(f"k{n - 1:05d}") == f"v{n - 1}"
    with store.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(schema.collect_state)).scalar()
    assert count == n


def test_restoring_the_bulk_settings_never_hides_the_error(tmp_path: Path) -> None:
    """A connection that can no longer take the restoring PRAGMAs is dropped from the pool;
    the error that ended the write is what the caller sees."""
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        with store.engine.connect() as conn:
            with pytest.raises(RuntimeError, match="the write failed"), bulk_write_pragmas(conn):
                raw = conn.connection.dbapi_connection
                assert raw is not None
                raw.close()
                raise RuntimeError("the write failed")
            assert conn.invalidated
    finally:
        store.close()
