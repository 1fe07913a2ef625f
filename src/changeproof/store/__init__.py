"""The store: normalised evidence, the locker's tables and results, behind typed queries.

SQLite (WAL) in the workspace by default, PostgreSQL by URL. One write transaction per unit
of work: evidence rows, locker entries and the collector's cursor commit together or not at
all, so an interrupted command leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import operator
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from changeproof.errors import StoreError
from changeproof.evidence import Change, Record, record_type
from changeproof.store import schema

if TYPE_CHECKING:
    from changeproof.locker import Locker

SCHEMA_HEAD = "0004"
R = TypeVar("R", bound=Record)

_encoder = msgspec.json.Encoder(order="sorted")


def to_us(value: datetime) -> int:
    return int(value.timestamp() * 1_000_000)


def from_us(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1_000_000, tz=UTC)


def outcome_pairs(outcomes: str) -> list[tuple[str, str]]:
    """A result group's ``outcomes`` column (" CONTROL:outcome … ") as (control, outcome)
    pairs, in result order."""
    return [(c, o) for c, _, o in (t.rpartition(":") for t in outcomes.split())]


def now_utc() -> datetime:
    return datetime.now(UTC)


# New SQLite stores use 16 KiB pages: a change body (~3.5 KB) or a change's results (~1.8 KB)
# leave a 4 KiB page half empty; 16 KiB pages pack them, and the check writes (and
# checkpoints) ~30 % less CPU per result row. Existing stores keep their page size.
SQLITE_PAGE_SIZE = 16384


def in_scope(
    q: sa.Select[Any], kind: str, repo: str | None, start: datetime | None, end: datetime | None
) -> sa.Select[Any]:
    """``q`` narrowed to evidence of one kind (of a repository, occurred in [start, end))."""
    t = schema.evidence
    q = q.where(t.c.kind == kind)
    if repo is not None:
        q = q.where(t.c.repo == repo)
    if start is not None:
        q = q.where(t.c.occurred_us >= to_us(start))
    if end is not None:
        q = q.where(t.c.occurred_us < to_us(end))
    return q


def driver_rows(conn: sa.Connection, q: sa.ClauseElement) -> list[Any]:
    """``q``'s rows as the database driver returns them (tuples), without SQLAlchemy's
    per-row result processing: for reads of a million small rows of plain columns (integers,
    text), where that processing costs as much as the database. Errors are raised as
    SQLAlchemy raises any statement's."""
    from sqlalchemy.sql.compiler import SQLCompiler

    compiled = cast(
        SQLCompiler,
        q.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True}),
    )
    params = compiled.construct_params() or {}
    args: Any = (
        tuple(params[k] for k in compiled.positiontup or ()) if compiled.positional else params
    )
    dbapi_error = conn.dialect.loaded_dbapi.Error
    cur = conn.connection.cursor()
    try:
        cur.execute(compiled.string, args)
        return list(cur.fetchall())
    except dbapi_error as exc:
        raise sa.exc.DBAPIError.instance(compiled.string, args, exc, dbapi_error) from exc
    finally:
        cur.close()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")  # only an empty database takes it
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def _pg_session(dbapi_conn: Any, _record: Any) -> None:
    # lz4 for the values PostgreSQL compresses (a change's body is ≈ 3 KB of JSON), where the
    # server has it (14+, built with lz4). The body columns ask for it (migration 0003), but a
    # bulk write's COPY staging table does not inherit that, and a value compressed there is
    # stored as it is: pglz, which cost the server ≈ 20 % of a bulk insert's CPU and slowed
    # every read of a body. Values stored before stay pglz; both read the same.
    cur = dbapi_conn.cursor()
    try:
        cur.execute(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        )
        row = cur.fetchone()
        if row is not None and row[0]:
            cur.execute("SET default_toast_compression = 'lz4'")
    finally:
        cur.close()
    dbapi_conn.commit()  # (a SET rolled back with its transaction would be undone)


