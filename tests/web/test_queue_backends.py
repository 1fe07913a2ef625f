"""Intake and the processing queue on both backends (SQLite, and PostgreSQL when
CHANGEPROOF_TEST_PG_URL is set): exactly-once intake, concurrent claims, tokens."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import sqlalchemy as sa

from changeproof.evidence import Deployment
from changeproof.locker import verify_locker
from changeproof.settings import Settings
from changeproof.store import Store, schema
from changeproof.web import tokens
from changeproof.web.webhooks import Delivery, Ingestor, Processor
from changeproof.workspace import Workspace

FIXTURES = Path(__file__).parents[1] / "fixtures" / "webhooks" / "github"


def delivery(event: str, name: str, did: str | None = None) -> Delivery:
    body = (FIXTURES / event / name).read_bytes()
    return Delivery("github", did or str(uuid.uuid4()), event, (("x-github-event", event),), body)


def test_intake_is_exactly_once_and_the_queue_is_shared(workspace: Workspace) -> None:
    store = Store.open(workspace.db_url)
    lock = threading.Lock()
    signer = workspace.signer()
    try:
        batch = [delivery("push", "payload.json", f"p-{i}") for i in range(30)]
        batch.append(delivery("deployment_status", "payload.json", "dep-1"))
        batch.append(batch[0])  # the same delivery twice in one batch
        out = Ingestor.write(store, signer, batch, lock)
        assert out.count("accepted") == 31 and out[-1] == "duplicate"
        again = Ingestor.write(store, signer, batch[:5], threading.Lock())
        assert again == ["duplicate"] * 5
        # two workers (as two servers would) drain the queue without processing a row twice
        procs = [Processor(store, Settings(), threading.Lock(), batch=4) for _ in range(2)]
        done = [0, 0]

        def drain(i: int) -> None:
            while n := procs[i].run_once():
                done[i] += n

        threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert sum(done) == 31
        d = schema.webhook_deliveries
        with store.connect() as conn:
            rows = conn.execute(sa.select(d.c.status, d.c.attempts, d.c.repo)).all()
        assert len(rows) == 31
        assert {(r.status, r.attempts) for r in rows} == {("done", 1)}
        assert {r.repo for r in rows} == {"Codertocat/Hello-World"}
        hit = store.get(Deployment, "github:Codertocat/Hello-World:145988746")
        assert hit is not None and hit[1].status == "success"
        rep = verify_locker(store, workspace.public_key_pem())
        assert rep.ok, rep.problems
        assert rep.entries == 31
    finally:
        store.close()


def test_tokens_hashed_scoped_and_revocable(workspace: Workspace) -> None:
    store = Store.open(workspace.db_url)
    try:
        tid, token = tokens.create(store, "gate", "deploy")
        info = tokens.lookup(store, token)
        assert info is not None and info.scope == "gate" and info.id == tid
        with store.connect() as conn:
            stored = conn.execute(sa.select(schema.api_tokens.c.token_sha256)).scalars().all()
        assert token not in stored and tokens.digest(token) in stored
        assert tokens.allows("gate", "read") and not tokens.allows("gate", "record")
        assert tokens.allows("admin", "record") and not tokens.allows("read", "gate")
        assert tokens.lookup(store, token + "x") is None
        assert tokens.lookup(store, "not-a-token") is None
        tokens.revoke(store, tid)
        assert tokens.lookup(store, token) is None
        assert not tokens.listing(store)[0].active
    finally:
        store.close()
