"""The evidence locker: append-only, content-addressed raw evidence in a hash chain.

* Every raw payload is stored once under its SHA-256 (identical payloads are not duplicated).
* Every new payload appends one chain entry whose hash covers the previous entry's hash, so
  removing, altering or reordering any entry breaks every hash after it.
* Every unit of work ends with a checkpoint — the chain head signed with the workspace's
  ed25519 key — written in the same transaction as the entries it covers.
* Nothing is ever updated or deleted by changeproof.

The chain lives in the store's database so that evidence, raw payloads and checkpoints commit
atomically (see docs/design.md). ``verify`` re-derives every hash and names the first bad one.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from changeproof.errors import LockerError
from changeproof.store import bulk_insert, schema, to_us, upsert

if TYPE_CHECKING:
    from changeproof.store import Store

GENESIS = "0" * 64
PRIVATE_KEY_FILE = "locker-ed25519.pem"
PUBLIC_KEY_FILE = "locker-ed25519.pub.pem"


def entry_hash(seq: int, digest: str, kind: str, source: str, recorded_us: int, prev: str) -> str:
    line = f"changeproof-locker-v1\n{seq}\n{digest}\n{kind}\n{source}\n{recorded_us}\n{prev}\n"
    return hashlib.sha256(line.encode()).hexdigest()


def checkpoint_message(seq: int, head_hash: str, signed_us: int) -> bytes:
    return f"changeproof-checkpoint-v1\n{seq}\n{head_hash}\n{signed_us}\n".encode()


class Signer:
    """The workspace's ed25519 key. The private key never leaves the workspace folder."""

    def __init__(self, private_pem: bytes) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key = load_pem_private_key(private_pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise LockerError("the workspace signing key is not an ed25519 key")
        self._key = key
        self.public_pem = public_pem_of(key)
        self.key_id = key_id(self.public_pem)

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._key.sign(message)).decode()

    @staticmethod
    def generate(keys_dir: Path) -> Signer:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        keys_dir.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        priv = keys_dir / PRIVATE_KEY_FILE
        tmp = priv.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        tmp.replace(priv)
        (keys_dir / PUBLIC_KEY_FILE).write_bytes(public_pem_of(key))
        return Signer(pem)

    @staticmethod
    def load(keys_dir: Path) -> Signer:
        priv = keys_dir / PRIVATE_KEY_FILE
        try:
            return Signer(priv.read_bytes())
        except FileNotFoundError:
            raise LockerError(
                f"the workspace signing key {priv} is missing",
                expected="the key `changeproof init` made for this workspace",
                hint="restore it from backup; a new key cannot sign for the old checkpoints",
            ) from None


