"""The gate's access to the store: a handful of SQL reads and one atomic write.

Three implementations of one small interface:

* :class:`SqliteGateStore` — the default embedded store, through the standard library's
  ``sqlite3``. The gate runs on every deployment and must start fast; SQLAlchemy alone costs
  about as much start-up time as the rest of the decision, so the gate talks to SQLite
  directly. Its write appends to the locker exactly as :class:`changeproof.locker.Locker`
  does (same entry and checkpoint formats; tests verify the locker and compare the rows with
  the general path's).
* :class:`PostgresGateStore` — PostgreSQL through a DB-API driver directly, for the same
  reason; the same write, under the locker's advisory lock. ``psycopg2`` when installed (the
  ``postgres`` extra installs it: it imports in ~30 ms), else ``psycopg`` 3, which the rest
  of changeproof uses (its import, with asyncio and its type system, takes ~100 ms more —
  a third of a PostgreSQL gate decision).
* :class:`SqlAlchemyGateStore` — any database through :class:`changeproof.store.Store` and
  the real locker: used when the schema is not at the current revision, so migrations run.

The SQL is plain and portable (named parameters, no dialect features) and is the same text
for both.
"""

from __future__ import annotations

import abc
import hashlib
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec

from changeproof.errors import LockerError, StoreError
from changeproof.evidence import Record

RECORDS = "SELECT digest, body FROM evidence WHERE kind = :kind{repo} ORDER BY occurred_us, id"
LOCKER_GENESIS = "0" * 64
_encoder = msgspec.json.Encoder(order="sorted")


class GateStore(Protocol):
    def rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]: ...

    def write(
        self, raws: Sequence[tuple[bytes, str, str]], records: Sequence[Record]
    ) -> list[str]: ...

    def close(self) -> None: ...


def records_of(db: GateStore, cls: type[Any], repo: str | None = None) -> Iterator[tuple[str, Any]]:
    """(digest, record) of one kind in time order, like ``Store.iter_records``."""
    sql = RECORDS.format(repo=" AND repo = :repo" if repo is not None else "")
    params: dict[str, Any] = {"kind": cls.kind}
    if repo is not None:
        params["repo"] = repo
    dec = msgspec.json.Decoder(cls)
    for dig, body in db.rows(sql, params):
        yield str(dig), dec.decode(bytes(body))