def _explain_db_error(url: str, exc: Exception) -> StoreError:
    text = str(getattr(exc, "orig", exc))
    low = text.lower()
    if "deadlock" in low:
        return StoreError(
            f"another changeproof process wrote the same records of {url} at the same moment, "
            "and the database stopped this command to let the other finish",
            expected="concurrent writers to touch different records (or to wait for each other)",
            hint="nothing of this command was kept; run it again",
        )
    if "locked" in low or "busy" in low:
        return StoreError(
            f"the database {url} is locked by another changeproof process",
            expected="exclusive write access for the duration of this command",
            hint="wait for the other command to finish, then run this one again",
        )
    if "readonly" in low or "read-only" in low or "permission denied" in low:
        return StoreError(
            f"the database {url} cannot be written ({text})",
            expected="a workspace folder and database file this user may write",
            hint="fix the permissions, or point --home / CHANGEPROOF_HOME at a writable folder",
        )
    if "unable to open" in low:
        return StoreError(
            f"the database {url} cannot be opened ({text})",
            expected="an existing, writable workspace folder",
            hint="check --home / CHANGEPROOF_HOME, or run `changeproof init`",
        )
    if "connection" in low or "could not connect" in low or "refused" in low:
        return StoreError(
            f"cannot reach the database {url} ({text.strip()})",
            expected="a running database server at that URL",
            hint="check the URL in --db / CHANGEPROOF_DB and that the server is up",
        )
    return StoreError(f"database error on {url}: {text.strip()}")


