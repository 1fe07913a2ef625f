"""The gate's fast SQLite path reads and writes exactly what the general (SQLAlchemy) path
does, and its locker appends verify."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from changeproof.evidence import Change
from changeproof.gate import EmergencyRequest, decide, load_evidence, record
from changeproof.gate_store import (
    PostgresGateStore,
    SqlAlchemyGateStore,
    SqliteGateStore,
    current_revision,
    pg_driver,
)
from changeproof.locker import Locker, Signer, verify_locker
from changeproof.store import SCHEMA_HEAD, Store
from changeproof.workspace import Workspace
from tests.gate_helpers import NOW, T0, change, deployment, request, settings

COLUMNS = "kind, key, repo, subject, occurred_us, collected_us, digest, raw_sha256, body"


def make_ws(root: Path) -> Workspace:
    ws = Workspace.resolve(str(root / "ws"), None, str(root / "changeproof.toml"))
    ws.ensure_home()
    return ws


def fill(ws: Workspace) -> list[Change]:
    """Five reviewed changes, production at #2, staging of #5 — through the real writer."""
    changes = [change(i, merged_at=T0 + timedelta(minutes=i)) for i in range(1, 6)]
    store = Store.open(ws.db_url)
    try:
        with store.writer(Locker(ws.signer())) as w:
            w.put_raw(b"seed", kind="test", source="test")
            for i, c in enumerate(changes):
                w.put(c, seq=i * 1000)
            w.put(deployment("production", changes[1].merge_sha, at=T0 + timedelta(hours=1)))
            w.put(deployment("staging", changes[4].merge_sha, at=T0 + timedelta(hours=2)))
    finally:
        store.close()
    return changes


def fast(ws: Workspace) -> SqliteGateStore:
    db = SqliteGateStore.open(Path(ws.db_url.split("sqlite:///", 1)[1]), ws.keys_dir)
    assert db is not None
    return db


def general(ws: Workspace) -> SqlAlchemyGateStore:
    return SqlAlchemyGateStore(Store.open(ws.db_url), ws.signer)


def test_schema_revision_matches_the_store() -> None:
    assert current_revision() == SCHEMA_HEAD


def test_both_paths_read_the_same_evidence(tmp_path: Path) -> None:
    ws = make_ws(tmp_path)
    changes = fill(ws)
    s = settings()
    req = request(changes[4].merge_sha[:10])
    a, b = fast(ws), general(ws)
    try:
        ea, eb = load_evidence(a, req, s), load_evidence(b, req, s)
    finally:
        a.close()
        b.close()
    assert ea.commit == eb.commit == changes[4].merge_sha
    assert [c.id for _, c in ea.shipped] == ["acme/app#3", "acme/app#4", "acme/app#5"]
    assert ea.shipped == eb.shipped
    assert ea.deployments == eb.deployments and ea.previous == eb.previous
    assert ea.context.exceptions == eb.context.exceptions
    assert decide(req, ea, s).checks == decide(req, eb, s).checks


def test_fast_write_equals_general_write_and_verifies(tmp_path: Path) -> None:
    s = settings()
    rows = []
    for name, opener in (("fast", fast), ("general", general)):
        ws = make_ws(tmp_path / name)
        # one signing key for both, so the rows can be compared byte for byte
        if name == "general":
            for f in (tmp_path / "fast" / "ws" / "keys").iterdir():
                (ws.keys_dir / f.name).write_bytes(f.read_bytes())
        changes = fill(ws)
        c = changes[4]
        req = request(c.merge_sha, emergency=EmergencyRequest(incident="INC-1", approver="carol"))
        db = opener(ws)
        try:
            v = decide(req, load_evidence(db, req, s), s)
            rec = record(db, v, recorded_at=NOW)
        finally:
            db.close()
        assert rec.decision.decision == "allow" and rec.emergency is None  # nothing failed
        store = Store.open(ws.db_url)
        try:
            with store.connect() as conn:
                got = conn.exec_driver_sql(
                    f"SELECT {COLUMNS} FROM evidence WHERE kind IN ('gate_decision', 'emergency') ORDER BY kind"
                ).all()
            rows.append([tuple(r) for r in got])
            report = verify_locker(store, ws.public_key_pem())
            assert report.ok, report.problems
            assert report.checkpoints == 2
            # the general writer can append after the fast path, and the chain still verifies
            with store.writer(Locker(Signer.load(ws.keys_dir))) as w:
                w.put_raw(b"after", kind="test", source="test")
            assert verify_locker(store, ws.public_key_pem()).ok
        finally:
            store.close()
    assert rows[0] == rows[1]


def test_emergency_written_by_fast_path(tmp_path: Path) -> None:
    ws = make_ws(tmp_path)
    changes = fill(ws)
    s = settings()
    c = changes[3]  # never staged: denied, then let through the emergency path
    req = request(
        c.merge_sha, now=NOW, emergency=EmergencyRequest(incident="INC-9", approver="carol")
    )
    db = fast(ws)
    try:
        v = decide(req, load_evidence(db, req, s), s)
        rec = record(db, v)
    finally:
        db.close()
    assert rec.emergency is not None and rec.emergency_digest
    store = Store.open(ws.db_url)
    try:
        got = store.get(type(rec.emergency), rec.emergency.id)
        assert got is not None and got[0] == rec.emergency_digest
        assert verify_locker(store, ws.public_key_pem()).ok
    finally:
        store.close()


