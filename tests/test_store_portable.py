"""The store's writes and lookups behave the same on SQLite and PostgreSQL (the `store`
fixture runs each test on both), including the big-batch paths PostgreSQL takes through
binary COPY (from COPY_MIN_ROWS rows on)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from changeproof.evidence import Change, Deployment, Provenance
from changeproof.locker import Locker, verify_locker
from changeproof.store import COPY_MIN_ROWS, Store, bulk_insert, driver_rows, schema
from changeproof.workspace import Workspace

T0 = datetime(2026, 1, 1, tzinfo=UTC)
N = COPY_MIN_ROWS * 2 + 17


def sha(i: int, salt: str = "a") -> str:
    return f"{i:08x}".ljust(40, salt)


def change(i: int, title: str = "") -> Change:
    at = T0 + timedelta(minutes=i)
    return Change(
        repo="acme/api",
        branch="main",
        number=i,
        change_type="squash",
        platform="github",
        merged_at=at,
        merge_sha=sha(i),
        landed_shas=(sha(i),),
        title=title or f"change {i}",
        provenance=Provenance(source="unit", occurred_at=at, collected_at=at, raw_sha256="0" * 64),
    )


def deployment(i: int, status: str) -> Deployment:
    at = T0 + timedelta(minutes=i)
    return Deployment(
        id=f"d{i}",
        repo="acme/api",
        environment="production",
        commit_sha=sha(i),
        status=status,  # type: ignore[arg-type]
        started_at=at,
        provenance=Provenance(source="unit", occurred_at=at, collected_at=at, raw_sha256="0" * 64),
    )


def ids(store: Store, kind: str) -> dict[str, int]:
    e = schema.evidence
    with store.connect() as conn:
        rows = conn.execute(sa.select(e.c.key, e.c.id).where(e.c.kind == kind)).all()
    return {str(k): int(i) for k, i in rows}


def test_big_batches_upsert_to_the_latest_view(store: Store) -> None:
    with store.writer() as w:
        for i in range(N):
            w.put(change(i), seq=i * 1000)
            w.put(deployment(i, "started"))
    first_ids = ids(store, "deployment")
    with store.writer() as w:
        for i in range(N):
            # every other deployment finished; the rest are written again unchanged
            w.put(deployment(i, "success" if i % 2 else "started"))
        w.put(change(5, "renamed"), seq=5000)
    assert store.count("change") == N
    assert store.count("deployment") == N
    statuses = sorted(d.status for d in store.records(Deployment, repo="acme/api"))
    assert statuses.count("success") == N // 2
    assert ids(store, "deployment") == first_ids  # an upsert keeps the row (and its order)
    hit = store.get(Change, "acme/api#5")
    assert hit is not None and hit[1].title == "renamed"
    # records stream back in time order on both backends
    times = [c.merged_at for c in store.records(Change)]
    assert times == sorted(times) and len(times) == N


def test_commit_lookup_by_full_sha_and_prefix(store: Store) -> None:
    with store.writer() as w:
        for i in range(N):
            w.put(change(i), seq=i * 1000)
    full = store.change_for_commit("acme/api", sha(42))
    assert full is not None and full[1].number == 42
    prefix = store.change_for_commit("acme/api", sha(42)[:30])
    assert prefix is not None and prefix[1].number == 42
    assert store.change_for_commit("acme/api", "f" * 40) is None
    assert store.change_for_commit("acme/other", sha(42)) is None


def test_cursor_and_meta_are_replaced_not_duplicated(store: Store) -> None:
    for tip in ("aaa", "bbb", "ccc"):
        with store.writer() as w:
            w.set_cursor("git", "acme/api:main", tip, complete=tip != "bbb")
            w.set_meta("last_tip", tip)
    assert store.cursor("git", "acme/api:main") == "ccc"
    assert store.get_meta("last_tip") == "ccc"
    with store.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(schema.collect_state)).scalar()
        complete = conn.execute(sa.select(schema.collect_state.c.complete)).scalar()
    assert n == 1 and complete is True


def test_big_locker_batches_chain_and_dedupe(store: Store, workspace: Workspace) -> None:
    signer = workspace.signer()
    payloads = [f"payload {i}".encode() for i in range(N)]
    with store.writer(Locker(signer)) as w:
        for p in payloads:
            w.put_raw(p, kind="t", source="unit")
        for p in payloads[:50]:  # repeated inside the unit of work
            w.put_raw(p, kind="t", source="unit")
    with store.writer(Locker(signer)) as w:
        for p in payloads[::3]:  # already stored: no new entries
            w.put_raw(p, kind="t", source="unit")
        w.put_raw(b"one more", kind="t", source="unit")
    rep = verify_locker(store, workspace.public_key_pem())
    assert rep.ok, rep.problems
    assert (rep.entries, rep.objects, rep.checkpoints) == (N + 1, N + 1, 2)
    o = schema.locker_objects
    with store.connect() as conn:
        body = conn.execute(
            sa.select(o.c.body).where(o.c.size == len(b"payload 7"), o.c.body == b"payload 7")
        ).scalar_one()
    assert bytes(body) == b"payload 7"  # bytea / BLOB round-trips as bytes


def test_bulk_insert_then_identity_ids_continue(store: Store) -> None:
    rows = [
        {
            "run_id": 1,
            "subject": f"acme/api#{i}",
            "repo": "acme/api",
            "outcomes": " CM-REV-1:pass ",
            "worst": "pass",
            "n": 1,
            "digest": "d" * 64,
            "body": b"[{}]",
        }
        for i in range(N)
    ]
    with store.engine.begin() as conn:
        bulk_insert(conn, schema.result_groups, rows)
        new_id = conn.execute(
            sa.insert(schema.result_groups).values(rows[0]).returning(schema.result_groups.c.id)
        ).scalar_one()
    assert new_id == N + 1
    with store.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(schema.result_groups)).scalar()
    assert n == N + 1


def test_failed_big_unit_of_work_keeps_nothing(store: Store, workspace: Workspace) -> None:
    signer = workspace.signer()
    try:
        with store.writer(Locker(signer)) as w:
            for i in range(N):
                w.put_raw(f"x{i}".encode(), kind="t", source="unit")
                w.put(deployment(i, "success"))
            w.flush()
            raise RuntimeError("interrupted")
    except RuntimeError:
        pass
    assert store.count("deployment") == 0
    rep = verify_locker(store, workspace.public_key_pem())
    assert rep.ok and rep.entries == 0 and rep.objects == 0


def test_new_sqlite_stores_use_large_pages_and_old_ones_keep_theirs(tmp_path: Path) -> None:
    import sqlite3

    from changeproof.store import SQLITE_PAGE_SIZE

    new = tmp_path / "new.db"
    with Store.open(f"sqlite:///{new}") as store, store.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA page_size").scalar() == SQLITE_PAGE_SIZE
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    old = tmp_path / "old.db"
    raw = sqlite3.connect(old)
    raw.execute("PRAGMA page_size=4096")
    raw.execute("CREATE TABLE t (x)")
    raw.commit()
    raw.close()
    with Store.open(f"sqlite:///{old}") as store, store.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA page_size").scalar() == 4096
        assert store.schema_version()  # migrated in place, pages as they were


def test_driver_rows_are_the_rows_sqlalchemy_reads(store: Store) -> None:
    with store.writer() as w:
        for i in range(30):
            w.put(change(i), seq=i)
    t = schema.evidence
    q = (
        sa.select(t.c.id, t.c.key, t.c.occurred_us)
        .where(t.c.kind == "change", t.c.key.in_(["acme/api#3", "acme/api#7", "acme/api#99"]))
        .order_by(t.c.id)
    )
    with store.connect() as conn:
        assert driver_rows(conn, q) == [tuple(r) for r in conn.execute(q)]
        assert len(driver_rows(conn, q)) == 2
        with pytest.raises(sa.exc.DBAPIError):
            driver_rows(conn, sa.select(sa.column("nope")).select_from(t))


def test_postgresql_compresses_bodies_with_lz4_where_it_can(store: Store) -> None:
    """The columns ask for lz4 (migration 0003), and so does every session: a bulk write's
    COPY staging table (which does not inherit a column's compression) compresses with it,
    and a value compressed there is stored as it is."""
    n = COPY_MIN_ROWS + 2
    with store.writer() as w:
        for i in range(n):
            w.put(change(i, "x" * 4000), seq=i)  # a body PostgreSQL compresses
    got = store.get(Change, "acme/api#2")
    assert got is not None and got[1] == change(2, "x" * 4000)  # read back whole
    if store.dialect != "postgresql":
        return
    with store.connect() as conn:
        offered = conn.exec_driver_sql(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        ).scalar()
        used = [
            r[0]
            for r in conn.exec_driver_sql(
                "SELECT pg_column_compression(body) FROM evidence WHERE kind = 'change'"
            )
        ]
    assert len(used) == n
    assert set(used) == ({"lz4"} if offered else {"pglz"})