def public_pem_of(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    pub: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pub


def key_id(public_pem: bytes) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    raw = load_pem_public_key(public_pem).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return hashlib.sha256(raw).hexdigest()[:16]


def verify_signature(public_pem: bytes, message: bytes, signature_b64: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = load_pem_public_key(public_pem)
    if not isinstance(key, Ed25519PublicKey):
        return False
    try:
        key.verify(base64.b64decode(signature_b64), message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass
class _Pending:
    digest: str
    payload: bytes
    kind: str
    source: str
    media_type: str


class Locker:
    """Appends raw payloads within a store transaction. One instance per unit of work.

    Payload bytes are written as they come (in batches, so memory stays bounded), but the
    chain entries naming them are appended only in :meth:`finish`, at the end of the
    transaction, under PostgreSQL's chain lock. So concurrent collectors hold the chain only
    for that short final step, and while holding it wait for nothing else (no deadlock).
    (SQLite has one writer at a time: under ``Writer.pipelined`` they are appended batch by
    batch on the writer thread, in the same order.)
    """

    def __init__(self, signer: Signer, *, clock_us: int | None = None) -> None:
        self.signer = signer
        self._pending: dict[str, _Pending] = {}
        # digest → (kind, source) of objects written this unit of work, awaiting their entry
        self._staged: dict[str, tuple[str, str]] = {}
        self._clock_us = clock_us
        self.appended = 0
        self.last_seq: int | None = None
        # set by Writer.pipelined: batch writes then run on its writer thread, in order
        self.run: Callable[..., None] | None = None
        self.last_hash: str | None = None  # the entry hash at last_seq

    def put(
        self,
        conn: Connection,
        payload: bytes,
        *,
        kind: str,
        source: str,
        media_type: str,
        sha256: str | None = None,
    ) -> str:
        # ``sha256``: computed by the caller over these exact bytes (hashing is an ingest's
        # second-largest cost); a wrong one is caught by `changeproof verify`
        dig = sha256 or hashlib.sha256(payload).hexdigest()
        # (a payload this unit of work already wrote is not written again)
        if dig not in self._pending and dig not in self._staged:
            self._pending[dig] = _Pending(dig, payload, kind, source, media_type)
            if len(self._pending) >= 2000:
                self.flush(conn)
        return dig

    def _now_us(self) -> int:
        if self._clock_us is not None:
            return self._clock_us
        import time

        return int(time.time() * 1_000_000)

    def _head(self, conn: Connection) -> tuple[int, str]:
        if conn.dialect.name == "postgresql":
            # serialise chain appends across concurrent collectors; released at commit
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7303912)"))
        row = conn.execute(_statements().head).first()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def flush(self, conn: Connection) -> None:
        """Write the buffered payloads' bytes; their chain entries wait for :meth:`finish`."""
        if not self._pending:
            return
        # digest order: concurrent writers of the same payloads lock them in one order
        objects = [
            {
                "digest": p.digest,
                "size": len(p.payload),
                "media_type": p.media_type,
                "body": p.payload,
            }
            for _, p in sorted(self._pending.items())
        ]
        # an identical payload already stored (or being stored by another process) is kept once
        if self.run is not None:
            self.run(upsert, conn, schema.locker_objects, objects, ("digest",))
        else:
            upsert(conn, schema.locker_objects, objects, ("digest",))
        for d, p in self._pending.items():
            self._staged.setdefault(d, (p.kind, p.source))
        self._pending.clear()
        if self.run is not None and conn.dialect.name == "sqlite":
            # SQLite has one writer at a time, so there is no chain lock to keep short: the
            # writer thread names this batch in the chain now instead of all of it at the end
            staged, self._staged = self._staged, {}
            self.run(self._append_entries, conn, staged)

    def _append_entries(
        self, conn: Connection, staged: dict[str, tuple[str, str]] | None = None
    ) -> None:
        """Append one chain entry per staged payload the chain does not name yet."""
        if staged is None:
            staged, self._staged = self._staged, {}
        if not staged:
            return
        seq, prev = self._head(conn)  # takes the chain lock first: the check below is then exact
        e = schema.locker_entries
        digests = list(staged)
        named: set[str] = set()
        for i in range(0, len(digests), 500):
            chunk = digests[i : i + 500]
            named.update(r[0] for r in conn.execute(_statements().named, {"digests": chunk}))
        now = self._now_us()
        entries: list[dict[str, Any]] = []
        for dig, (kind, source) in staged.items():
            if dig in named:
                continue
            seq += 1
            h = entry_hash(seq, dig, kind, source, now, prev)
            entries.append(
                {
                    "seq": seq,
                    "digest": dig,
                    "kind": kind,
                    "source": source,
                    "recorded_us": now,
                    "prev_hash": prev,
                    "entry_hash": h,
                }
            )
            prev = h
        for i in range(0, len(entries), 5000):
            bulk_insert(conn, e, entries[i : i + 5000])
        if entries:
            self.appended += len(entries)
            self.last_seq = seq
            self.last_hash = prev

    def finish(self, conn: Connection) -> None:
        """Flush, append the chain entries and sign a checkpoint over the new head, inside
        the same transaction."""
        self.flush(conn)
        self._append_entries(conn)
        if self.last_seq is None or self.last_hash is None:
            return
        head = self.last_hash  # the hash _append_entries just computed and inserted
        now = self._now_us()
        sig = self.signer.sign(checkpoint_message(self.last_seq, head, now))
        conn.execute(
            _statements().checkpoint,
            {
                "seq": self.last_seq,
                "head_hash": head,
                "signed_us": now,
                "key_id": self.signer.key_id,
                "signature": sig,
            },
        )


@dataclass(frozen=True)
class _Statements:
    """The locker's statements, built once: SQLAlchemy then finds them in its compiled
    cache without rebuilding and hashing a new statement per unit of work (the fixed cost
    of a small transaction, e.g. a webhook batch)."""

    head: Any
    named: Any
    checkpoint: Any


@functools.cache
def _statements() -> _Statements:
    e = schema.locker_entries
    return _Statements(
        head=sa.select(e.c.seq, e.c.entry_hash).order_by(e.c.seq.desc()).limit(1),
        named=sa.select(e.c.digest).where(e.c.digest.in_(sa.bindparam("digests", expanding=True))),
        checkpoint=sa.insert(schema.locker_checkpoints),
    )


# --- verification ------------------------------------------------------------------------


@dataclass
class VerifyReport:
    entries: int = 0
    objects: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "intact": self.ok,
            "entries": self.entries,
            "objects": self.objects,
            "checkpoints": self.checkpoints,
            "problems": self.problems,
            "first_problem": self.problems[0] if self.problems else None,
        }


def _iter_entries(conn: Connection) -> Iterator[Any]:
    e = schema.locker_entries
    res = conn.execution_options(stream_results=True, yield_per=5000).execute(
        sa.select(e).order_by(e.c.seq)
    )
    yield from res


def verify_locker(store: Store, public_pem: bytes, *, max_problems: int = 50) -> VerifyReport:
    """Re-derive every object digest and chain hash, and check every checkpoint signature."""
    rep = VerifyReport()
    o, c = schema.locker_objects, schema.locker_checkpoints

    def problem(text: str) -> None:
        if len(rep.problems) < max_problems:
            rep.problems.append(text)

    with store.connect() as conn:
        prev = GENESIS
        expected_seq = 1
        hashes: dict[int, str] = {}
        seen_digests: set[str] = set()
        for row in _iter_entries(conn):
            rep.entries += 1
            label = f"entry #{row.seq} ({row.kind}, sha256 {row.digest[:16]}…)"
            if row.seq != expected_seq:
                problem(f"{label}: expected entry #{expected_seq} here — an entry is missing")
            if row.prev_hash != prev:
                problem(
                    f"{label}: does not link to the entry before it (chain broken or reordered)"
                )
            h = entry_hash(
                row.seq, row.digest, row.kind, row.source, row.recorded_us, row.prev_hash
            )
            if h != row.entry_hash:
                problem(f"{label}: its entry hash does not match its contents (altered)")
            hashes[row.seq] = row.entry_hash
            seen_digests.add(row.digest)
            prev = row.entry_hash
            expected_seq = row.seq + 1
        last_seq = expected_seq - 1

        # objects: every stored body must hash to its name, and belong to an entry
        res = conn.execution_options(stream_results=True, yield_per=2000).execute(
            sa.select(o.c.digest, o.c.body).order_by(o.c.digest)
        )
        present: set[str] = set()
        for dig, body in res:
            rep.objects += 1
            present.add(dig)
            # a body rewritten by hand may come back as text; it is then altered by definition
            data = bytes(body) if isinstance(body, bytes | memoryview) else str(body).encode()
            if hashlib.sha256(data).hexdigest() != dig:
                problem(
                    f"object sha256 {dig[:16]}…: its bytes no longer match its digest (altered)"
                )
            if dig not in seen_digests:
                problem(f"object sha256 {dig[:16]}…: not in the chain (added outside changeproof)")
        for dig in sorted(seen_digests - present):
            problem(f"object sha256 {dig[:16]}…: named by the chain but missing (deleted)")

        kid = key_id(public_pem)
        covered = 0
        for row in conn.execute(sa.select(c).order_by(c.c.seq)):
            rep.checkpoints += 1
            label = f"checkpoint at entry #{row.seq}"
            if row.key_id != kid:
                problem(f"{label}: signed by key {row.key_id}, not this workspace's key {kid}")
                continue
            if not verify_signature(
                public_pem, checkpoint_message(row.seq, row.head_hash, row.signed_us), row.signature
            ):
                problem(f"{label}: bad signature")
                continue
            if hashes.get(row.seq) != row.head_hash:
                problem(f"{label}: the signed head does not match the chain (chain rewritten)")
                continue
            covered = max(covered, row.seq)
        if last_seq > covered:
            problem(
                f"entries #{covered + 1}..#{last_seq} are not covered by a signed checkpoint "
                "(appended outside changeproof)"
            )
    rep.problems.sort(key=_problem_order)
    return rep


def _problem_order(text: str) -> tuple[int, int]:
    # "first bad one" = lowest entry number; object/checkpoint problems after entry problems
    if text.startswith("entry #"):
        return (0, int(text.split("#", 1)[1].split(" ", 1)[0]))
    return (1, 0)


def export_segment(store: Store, digests: set[str], out_dir: Path) -> list[dict[str, Any]]:
    """Write the raw objects and their chain entries (for audit packages); returns entries."""
    e, o = schema.locker_entries, schema.locker_objects
    out_dir.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    with store.connect() as conn:
        dl = sorted(digests)
        for i in range(0, len(dl), 500):
            chunk = dl[i : i + 500]
            for row in conn.execute(sa.select(e).where(e.c.digest.in_(chunk)).order_by(e.c.seq)):
                entries.append(dict(row._mapping))
            for dig, body in conn.execute(
                sa.select(o.c.digest, o.c.body).where(o.c.digest.in_(chunk))
            ):
                (out_dir / dig).write_bytes(bytes(body))
    entries.sort(key=lambda r: r["seq"])
    return entries


__all__ = [
    "Locker",
    "Signer",
    "VerifyReport",
    "export_segment",
    "to_us",
    "verify_locker",
]