def _redact(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


class Store:
    """Typed access to one database. Create with :meth:`open`; close with :meth:`close`."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = _redact(url)

    # --- lifecycle -----------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        try:
            kwargs: dict[str, Any] = {}
            if url.startswith("sqlite"):
                kwargs["connect_args"] = {"timeout": 5}
            else:
                kwargs["pool_pre_ping"] = True
            engine = sa.create_engine(url, **kwargs)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise StoreError(
                f"cannot use the database URL {_redact(url)} ({exc})",
                expected="sqlite:///PATH or postgresql+psycopg://USER@HOST/DB",
                hint="check --db / CHANGEPROOF_DB; PostgreSQL needs `pip install changeproof[postgres]`",
            ) from None
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        elif engine.dialect.name == "postgresql":
            sa.event.listen(engine, "connect", _pg_session)
        store = cls(engine, url)
        if migrate:
            store.ensure_schema()
        return store

    def close(self) -> None:
        self.engine.dispose()

    @property
    def reopenable(self) -> bool:
        """Whether a new engine on this URL (another process's) reaches the same database:
        not for an in-memory SQLite database, which exists only in its own connection."""
        if self.dialect != "sqlite":
            return True
        url = self.engine.url
        name = url.database or ""
        return (
            name not in ("", ":memory:")
            and "mode=memory" not in name
            and url.query.get("mode") != "memory"
        )

    def reopen(self) -> Store:
        """The same database through a new engine with its own connections: what a forked
        process uses (the parent's connections are shared sockets and files after a fork,
        never to be touched by the child)."""
        return Store.open(self.engine.url.render_as_string(hide_password=False), migrate=False)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def schema_version(self) -> str | None:
        try:
            with self.engine.connect() as conn:
                insp = sa.inspect(conn)
                if not insp.has_table("alembic_version"):
                    return None
                row = conn.execute(sa.text("SELECT version_num FROM alembic_version")).first()
                return str(row[0]) if row else None
        except sa.exc.SQLAlchemyError as exc:
            raise _explain_db_error(self.url, exc) from None

    def ensure_schema(self) -> None:
        """Apply migrations only when needed: Alembic is imported only on a version change."""
        if self.schema_version() == SCHEMA_HEAD:
            return
        self.upgrade()

    def upgrade(self) -> str:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        try:
            with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # several processes may upgrade at once: one does it, the others wait
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(7303911)"))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except sa.exc.SQLAlchemyError as exc:
            raise _explain_db_error(self.url, exc) from None
        return SCHEMA_HEAD

    # --- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, locker: Locker | None = None) -> Iterator[Writer]:
        """One atomic unit of work. On any exception nothing of it is kept."""
        try:
            with self.engine.begin() as conn:
                w = Writer(conn, locker)
                yield w
                w.flush()
                if locker is not None:
                    locker.finish(conn)
        except sa.exc.OperationalError as exc:
            raise _explain_db_error(self.url, exc) from None
        except sa.exc.DatabaseError as exc:
            raise _explain_db_error(self.url, exc) from None

    @contextlib.contextmanager
    def hold(self, *scope: str) -> Iterator[None]:
        """Hold ``scope`` (e.g. ``"github", repo``) across several units of work: a collection
        that commits page by page. On PostgreSQL a second process holding the same scope waits
        here until the first lets go, then reads the cursors the first left (no page collected
        twice, no cursor moved back by a slower collector); other scopes run in parallel.

        A session-level advisory lock on a connection of its own, released on exit — and by
        the server if the process dies. Not re-entrant across connections: never :meth:`hold`
        a scope and then :meth:`Writer.claim` the same one. SQLite allows one writer at a time;
        nothing is needed there.
        """
        if self.dialect != "postgresql":
            yield
            return
        key = {"ns": CLAIM_LOCK_NS, "scope": "\x1f".join(scope)}
        try:
            conn = self.engine.connect()
            conn.execute(sa.text("SELECT pg_advisory_lock(:ns, hashtext(:scope))"), key)
            conn.commit()  # the lock is the session's, not the transaction's
        except sa.exc.SQLAlchemyError as exc:
            raise _explain_db_error(self.url, exc) from None
        try:
            yield
        finally:
            try:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:ns, hashtext(:scope))"), key)
                conn.commit()
            except sa.exc.SQLAlchemyError:
                conn.invalidate()  # a broken session drops its locks on the server's side
            finally:
                conn.close()

    # --- reading -------------------------------------------------------------------------

    def connect(self) -> contextlib.AbstractContextManager[Connection]:
        return self.engine.connect()

    def iter_records(
        self,
        cls: type[R],
        *,
        repo: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        batch: int = 5000,
    ) -> Iterator[tuple[str, R]]:
        """Stream records of one kind in time order as (digest, record); constant memory."""
        t = schema.evidence
        q = in_scope(sa.select(t.c.digest, t.c.body), cls.kind, repo, start, end)
        q = q.order_by(t.c.occurred_us, t.c.id)
        decoder = msgspec.json.Decoder(cls)
        try:
            with self.engine.connect() as conn:
                res = conn.execution_options(stream_results=True, yield_per=batch).execute(q)
                for part in res.partitions(batch):
                    for dig, body in part:
                        yield dig, decoder.decode(body)
        except sa.exc.SQLAlchemyError as exc:
            raise _explain_db_error(self.url, exc) from None

    def records(self, cls: type[R], **kw: Any) -> list[R]:
        return [r for _, r in self.iter_records(cls, **kw)]

    def get(self, cls: type[R], key: str) -> tuple[str, R] | None:
        t = schema.evidence
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.c.digest, t.c.body).where(t.c.kind == cls.kind, t.c.key == key)
            ).first()
        if row is None:
            return None
        return row[0], msgspec.json.decode(row[1], type=cls)

    def by_subject(self, cls: type[R], subject: str) -> list[tuple[str, R]]:
        t = schema.evidence
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.digest, t.c.body)
                .where(t.c.kind == cls.kind, t.c.subject == subject)
                .order_by(t.c.occurred_us, t.c.id)
            ).all()
        return [(r[0], msgspec.json.decode(r[1], type=cls)) for r in rows]

    def count(self, kind: str, repo: str | None = None) -> int:
        t = schema.evidence
        q = sa.select(sa.func.count()).select_from(t).where(t.c.kind == kind)
        if repo is not None:
            q = q.where(t.c.repo == repo)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def repos(self) -> list[str]:
        t = schema.evidence
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.c.repo).where(t.c.kind == Change.kind).distinct().order_by(t.c.repo)
            ).all()
        return [r[0] for r in rows if r[0]]

    def change_for_commit(self, repo: str, sha: str) -> tuple[str, Change] | None:
        ci = schema.commit_index
        # a full SHA is an equality lookup: LIKE cannot use the primary key index on
        # PostgreSQL databases with a non-C collation
        match = ci.c.sha == sha if len(sha) in (40, 64) else ci.c.sha.startswith(sha)
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(ci.c.change_key).where(ci.c.repo == repo, match).limit(1)
            ).first()
        if row is None:
            return None
        return self.get(Change, row[0])

    def cursor(self, source: str, scope: str) -> str | None:
        t = schema.collect_state
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.c.cursor).where(t.c.source == source, t.c.scope == scope)
            ).first()
        return None if row is None else str(row[0])

    def get_meta(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(schema.meta.c.value).where(schema.meta.c.key == key)
            ).first()
        return None if row is None else str(row[0])


def record_key(record: Record) -> tuple[str, str | None, str | None, datetime]:
    """(key, repo, subject, occurred_at) for a record: its natural identity in the store."""
    if isinstance(record, Change):
        cid = record.id  # (a property: computed once)
        return cid, record.repo, cid, record.merged_at
    prov = record.provenance  # type: ignore[attr-defined]
    repo = getattr(record, "repo", None)
    subject = getattr(record, "subject", None)
    rid = getattr(record, "id", None)
    if rid is None:
        rid = (
            "|".join(
                str(getattr(record, f, ""))
                for f in ("repo", "branch", "team")
                if hasattr(record, f)
            )
            + "|"
            + prov.occurred_at.isoformat()
        )
    if subject is None:
        subject = getattr(record, "commit_sha", None)
    return str(rid), repo, subject, prov.occurred_at


def evidence_row(record: Record) -> dict[str, Any]:
    """The evidence table's row for a record, as :meth:`Writer.put` stores it."""
    body = _encoder.encode(record)
    key, repo, subject, occurred = record_key(record)
    prov = record.provenance  # type: ignore[attr-defined]
    return {
        "kind": record.kind,
        "key": key,
        "repo": repo,
        "subject": subject,
        "occurred_us": to_us(occurred),
        "collected_us": to_us(prov.collected_at),
        "digest": hashlib.sha256(body).hexdigest(),
        "raw_sha256": prov.raw_sha256,
        "body": body,
    }


# advisory lock namespace (first key of the two-int form) for Writer.claim
CLAIM_LOCK_NS = 7303913
# from this many rows on, PostgreSQL batches go through binary COPY (~3x executemany)
COPY_MIN_ROWS = 200


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pg_copy_types(table: sa.Table, cols: list[str]) -> list[str] | None:
    """PostgreSQL type names for a binary COPY of ``cols``; None if one is not covered."""
    out = []
    for c in cols:
        t = table.c[c].type
        if isinstance(t, sa.BigInteger):
            out.append("int8")
        elif isinstance(t, sa.Integer):
            out.append("int4")
        elif isinstance(t, sa.Boolean):
            out.append("bool")
        elif isinstance(t, sa.LargeBinary):
            out.append("bytea")
        elif isinstance(t, sa.String):
            out.append("text")
        else:
            return None
    return out


def _pg_copy(
    conn: Connection, table: str, cols: list[str], types: list[str], rows: list[dict[str, Any]]
) -> None:
    # the DBAPI connection of this very transaction: the COPY commits or rolls back with it
    raw = conn.connection.driver_connection
    assert raw is not None
    sql = f"COPY {_q(table)} ({', '.join(_q(c) for c in cols)}) FROM STDIN (FORMAT BINARY)"
    with raw.cursor() as cur, cur.copy(sql) as cp:
        cp.set_types(types)
        for r in rows:
            cp.write_row([r[c] for c in cols])


def _pg_copy_upsert(
    conn: Connection,
    table: sa.Table,
    rows: list[dict[str, Any]],
    types: list[str],
    keys: tuple[str, ...],
    only_if_changed: str | None,
) -> None:
    """COPY into a transaction-local staging table, then one INSERT … SELECT … ON CONFLICT."""
    cols = list(rows[0])
    stage = f"cp_stage_{table.name}"
    collist = ", ".join(_q(c) for c in cols)
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE IF NOT EXISTS {_q(stage)} ON COMMIT DROP AS "
        f"SELECT {collist} FROM {_q(table.name)} WITH NO DATA"
    )
    _pg_copy(conn, stage, cols, types, rows)
    update = [c for c in cols if c not in keys]
    conflict = f"ON CONFLICT ({', '.join(_q(k) for k in keys)}) "
    if update:
        conflict += "DO UPDATE SET " + ", ".join(f"{_q(c)} = EXCLUDED.{_q(c)}" for c in update)
        if only_if_changed is not None:
            c = _q(only_if_changed)
            conflict += f" WHERE {_q(table.name)}.{c} IS DISTINCT FROM EXCLUDED.{c}"
    else:
        conflict += "DO NOTHING"
    # key order: concurrent writers lock rows in one order
    order = ", ".join(_q(k) for k in keys)
    conn.exec_driver_sql(
        f"INSERT INTO {_q(table.name)} ({collist}) "
        f"SELECT {collist} FROM {_q(stage)} ORDER BY {order} {conflict}"
    )
    conn.exec_driver_sql(f"DELETE FROM {_q(stage)}")


# column types SQLite's driver takes as they come (no SQLAlchemy bind processing needed)
_PLAIN_TYPES = (sa.String, sa.Integer, sa.LargeBinary)


@functools.lru_cache(maxsize=256)
def _sqlite_sql(
    table: sa.Table,
    cols: tuple[str, ...],
    keys: tuple[str, ...] | None,
    only_if_changed: str | None,
    nrows: int = 1,
) -> str | None:
    """The SQLite INSERT (``keys``: … ON CONFLICT upsert) for ``nrows`` rows of ``cols``, run
    through the driver directly; None if a column's type needs SQLAlchemy's processing (then
    the generic path runs). SQLAlchemy's per-row parameter processing costs more than SQLite's
    insert."""
    for c in cols:
        if not isinstance(table.c[c].type, _PLAIN_TYPES):
            return None
    one = f"({', '.join('?' for _ in cols)})"
    sql = (
        f"INSERT INTO {_q(table.name)} ({', '.join(_q(c) for c in cols)}) "
        f"VALUES {', '.join(one for _ in range(nrows))}"
    )
    if keys is None:
        return sql
    sql += f" ON CONFLICT ({', '.join(_q(k) for k in keys)}) "
    update = [c for c in cols if c not in keys]
    if not update:
        return sql + "DO NOTHING"
    sql += "DO UPDATE SET " + ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in update)
    if only_if_changed is not None:
        c = _q(only_if_changed)
        sql += f" WHERE {_q(table.name)}.{c} IS NOT excluded.{c}"  # SQLite's IS DISTINCT FROM
    return sql


