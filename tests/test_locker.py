"""The locker: content addressing, the hash chain, signed checkpoints, and every tampering."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from changeproof.locker import Locker, Signer, verify_locker
from changeproof.store import Store, schema
from changeproof.workspace import Workspace


def fill(store: Store, signer: Signer, payloads: list[bytes]) -> None:
    with store.writer(Locker(signer)) as w:
        for p in payloads:
            w.put_raw(p, kind="test", source="unit")


@pytest.fixture
def filled(store: Store, workspace: Workspace) -> tuple[Store, bytes]:
    signer = workspace.signer()
    fill(store, signer, [b"alpha", b"beta", b"gamma"])
    fill(store, signer, [b"delta", b"epsilon"])
    return store, workspace.public_key_pem()


def test_intact_locker_verifies(filled: tuple[Store, bytes]) -> None:
    store, pem = filled
    rep = verify_locker(store, pem)
    assert rep.ok, rep.problems
    assert (rep.entries, rep.objects, rep.checkpoints) == (5, 5, 2)


def test_identical_payloads_are_stored_once(store: Store, workspace: Workspace) -> None:
    signer = workspace.signer()
    fill(store, signer, [b"same", b"same"])
    fill(store, signer, [b"same"])
    rep = verify_locker(store, workspace.public_key_pem())
    assert rep.ok and rep.entries == 1 and rep.objects == 1


def test_content_address_is_sha256(store: Store, workspace: Workspace) -> None:
    with store.writer(Locker(workspace.signer())) as w:
        dig = w.put_raw(b"payload", kind="t", source="s")
    assert dig == hashlib.sha256(b"payload").hexdigest()


def _exec(store: Store, stmt: sa.Executable) -> None:
    with store.engine.begin() as conn:
        conn.execute(stmt)


def test_flipped_byte_is_named(filled: tuple[Store, bytes]) -> None:
    store, pem = filled
    o = schema.locker_objects
    dig = hashlib.sha256(b"beta").hexdigest()
    _exec(store, sa.update(o).where(o.c.digest == dig).values(body=b"bets"))
    rep = verify_locker(store, pem)
    assert not rep.ok
    assert any(dig[:16] in p and "altered" in p for p in rep.problems)


def test_deleted_entry_is_named(filled: tuple[Store, bytes]) -> None:
    store, pem = filled
    e = schema.locker_entries
    _exec(store, sa.delete(e).where(e.c.seq == 2))
    rep = verify_locker(store, pem)
    assert not rep.ok
    assert rep.problems[0].startswith("entry #3")
    assert "missing" in rep.problems[0]


def test_deleted_object_is_named(filled: tuple[Store, bytes]) -> None:
    store, pem = filled
    o = schema.locker_objects
    dig = hashlib.sha256(b"gamma").hexdigest()
    _exec(store, sa.delete(o).where(o.c.digest == dig))
    rep = verify_locker(store, pem)
    assert any("missing (deleted)" in p and dig[:16] in p for p in rep.problems)


def test_reordered_entries_are_named(filled: tuple[Store, bytes]) -> None:
    store, pem = filled
    e = schema.locker_entries
    with store.engine.begin() as conn:
        rows = {r.seq: r for r in conn.execute(sa.select(e).where(e.c.seq.in_([2, 3])))}
        conn.execute(sa.delete(e).where(e.c.seq.in_([2, 3])))
        for seq, src in ((2, rows[3]), (3, rows[2])):
            conn.execute(sa.insert(e).values({**src._mapping, "seq": seq}))
    rep = verify_locker(store, pem)
    assert not rep.ok
    assert rep.problems[0].startswith("entry #2")


def test_appended_outside_changeproof_is_named(filled: tuple[Store, bytes]) -> None:
    store, pem = filled
    o, e = schema.locker_objects, schema.locker_entries
    body = b"forged"
    dig = hashlib.sha256(body).hexdigest()
    with store.engine.begin() as conn:
        head = conn.execute(sa.select(e.c.entry_hash).where(e.c.seq == 5)).scalar_one()
        from changeproof.locker import entry_hash

        conn.execute(sa.insert(o).values(digest=dig, size=6, media_type="x", body=body))
        conn.execute(
            sa.insert(e).values(
                seq=6,
                digest=dig,
                kind="test",
                source="unit",
                recorded_us=1,
                prev_hash=head,
                entry_hash=entry_hash(6, dig, "test", "unit", 1, head),
            )
        )
    rep = verify_locker(store, pem)
    assert any("not covered by a signed checkpoint" in p for p in rep.problems)


def test_other_key_fails_signatures(filled: tuple[Store, bytes], tmp_path: object) -> None:
    store, _ = filled
    from pathlib import Path

    other = Signer.generate(Path(str(tmp_path)) / "otherkeys")
    rep = verify_locker(store, other.public_pem)
    assert not rep.ok and "not this workspace's key" in rep.problems[0]


def test_failed_unit_of_work_keeps_nothing(store: Store, workspace: Workspace) -> None:
    signer = workspace.signer()
    with pytest.raises(RuntimeError), store.writer(Locker(signer)) as w:
        w.put_raw(b"half", kind="t", source="s")
        raise RuntimeError("interrupted")
    rep = verify_locker(store, workspace.public_key_pem())
    assert rep.ok and rep.entries == 0
