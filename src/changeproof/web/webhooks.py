"""Webhook deliveries: signature checks, the locker envelope, group commit and the worker.

An accepted delivery is written — its raw envelope into the locker and a row into
``webhook_deliveries`` — in ONE transaction before the receiver answers 2xx. Requests hand
their delivery to :class:`Ingestor`, one thread that commits whatever has queued up as a
batch (group commit): many deliveries share one fsync and one signed checkpoint, and each
request still waits for the commit that contains it. :class:`Processor` then maps pending
deliveries to evidence asynchronously (on PostgreSQL several servers can share the queue:
``SELECT … FOR UPDATE SKIP LOCKED``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from changeproof.locker import Locker, Signer
from changeproof.settings import Settings
from changeproof.store import Store, Writer, schema

log = logging.getLogger("changeproof.web")

MAX_BODY = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB; anything larger is refused
ENVELOPE_MAGIC = b"changeproof-webhook-v1\n"
MEDIA_TYPE = "application/vnd.changeproof.webhook"

GITHUB_EVENTS = frozenset(
    {
        "pull_request",
        "pull_request_review",
        "push",
        "check_run",
        "check_suite",
        "status",
        "deployment",
        "deployment_status",
        "workflow_run",
        "branch_protection_rule",
        "repository_ruleset",
    }
)
# X-Gitlab-Event header → object kind
GITLAB_EVENTS = {
    "Merge Request Hook": "merge_request",
    "Pipeline Hook": "pipeline",
    "Deployment Hook": "deployment",
}
# the headers kept with the body: what identifies and authenticates a delivery
KEPT_HEADERS = (
    "content-type",
    "user-agent",
    "x-github-delivery",
    "x-github-event",
    "x-github-hook-id",
    "x-github-hook-installation-target-id",
    "x-github-hook-installation-target-type",
    "x-hub-signature-256",
    "x-gitlab-event",
    "x-gitlab-event-uuid",
    "x-gitlab-webhook-uuid",
    "x-gitlab-instance",
)


def github_signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def github_signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    """X-Hub-Signature-256 check in constant time (no early exit on the first bad byte)."""
    if not header:
        return False
    return hmac.compare_digest(github_signature(secret, body).encode(), header.encode())


def gitlab_token_ok(expected: bytes, given: str | None) -> bool:
    if not given:
        return False
    return hmac.compare_digest(expected, given.encode())


@dataclass(frozen=True)
class Delivery:
    source: str  # github | gitlab
    delivery_id: str
    event: str
    headers: tuple[tuple[str, str], ...]  # the kept headers, lower-case names, sorted
    body: bytes

    @functools.cached_property
    def _envelope(self) -> bytes:
        return self._build_envelope()

    def envelope(self) -> bytes:
        return self._envelope

    @functools.cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self._envelope).hexdigest()

    def _build_envelope(self) -> bytes:
        """The locker's bytes: kept headers, a blank line, the exact body as received.

        Deterministic (no receive time): the same delivery always hashes the same, so a
        redelivery racing its original on another server is still kept once.
        """
        head = [f"source: {self.source}", f"delivery: {self.delivery_id}", f"event: {self.event}"]
        head += [f"{k}: {v}" for k, v in self.headers]
        return ENVELOPE_MAGIC + "\n".join(head).encode() + b"\n\n" + self.body


def parse_envelope(data: bytes) -> tuple[dict[str, str], bytes]:
    if not data.startswith(ENVELOPE_MAGIC):
        raise ValueError("not a changeproof webhook envelope")
    head, _, body = data[len(ENVELOPE_MAGIC) :].partition(b"\n\n")
    headers = {}
    for line in head.decode().split("\n"):
        k, _, v = line.partition(": ")
        headers[k] = v
    return headers, body


def kept_headers(get: Callable[[str], str | None]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k in KEPT_HEADERS if (v := get(k)) is not None)


def describe(source: str, event: str, body: bytes) -> tuple[str | None, str | None]:
    """(action, repository) from a payload, for the queue's columns; never raises."""
    try:
        data = json.loads(body)
    except ValueError:
        return None, None
    return describe_data(source, data)


def describe_data(source: str, data: Any) -> tuple[str | None, str | None]:
    """:func:`describe` of a payload already parsed."""
    if not isinstance(data, dict):
        return None, None
    if source == "github":
        repo = (data.get("repository") or {}).get("full_name")
        action = data.get("action")
    else:
        repo = (data.get("project") or {}).get("path_with_namespace")
        action = (data.get("object_attributes") or {}).get("action") or data.get("status")
    return (
        str(action)[:64] if action else None,
        str(repo)[:256] if isinstance(repo, str) else None,
    )


@dataclass(slots=True)
class _Item:
    delivery: Delivery
    # an asyncio future (a receiver on the event loop) or a thread-safe one (anyone else)
    future: asyncio.Future[str] | Future[str]