def _sqlite_fast(
    conn: Connection,
    table: sa.Table,
    rows: list[dict[str, Any]],
    keys: tuple[str, ...] | None,
    only_if_changed: str | None = None,
) -> bool:
    if conn.dialect.name != "sqlite":
        return False
    cols = tuple(rows[0])
    sql = _sqlite_sql(table, cols, keys, only_if_changed)
    if sql is None:
        return False
    if len(cols) == 1:
        params = [(r[cols[0]],) for r in rows]
    else:
        row_of = operator.itemgetter(*cols)  # a tuple per row, positional like the SQL
        params = [row_of(r) for r in rows]
    # Many rows per statement: the driver releases the GIL around each statement's step, and
    # a writer thread (Writer.pipelined) then waits up to the 5 ms switch interval to get it
    # back while the caller parses; one step per batch, not per row, makes that wait rare.
    # Same rows in the same order, so the same outcome.
    per = _sqlite_rows_per_statement(conn, len(cols))
    full = len(params) - len(params) % per if per > 1 else 0
    if full:
        many = _sqlite_sql(table, cols, keys, only_if_changed, per)
        assert many is not None  # (same columns as ``sql``)
        flat = itertools.chain.from_iterable
        conn.exec_driver_sql(many, [tuple(flat(params[i : i + per])) for i in range(0, full, per)])
    if full < len(params):
        conn.exec_driver_sql(sql, params[full:])
    return True