def test_outdated_schema_uses_the_general_path(tmp_path: Path) -> None:
    ws = make_ws(tmp_path)
    fill(ws)
    path = Path(ws.db_url.split("sqlite:///", 1)[1])
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0000'")
    assert SqliteGateStore.open(path, ws.keys_dir) is None


def test_fast_store_refuses_change_records(tmp_path: Path) -> None:
    from changeproof.errors import StoreError

    ws = make_ws(tmp_path)
    changes = fill(ws)
    db = fast(ws)
    try:
        with pytest.raises(StoreError):
            db.write([], [changes[0]])
    finally:
        db.close()


def test_promotion_chain_judged_by_its_source_changes(tmp_path: Path) -> None:
    """release → main: the promotion carries no review of its own; the gate indexes the
    release-branch changes that introduced its commits, as the check does."""
    import msgspec

    from changeproof import settings as st

    ws = make_ws(tmp_path)
    rel = change(1, branch="release/1")
    unreviewed = change(2, branch="release/1", reviewer=None)
    s = settings(
        controlled_branches=("main", "release/*"),
        promotions=(st.Promotion(source="release/*", target="main"),),
    )

    def promo(n: int, sources: list[Change]) -> Change:
        base = change(n, reviewer=None)
        return msgspec.structs.replace(
            base,
            head_ref="release/1",
            commits=tuple(c for src in sources for c in src.commits),
            merged_at=T0 + timedelta(hours=n),
            provenance=msgspec.structs.replace(
                base.provenance, occurred_at=T0 + timedelta(hours=n)
            ),
        )

    good, bad = promo(3, [rel]), promo(4, [unreviewed])
    store = Store.open(ws.db_url)
    try:
        with store.writer() as w:
            w.put(rel, seq=0)
            w.put(unreviewed, seq=1000)
            w.put(good, seq=0)
            w.put(deployment("staging", good.merge_sha, at=T0 + timedelta(hours=5)))
            w.put(deployment("production", good.merge_sha, at=T0 + timedelta(hours=6)))
            w.put(bad, seq=1000)
            w.put(deployment("staging", bad.merge_sha, at=T0 + timedelta(hours=7)))
    finally:
        store.close()
    db = fast(ws)
    try:
        req = request(good.merge_sha, now=T0 + timedelta(hours=5, minutes=30))
        v = decide(req, load_evidence(db, req, s), s)
        assert v.decision == "allow", v.checks
        req = request(bad.merge_sha, now=T0 + timedelta(hours=8))
        v = decide(req, load_evidence(db, req, s), s)
        assert v.decision == "deny"
        assert [c.id for c in v.changes] == [bad.id]  # only what shipped since production
        assert "CM-REV-1" in next(c for c in v.checks if c.rule == "changes").reasons[1]
    finally:
        db.close()


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_postgres_direct_store_reads_and_writes_as_the_general_path(
    tmp_path: Path, pg_url: str, driver: str
) -> None:
    ws = Workspace.resolve(str(tmp_path / "ws"), pg_url, str(tmp_path / "changeproof.toml"))
    ws.ensure_home()
    changes = fill(ws)
    s = settings()
    req = request(changes[4].merge_sha[:10])  # an abbreviated SHA: the LIKE query too
    direct = PostgresGateStore.open(pg_url, ws.keys_dir, pg_driver(driver))
    assert direct is not None and direct.db.__name__ == driver
    gen = general(ws)
    try:
        ea, eb = load_evidence(direct, req, s), load_evidence(gen, req, s)
        assert [c.id for _, c in ea.shipped] == ["acme/app#3", "acme/app#4", "acme/app#5"]
        assert ea.shipped == eb.shipped and ea.deployments == eb.deployments
        assert ea.previous == eb.previous and ea.context.exceptions == eb.context.exceptions
        v = decide(req, ea, s)
        assert v.checks == decide(req, eb, s).checks
        rec = record(direct, v, recorded_at=NOW)
    finally:
        direct.close()
        gen.close()
    assert rec.decision.decision == "allow"
    store = Store.open(ws.db_url)
    try:
        with store.connect() as conn:
            kinds = conn.exec_driver_sql(
                "SELECT kind FROM evidence WHERE kind = 'gate_decision'"
            ).all()
        assert len(kinds) == 1
        report = verify_locker(store, ws.public_key_pem())
        assert report.ok, report.problems
        assert report.checkpoints == 2  # the fill's and the gate's
        with store.writer(Locker(Signer.load(ws.keys_dir))) as w:  # and the chain goes on
            w.put_raw(b"after", kind="test", source="test")
        assert verify_locker(store, ws.public_key_pem()).ok
    finally:
        store.close()