class Ingestor:
    """One writer thread committing queued deliveries in batches (group commit).

    ``submit`` (any thread) and ``submit_async`` (on the event loop) give a future that
    resolves to ``"accepted"`` (new, now committed) or ``"duplicate"`` (this delivery id was
    committed before), or fails if the commit failed — the receiver then answers 503 and the
    sender retries: nothing was kept. A future resolves only after the commit that contains
    its delivery: no 2xx before the delivery is durably in the locker.
    """

    def __init__(
        self,
        store: Store,
        signer: Signer,
        lock: threading.Lock,
        *,
        max_batch: int = 500,
        linger_s: float = 0.005,
    ) -> None:
        self.store = store
        self.linger_s = linger_s
        self.signer = signer
        self.lock = lock
        self.max_batch = max_batch
        # SimpleQueue: C-implemented, no Condition objects per put/get (one put per delivery)
        self._q: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.on_commit: Callable[[], None] = lambda: None
        self.batches = 0
        self.last_commit = 0.0

    def busy(self, within_s: float = 0.05) -> bool:
        """Deliveries are arriving now (a commit in the last ``within_s`` seconds)."""
        return time.monotonic() - self.last_commit < within_s

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webhook-ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def submit(self, d: Delivery) -> Future[str]:
        fut: Future[str] = Future()
        self._q.put(_Item(d, fut))
        return fut

    def submit_async(self, d: Delivery) -> asyncio.Future[str]:
        """From a coroutine on the running loop: the batch's results come back to the loop
        in one call (one wake-up per commit, not one per delivery)."""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._q.put(_Item(d, fut))
        return fut

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = [first]
            stop = False
            # linger up to 5 ms for more: under load a batch fills, one commit serves many
            until = time.monotonic() + self.linger_s
            while len(batch) < self.max_batch:
                try:
                    left = until - time.monotonic()
                    nxt = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Item]) -> None:
        outcome: list[str] | None = None
        error: Exception | None = None
        try:
            outcome = self.write(self.store, self.signer, [i.delivery for i in batch], self.lock)
        except Exception as exc:  # the whole batch rolled back: every sender retries
            log.exception("webhook batch of %d not stored", len(batch))
            error = exc
        else:
            self.batches += 1
            self.last_commit = time.monotonic()
        loops: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[str], str | None]]] = {}
        for n, i in enumerate(batch):
            status = outcome[n] if outcome is not None else None
            if isinstance(i.future, asyncio.Future):
                loops.setdefault(i.future.get_loop(), []).append((i.future, status))
            elif status is not None:
                i.future.set_result(status)
            else:
                assert error is not None
                i.future.set_exception(error)
        for loop, settle in loops.items():
            # a closed loop (shutdown): nobody is waiting any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, settle, error)
        if outcome is not None:
            self.on_commit()

    @staticmethod
    def write(
        store: Store, signer: Signer, deliveries: list[Delivery], lock: threading.Lock
    ) -> list[str]:
        """Store new deliveries (envelope + queue row) in one transaction; report each."""
        now = int(time.time() * 1_000_000)
        first: dict[tuple[str, str], Delivery] = {}
        for x in deliveries:
            first.setdefault((x.source, x.delivery_id), x)
        # key order: concurrent servers (PostgreSQL) lock the same queue rows in one order
        rows = [
            {
                "source": x.source,
                "delivery_id": x.delivery_id,
                "event": x.event[:64],
                "action": None,  # filled in by the processor
                "repo": None,
                "received_us": now,
                "raw_sha256": x.sha256,
                "status": "pending",
                "attempts": 0,
                "processed_us": None,
                "recollect": False,
                "detail": None,
            }
            for _, x in sorted(first.items())
        ]
        out: list[str] = []
        with lock, store.writer(Locker(signer)) as w:
            # the queue rows first, in one statement that also de-duplicates: only the rows
            # it inserted come back. On SQLite this takes the write lock before the locker
            # reads its chain head; on PostgreSQL a concurrent server inserting the same
            # delivery waits on the unique key here, then finds it inserted and skips it.
            new = {(r[0], r[1]) for r in w.conn.execute(_insert_new(w.conn), rows)}
            for x in deliveries:
                k = (x.source, x.delivery_id)
                if k not in new:
                    out.append("duplicate")
                    continue
                new.discard(k)  # the same delivery twice in one batch: the second is a duplicate
                out.append("accepted")
                w.put_raw(
                    x.envelope(), kind=f"webhook.{x.source}", source=x.source,
                    media_type=MEDIA_TYPE, sha256=x.sha256,
                )  # fmt: skip
        return out


def _settle(settle: list[tuple[asyncio.Future[str], str | None]], error: Exception | None) -> None:
    for fut, status in settle:
        if fut.done():  # the sender went away and the request was cancelled
            continue
        if status is not None:
            fut.set_result(status)
        else:
            assert error is not None
            fut.set_exception(error)


@functools.cache
def _insert_new_for(dialect: str) -> Any:
    d = schema.webhook_deliveries
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(d)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(d)
    return stmt.on_conflict_do_nothing(index_elements=["source", "delivery_id"]).returning(
        d.c.source, d.c.delivery_id
    )