# rows per multi-row INSERT on SQLite, within its limit on bound variables
SQLITE_ROWS_PER_STATEMENT = 2000


def _sqlite_rows_per_statement(conn: Connection, ncols: int) -> int:
    import sqlite3

    raw = conn.connection.driver_connection
    limit = raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if raw is not None else 999
    return max(1, min(SQLITE_ROWS_PER_STATEMENT, limit // ncols))


def bulk_insert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """INSERT many rows (all with the same columns): binary COPY on PostgreSQL."""
    if not rows:
        return
    if _sqlite_fast(conn, table, rows, None):
        return
    if conn.dialect.name == "postgresql" and len(rows) >= COPY_MIN_ROWS:
        cols = list(rows[0])
        types = _pg_copy_types(table, cols)
        if types is not None:
            _pg_copy(conn, table.name, cols, types, rows)
            return
    conn.execute(sa.insert(table), rows)


def upsert(
    conn: Connection,
    table: sa.Table,
    rows: list[dict[str, Any]],
    keys: tuple[str, ...],
    *,
    only_if_changed: str | None = None,
) -> None:
    """INSERT … ON CONFLICT (keys) DO UPDATE, on SQLite and PostgreSQL alike.

    Unlike delete-then-insert this never fails with a unique violation when another
    transaction commits the same key first: PostgreSQL waits for it and then updates.
    ``only_if_changed``: a column; rows whose value is unchanged are left untouched.
    """
    if not rows:
        return
    if _sqlite_fast(conn, table, rows, keys, only_if_changed):
        return
    name = conn.dialect.name
    if name == "postgresql" and len(rows) >= COPY_MIN_ROWS:
        types = _pg_copy_types(table, list(rows[0]))
        if types is not None:
            _pg_copy_upsert(conn, table, rows, types, keys, only_if_changed)
            return
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table)
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table)
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise StoreError(f"unsupported database dialect {name!r}")
    cols = [c for c in rows[0] if c not in keys]
    where = None
    if only_if_changed is not None:
        where = table.c[only_if_changed].is_distinct_from(stmt.excluded[only_if_changed])
    if cols:
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={c: stmt.excluded[c] for c in cols},
            where=where,
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    conn.execute(stmt, rows)