def in_list(name: str, values: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """``IN (:n0, :n1, …)`` with its parameters (portable; no driver array support needed)."""
    params = {f"{name}{i}": v for i, v in enumerate(values)}
    return "(" + ", ".join(f":{k}" for k in params) + ")", params


def _to_us(value: Any) -> int:
    return int(value.timestamp() * 1_000_000)


def _row_of(record: Any) -> dict[str, Any]:
    """The evidence row the store's writer makes for a gate decision or an emergency."""
    if record.kind not in ("gate_decision", "emergency"):
        # changes also index their commits: only the general writer does that
        raise StoreError(f"internal: the fast gate store does not write {record.kind} records")
    body = _encoder.encode(record)
    prov = record.provenance
    subject = getattr(record, "subject", None) or getattr(record, "commit_sha", None)
    return {
        "kind": record.kind,
        "key": record.id,
        "repo": record.repo,
        "subject": subject,
        "occurred_us": _to_us(prov.occurred_at),
        "collected_us": _to_us(prov.collected_at),
        "digest": hashlib.sha256(body).hexdigest(),
        "raw_sha256": prov.raw_sha256,
        "body": body,
    }


def _entry_hash(seq: int, digest: str, kind: str, source: str, recorded_us: int, prev: str) -> str:
    # the locker's chain format (changeproof.locker.entry_hash)
    line = f"changeproof-locker-v1\n{seq}\n{digest}\n{kind}\n{source}\n{recorded_us}\n{prev}\n"
    return hashlib.sha256(line.encode()).hexdigest()


def _checkpoint_message(seq: int, head_hash: str, signed_us: int) -> bytes:
    # the locker's checkpoint format (changeproof.locker.checkpoint_message)
    return f"changeproof-checkpoint-v1\n{seq}\n{head_hash}\n{signed_us}\n".encode()


def current_revision() -> str:
    """The newest schema revision shipped (the migration files are named by revision)."""
    versions = Path(__file__).parent / "store" / "migrations" / "versions"
    revs = sorted(p.name.split("_", 1)[0] for p in versions.glob("[0-9]*_*.py"))
    return revs[-1] if revs else ""


class _DbApiGateStore(abc.ABC):
    """What both direct stores share: the schema check, and the write — the locker append
    exactly as :class:`changeproof.locker.Locker` makes it and the evidence rows, in one
    transaction. Statements use ``:name`` parameters; a driver with another style converts."""

    keys_dir: Path

    @abc.abstractmethod
    def _x(self, sql: str, params: dict[str, Any]) -> Any:
        """Execute one statement; the driver's cursor."""

    @abc.abstractmethod
    def _begin(self) -> None:
        """Start the write transaction, holding the chain's lock."""

    @abc.abstractmethod
    def _end(self, *, commit: bool) -> None:
        """Commit or roll back."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection."""

    def _schema_is_current(self, driver_error: type[Exception]) -> bool:
        """False when the schema is older or newer than this build's (the general path then
        runs migrations or reports the mismatch)."""
        try:
            row = self._x("SELECT version_num FROM alembic_version", {}).fetchone()
        except driver_error:
            return False
        return row is not None and str(row[0]) == current_revision()

    def _sign(self, message: bytes) -> tuple[str, str]:
        import base64

        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        priv = self.keys_dir / "locker-ed25519.pem"
        try:
            key = load_pem_private_key(priv.read_bytes(), password=None)
        except FileNotFoundError:
            raise LockerError(
                f"the workspace signing key {priv} is missing",
                expected="the key `changeproof init` made for this workspace",
                hint="restore it from backup; a new key cannot sign for the old checkpoints",
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise LockerError("the workspace signing key is not an ed25519 key")
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(key.sign(message)).decode(), hashlib.sha256(raw).hexdigest()[:16]

    def _append(self, raws: Sequence[tuple[bytes, str, str]], rows: list[dict[str, Any]]) -> None:
        seq, prev = 0, LOCKER_GENESIS
        head = self._x(
            "SELECT seq, entry_hash FROM locker_entries ORDER BY seq DESC LIMIT 1", {}
        ).fetchone()
        if head is not None:
            seq, prev = int(head[0]), str(head[1])
        now = int(time.time() * 1_000_000)
        appended = False
        for payload, kind, source in raws:
            dig = hashlib.sha256(payload).hexdigest()
            self._x(
                "INSERT INTO locker_objects (digest, size, media_type, body) "
                "VALUES (:d, :n, :m, :b) ON CONFLICT (digest) DO NOTHING",
                {"d": dig, "n": len(payload), "m": "application/json", "b": payload},
            )
            named = self._x(
                "SELECT 1 FROM locker_entries WHERE digest = :d LIMIT 1", {"d": dig}
            ).fetchone()
            if named is not None:
                continue
            seq += 1
            h = _entry_hash(seq, dig, kind, source, now, prev)
            self._x(
                "INSERT INTO locker_entries (seq, digest, kind, source, recorded_us, "
                "prev_hash, entry_hash) VALUES (:seq, :d, :k, :s, :t, :p, :h)",
                {"seq": seq, "d": dig, "k": kind, "s": source, "t": now, "p": prev, "h": h},
            )
            prev = h
            appended = True
        for r in rows:
            self._x(
                "INSERT INTO evidence (kind, key, repo, subject, occurred_us, "
                "collected_us, digest, raw_sha256, body) VALUES (:kind, :key, :repo, "
                ":subject, :occurred_us, :collected_us, :digest, :raw_sha256, :body) "
                "ON CONFLICT (kind, key) DO UPDATE SET repo = excluded.repo, "
                "subject = excluded.subject, occurred_us = excluded.occurred_us, "
                "collected_us = excluded.collected_us, digest = excluded.digest, "
                "raw_sha256 = excluded.raw_sha256, body = excluded.body",
                r,
            )
        if appended:
            sig, key_id = self._sign(_checkpoint_message(seq, prev, now))
            self._x(
                "INSERT INTO locker_checkpoints (seq, head_hash, signed_us, key_id, "
                "signature) VALUES (:seq, :h, :t, :k, :sig)",
                {"seq": seq, "h": prev, "t": now, "k": key_id, "sig": sig},
            )

    def _write(
        self, raws: Sequence[tuple[bytes, str, str]], records: Sequence[Record]
    ) -> list[str]:
        rows = [_row_of(r) for r in records]
        self._begin()
        try:
            self._append(raws, rows)
        except BaseException:
            self._end(commit=False)
            raise
        self._end(commit=True)
        return [r["digest"] for r in rows]


class SqliteGateStore(_DbApiGateStore):
    """The embedded SQLite store through ``sqlite3`` (no SQLAlchemy import)."""

    def __init__(self, path: Path, keys_dir: Path) -> None:
        import sqlite3

        self.path = path
        self.keys_dir = keys_dir
        try:
            self.conn = sqlite3.connect(
                f"file:{path}?mode=rw", uri=True, timeout=5.0, isolation_level=None
            )
            self.conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise StoreError(
                f"the database {path} cannot be opened ({exc})",
                expected="an existing, readable workspace database",
                hint="check --home / CHANGEPROOF_HOME, or run `changeproof collect` first",
            ) from None

    @classmethod
    def open(cls, path: Path, keys_dir: Path) -> SqliteGateStore | None:
        """The fast store, or None when the schema needs the general path (migrations)."""
        import sqlite3

        s = cls(path, keys_dir)
        if not s._schema_is_current(sqlite3.Error):
            s.close()
            return None
        return s

    def rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        import sqlite3

        try:
            return list(self.conn.execute(sql, params).fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"database error on {self.path}: {exc}") from None

    def close(self) -> None:
        self.conn.close()

    def _x(self, sql: str, params: dict[str, Any]) -> Any:
        return self.conn.execute(sql, params)

    def _begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")  # the write lock first: the chain head is then ours

    def _end(self, *, commit: bool) -> None:
        self.conn.execute("COMMIT" if commit else "ROLLBACK")

    def write(self, raws: Sequence[tuple[bytes, str, str]], records: Sequence[Record]) -> list[str]:
        """One transaction: raw payloads into the locker (objects, chain entries, a signed
        checkpoint) and the records into the evidence table. Returns the records' digests."""
        import sqlite3

        try:
            return self._write(raws, records)
        except sqlite3.OperationalError as exc:
            low = str(exc).lower()
            if "locked" in low or "busy" in low:
                raise StoreError(
                    f"the database {self.path} is locked by another changeproof process",
                    expected="exclusive write access for the duration of this command",
                    hint="wait for the other command to finish, then run this one again",
                ) from None
            raise StoreError(f"database error on {self.path}: {exc}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"database error on {self.path}: {exc}") from None


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def pg_driver(name: str | None = None) -> Any:
    """The DB-API module the gate talks to PostgreSQL with: ``psycopg2`` when installed
    (fast to import), else ``psycopg`` (3). ``name`` forces one (tests)."""
    if name in (None, "psycopg2"):
        try:
            import psycopg2

            return psycopg2
        except ImportError:
            if name is not None:
                raise
    import psycopg

    return psycopg


class PostgresGateStore(_DbApiGateStore):
    """PostgreSQL through a DB-API driver directly (see the module docstring): SQLAlchemy's
    import alone cost the gate about a third of a second. Chain appends take the locker's
    advisory lock, as the locker does."""

    def __init__(self, url: str, keys_dir: Path, driver: Any = None) -> None:
        self.db = driver or pg_driver()
        self.url = url
        self.keys_dir = keys_dir
        dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
        try:
            self.conn = self.db.connect(dsn, connect_timeout=10)
            self.conn.autocommit = True  # transactions are explicit: _begin / _end
        except self.db.Error as exc:
            raise StoreError(
                f"cannot connect to {_redact(url)} ({str(exc).strip().splitlines()[0]})",
                expected="a reachable PostgreSQL server holding this workspace's store",
                hint="check --db / CHANGEPROOF_DB and that the server is up",
            ) from None
        self.cur = self.conn.cursor()

    @classmethod
    def open(cls, url: str, keys_dir: Path, driver: Any = None) -> PostgresGateStore | None:
        """The direct store, or None when the schema needs the general path (migrations)."""
        s = cls(url, keys_dir, driver)
        if not s._schema_is_current(s.db.Error):
            s.close()
            return None
        return s

    def rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        try:
            rows = self._x(sql, params).fetchall()
        except self.db.Error as exc:
            raise StoreError(f"database error on {_redact(self.url)}: {exc}") from None
        # psycopg2 gives bytea as memoryview, psycopg 3 as bytes: the same to every caller
        return [tuple(bytes(v) if type(v) is memoryview else v for v in r) for r in rows]

    def close(self) -> None:
        self.conn.close()

    def _x(self, sql: str, params: dict[str, Any]) -> Any:
        self.cur.execute(_NAMED.sub(r"%(\1)s", sql), params)
        return self.cur

    def _begin(self) -> None:
        self.cur.execute("BEGIN")
        # serialise chain appends with every other writer (the locker's lock)
        self.cur.execute("SELECT pg_advisory_xact_lock(7303912)")

    def _end(self, *, commit: bool) -> None:
        self.cur.execute("COMMIT" if commit else "ROLLBACK")

    def write(self, raws: Sequence[tuple[bytes, str, str]], records: Sequence[Record]) -> list[str]:
        """As :meth:`SqliteGateStore.write`, on PostgreSQL."""
        try:
            return self._write(raws, records)
        except self.db.Error as exc:
            raise StoreError(f"database error on {_redact(self.url)}: {exc}") from None


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", url)


class SqlAlchemyGateStore:
    """Any supported database through the store and the real locker."""

    def __init__(self, store: Any, signer_factory: Any) -> None:
        self.store = store
        self._signer = signer_factory

    def rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        import sqlalchemy as sa

        from changeproof.store import _explain_db_error

        try:
            with self.store.connect() as conn:
                return [tuple(r) for r in conn.execute(sa.text(sql), params).all()]
        except sa.exc.SQLAlchemyError as exc:
            raise _explain_db_error(self.store.url, exc) from None

    def write(self, raws: Sequence[tuple[bytes, str, str]], records: Sequence[Record]) -> list[str]:
        from changeproof.locker import Locker

        out = []
        with self.store.writer(Locker(self._signer())) as w:
            for payload, kind, source in raws:
                w.put_raw(payload, kind=kind, source=source, media_type="application/json")
            for r in records:
                out.append(w.put(r))
        return out

    def close(self) -> None:
        self.store.close()


def open_gate_store(ws: Any) -> GateStore:
    """The fastest store that can serve this workspace (see the module docstring)."""
    if ws.is_sqlite:
        db = ws.sqlite_path
        if db is None or not db.exists():
            from changeproof.errors import NotFoundError

            raise NotFoundError(
                f"no evidence store in {ws.home}",
                expected="a workspace that has collected evidence",
                hint="run `changeproof collect git PATH` first, or pass --home / --db",
            )
        fast = SqliteGateStore.open(db, ws.keys_dir)
        if fast is not None:
            return fast
    elif ws.db_url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        direct = PostgresGateStore.open(ws.db_url, ws.keys_dir)
        if direct is not None:
            return direct
    store = ws.open_store(write=False)
    return SqlAlchemyGateStore(store, ws.signer)