def _insert_new(conn: sa.Connection) -> Any:
    """INSERT … ON CONFLICT DO NOTHING RETURNING the keys inserted (built once per dialect:
    SQLAlchemy's statement cache then skips compiling it per batch)."""
    return _insert_new_for(conn.dialect.name)


class Processor:
    """Maps pending deliveries to evidence, in the background, a batch per transaction."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        lock: threading.Lock,
        *,
        batch: int = 100,
        idle_s: float = 0.5,
        busy: Callable[[], bool] = lambda: False,
        max_defer_s: float = 2.0,
    ) -> None:
        self.busy = busy
        self.max_defer_s = max_defer_s
        self.store = store
        self.settings = settings
        self.lock = lock
        self.batch = batch
        self.idle_s = idle_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.processed = 0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webhook-process", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        caught_up = time.monotonic()  # when the queue was last seen empty
        while not self._stop.is_set():
            busy = self.busy()
            if busy and time.monotonic() - caught_up < self.max_defer_s:
                # intake first: during a burst, mapping waits (it is asynchronous anyway),
                # but never more than max_defer_s behind, or steady traffic would starve it
                self._stop.wait(0.1)
                continue
            try:
                n = self.run_once()
            except Exception:
                log.exception("webhook processing failed; retrying")
                n = 0
            if n < self.batch:  # a short batch: nothing else is pending now
                caught_up = time.monotonic()
            if n == 0:
                self._wake.wait(self.idle_s)
                self._wake.clear()
            elif busy:
                # catching up while deliveries arrive: let the intake take the lock between
                # batches (threading.Lock is not fair; the releasing thread could win again)
                self._stop.wait(0.02)

    def run_once(self) -> int:
        """Claim and process up to ``batch`` pending deliveries; returns how many."""
        from changeproof.web.mapping import map_delivery

        d, o = schema.webhook_deliveries, schema.locker_objects
        with self.lock, self.store.engine.begin() as conn:
            q = (
                sa.select(d.c.id, d.c.source, d.c.event, d.c.raw_sha256, d.c.received_us)
                .where(d.c.status == "pending")
                .order_by(d.c.id)
                .limit(self.batch)
            )
            if conn.dialect.name == "postgresql":
                # several servers share the queue: each claims rows the others have not
                q = q.with_for_update(skip_locked=True)
            else:
                # SQLite: a (no-op) write first takes the database's write lock, so a second
                # process claiming at the same moment waits and then sees these rows done
                conn.execute(sa.update(d).where(d.c.id == -1).values(attempts=d.c.attempts))
            rows = conn.execute(q).all()
            if not rows:
                return 0
            bodies = dict(
                conn.execute(
                    sa.select(o.c.digest, o.c.body).where(
                        o.c.digest.in_({r.raw_sha256 for r in rows})
                    )
                ).all()
            )
            w = Writer(conn, None)
            now = int(time.time() * 1_000_000)
            updates: list[dict[str, Any]] = []
            for r in rows:
                action = repo = None
                try:
                    _, body = parse_envelope(bytes(bodies[r.raw_sha256]))
                    try:  # parsed once for the queue's columns and the mapping
                        data = json.loads(body)
                    except ValueError:  # map_delivery raises it again (kept as the error)
                        data = _UNPARSED
                    action, repo = describe_data(r.source, data)
                    m = map_delivery(
                        r.source, r.event, body, r.raw_sha256, r.received_us,
                        lambda key: _current_deployment(conn, key), self.settings,
                        data=data,
                    )  # fmt: skip
                    if m.records:
                        for rec in m.records:
                            w.put(rec)
                        w.flush()  # a later delivery of this batch reads it back
                    status, recollect, detail = "done", m.recollect, m.note
                except Exception as exc:  # a payload we cannot map stays visible as an error
                    status, recollect, detail = "error", False, f"{type(exc).__name__}: {exc}"
                updates.append(
                    {"_id": r.id, "_status": status, "_recollect": recollect,
                     "_detail": detail[:2000], "_action": action, "_repo": repo}
                )  # fmt: skip
            conn.execute(
                sa.update(d)
                .where(d.c.id == sa.bindparam("_id"))
                .values(
                    status=sa.bindparam("_status"),
                    recollect=sa.bindparam("_recollect"),
                    detail=sa.bindparam("_detail"),
                    action=sa.bindparam("_action"),
                    repo=sa.bindparam("_repo"),
                    attempts=d.c.attempts + 1,
                    processed_us=now,
                ),
                updates,
            )
            w.flush()
        self.processed += len(rows)
        return len(rows)


_UNPARSED = object()  # not a dict: describe_data ignores it, map_delivery parses the body


def _current_deployment(conn: sa.Connection, key: str) -> Any:
    from changeproof.evidence import Deployment

    e = schema.evidence
    row = conn.execute(
        sa.select(e.c.body).where(e.c.kind == Deployment.kind, e.c.key == key)
    ).first()
    if row is None:
        return None
    import msgspec

    return msgspec.json.decode(row[0], type=Deployment)