# SQLite page cache of a bulk writer's connection (KiB; the default is 2 MB)
PIPELINED_SQLITE_CACHE_KIB = 65536


@contextlib.contextmanager
def bulk_write_pragmas(conn: sa.Connection) -> Iterator[None]:
    """SQLite settings for a long bulk write on ``conn``, restored afterwards (the connection
    goes back to the pool). A bulk write touches index pages all over: with the default 2 MB
    page cache it writes many of them out again and again (a third of a collect's time at
    100k rows). Its multi-row statements keep a statement journal of the pages they change
    again; in memory, not in a temporary file (measured at a million checked changes: the
    check's writer spent half as much system time). Nothing on other databases."""
    if conn.dialect.name != "sqlite":
        yield
        return
    cache = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    temp = conn.exec_driver_sql("PRAGMA temp_store").scalar()
    conn.exec_driver_sql(f"PRAGMA cache_size={-PIPELINED_SQLITE_CACHE_KIB}")
    conn.exec_driver_sql("PRAGMA temp_store=MEMORY")
    try:
        yield
    finally:
        try:
            conn.exec_driver_sql(f"PRAGMA temp_store={int(temp or 0)}")
            conn.exec_driver_sql(f"PRAGMA cache_size={int(cache or -2000)}")
        except sa.exc.SQLAlchemyError:
            # never in place of the error that ended the write; the pool drops the connection
            conn.invalidate()


def _call(fn: Callable[..., None], *args: Any, **kw: Any) -> None:
    fn(*args, **kw)


class _Pipeline:
    """Write calls run in order on one thread, on the unit of work's own connection.

    The drivers release the GIL while the database stores rows (SQLite's step, PostgreSQL's
    round trips), so the caller prepares the next batch on one core while the previous one
    is stored on the other. The first error stops the writing and is re-raised to the caller.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Callable[..., None], tuple[Any, ...], dict[str, Any]]] = (
            queue.Queue(maxsize=8)
        )
        self._error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._drain, name="store-writer", daemon=True)
        self._thread.start()

    def __call__(self, fn: Callable[..., None], *args: Any, **kw: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((fn, args, kw))

    def _drain(self) -> None:
        while True:
            fn, args, kw = self._queue.get()
            if fn is _call:  # the end marker
                return
            if self._error is None and not self._stop:
                try:
                    fn(*args, **kw)
                except BaseException as exc:  # re-raised in the caller's thread
                    self._error = exc

    def close(self, *, abort: bool = False) -> None:
        """Wait until everything queued is written (``abort``: skip what is not started)."""
        self._stop = abort
        self._queue.put((_call, (), {}))
        self._thread.join()
        if self._error is not None and not abort:
            raise self._error


class Writer:
    """Buffers rows of one transaction and writes them in batches."""

    def __init__(self, conn: Connection, locker: Locker | None) -> None:
        self.conn = conn
        self.locker = locker
        self._evidence: list[dict[str, Any]] = []
        self._commits: list[dict[str, Any]] = []
        self.written = 0
        # runs a batch write: directly, or on the writer thread of :meth:`pipelined`
        self._run: Callable[..., None] = _call

    @contextlib.contextmanager
    def pipelined(self) -> Iterator[Writer]:
        """Within the block, batches are written by a second thread (in order, in this same
        transaction) while the caller prepares the next; the block ends once all is written.

        Inside, use only put, put_raw, index_commits, set_cursor and set_meta: ``conn``
        belongs to the writer thread until the block ends. An error on either side ends the
        block with that error, and the unit of work then keeps nothing.
        """
        if self._run is not _call:  # already pipelined
            yield self
            return
        with bulk_write_pragmas(self.conn):
            pipe = _Pipeline()
            self._run = pipe
            if self.locker is not None:
                self.locker.run = pipe
            ok = False
            try:
                yield self
                self.flush()
                ok = True
            finally:
                self._run = _call
                if self.locker is not None:
                    self.locker.run = None
                pipe.close(abort=not ok)

    def claim(self, *scope: str) -> None:
        """Hold ``scope`` (e.g. ``"repo", name``) for the rest of this unit of work.

        Call it before reading the cursor a collection starts from: on PostgreSQL a second
        process claiming the same scope waits here until the first commits, then sees its
        cursor and records (so two collectors of one repository neither duplicate nor lose
        work); different scopes run in parallel. A transaction-scoped advisory lock: released
        at commit or rollback, even if the process dies. SQLite allows one writer at a time
        anyway, so nothing is needed there.
        """
        if self.conn.dialect.name == "postgresql":
            self.conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(:ns, hashtext(:scope))"),
                {"ns": CLAIM_LOCK_NS, "scope": "\x1f".join(scope)},
            )

    def put_raw(
        self,
        payload: bytes,
        *,
        kind: str,
        source: str,
        media_type: str = "text/plain",
        sha256: str | None = None,
    ) -> str:
        """Keep ``payload`` in the locker; returns its SHA-256. ``sha256``: the digest when the
        caller already computed it over exactly these bytes (e.g. in a parser process)."""
        if self.locker is None:
            raise StoreError("internal: this unit of work has no locker to keep raw evidence in")
        return self.locker.put(
            self.conn, payload, kind=kind, source=source, media_type=media_type, sha256=sha256
        )

    def put(self, record: Record, *, seq: int | None = None) -> str:
        """Store a record (latest view per key). ``seq``: first-parent position of a change."""
        row = evidence_row(record)
        key: str = row["key"]
        dig: str = row["digest"]
        self._evidence.append(row)
        if isinstance(record, Change):
            base = seq if seq is not None else to_us(record.merged_at) * 100
            for i, sha in enumerate(record.landed_shas):
                self._commits.append(
                    {
                        "repo": record.repo,
                        "sha": sha,
                        "branch": record.branch,
                        "change_key": key,
                        "seq": base + i,
                    }
                )
        if len(self._evidence) >= 2000:
            self.flush()
        return dig

    def put_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        """Store records already made into rows by :func:`evidence_row` (e.g. in a parser
        process): exactly what :meth:`put` of those records stores. Not for changes."""
        for row in rows:
            self._evidence.append(row)
            if len(self._evidence) >= 2000:
                self.flush()

    def write_raw(self) -> None:
        """Write the raw payloads this unit of work holds now rather than at its end (a
        caller that would otherwise wait, e.g. for parser processes, moves that work out of
        the commit, where everything else waits for it). Stored payloads are found and
        listed by digest, so when they are written changes nothing a reader sees; evidence
        rows are not written early: their row order breaks ties in time order."""
        if self.locker is not None:
            self.locker.flush(self.conn)

    def index_commits(self, rows: Iterable[dict[str, Any]]) -> None:
        self._commits.extend(rows)

    def flush(self) -> None:
        if self._evidence:
            # latest normalised view per (kind, key); history stays in the locker.
            # De-duplicate within the batch (keeping the last: one statement may not touch a
            # row twice) and write in key order, so concurrent writers lock rows in one order.
            uniq: dict[tuple[str, str], dict[str, Any]] = {}
            for r in self._evidence:
                uniq[(r["kind"], r["key"])] = r
            rows = [uniq[k] for k in sorted(uniq)]
            self._run(
                upsert, self.conn, schema.evidence, rows, ("kind", "key"), only_if_changed="digest"
            )
            self.written += len(uniq)
            self._evidence.clear()
        if self._commits:
            cuniq = {(r["repo"], r["sha"]): r for r in self._commits}
            crows = [cuniq[k] for k in sorted(cuniq)]
            self._run(upsert, self.conn, schema.commit_index, crows, ("repo", "sha"))
            self._commits.clear()

    def set_cursor(self, source: str, scope: str, cursor: str, *, complete: bool = True) -> None:
        row = {
            "source": source,
            "scope": scope,
            "cursor": cursor,
            "updated_us": int(time.time() * 1_000_000),
            "complete": complete,
        }
        self._run(upsert, self.conn, schema.collect_state, [row], ("source", "scope"))

    def set_meta(self, key: str, value: str) -> None:
        self._run(upsert, self.conn, schema.meta, [{"key": key, "value": value}], ("key",))


def decode_record(kind: str, body: bytes) -> Record:
    return msgspec.json.decode(body, type=record_type(kind))
