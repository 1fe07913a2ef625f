"""Webhook intake internals: group commit settling asyncio futures, a failed commit, a sender
that went away, header names in any case, and `serve`'s HTTP stack with proxy headers
handled inside the application (off the delivery path)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from changeproof.errors import StoreError
from changeproof.locker import Signer, verify_locker
from changeproof.store import Store, schema
from changeproof.web.webhooks import Delivery, Ingestor, github_signature
from changeproof.workspace import Workspace
from tests.web.conftest import ENV, GITHUB_SECRET, Server, empty_workspace, free_port

PUSH = Path(__file__).parents[1] / "fixtures" / "webhooks" / "github" / "push" / "payload.json"


def delivery(did: str) -> Delivery:
    return Delivery("github", did, "push", (("x-github-event", "push"),), PUSH.read_bytes())


def stored(ws: Workspace) -> tuple[list[str], list[str]]:
    """(queue delivery ids, locker entry kinds) as committed."""
    d, e = schema.webhook_deliveries, schema.locker_entries
    with ws.open_store() as store, store.connect() as conn:
        ids = list(conn.execute(sa.select(d.c.delivery_id).order_by(d.c.id)).scalars())
        kinds = list(conn.execute(sa.select(e.c.kind).order_by(e.c.seq)).scalars())
    return ids, kinds


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[tuple[Workspace, Store, Signer]]:
    ws = empty_workspace(tmp_path)
    store = ws.open_store()
    try:
        yield ws, store, ws.signer()
    finally:
        store.close()


def test_concurrent_submissions_share_commits_and_each_is_settled(
    intake: tuple[Workspace, Store, Signer],
) -> None:
    ws, store, signer = intake
    ing = Ingestor(store, signer, threading.Lock(), linger_s=0.05)
    ing.start()
    try:

        async def send() -> list[str]:
            futs = [ing.submit_async(delivery(f"d-{i}")) for i in range(40)]
            futs.append(ing.submit_async(delivery("d-0")))  # a replay racing its original
            return list(await asyncio.gather(*futs))

        out = asyncio.run(send())
        # the thread-safe path (any thread) sees the same store
        again = ing.submit(delivery("d-1")).result(timeout=30)
    finally:
        ing.stop()
    assert out[:40] == ["accepted"] * 40 and out[40] == "duplicate"
    assert again == "duplicate"
    assert ing.batches < 41  # grouped: fewer commits (and signed checkpoints) than deliveries
    ids, kinds = stored(ws)
    assert sorted(ids) == sorted(f"d-{i}" for i in range(40))
    assert kinds == ["webhook.github"] * 40
    rep = verify_locker(store, ws.public_key_pem())
    # one signed checkpoint per commit that appended (the last, all-duplicate one did not)
    assert rep.ok and rep.entries == 40 and 1 <= rep.checkpoints < ing.batches


class FailingIngestor(Ingestor):
    @staticmethod
    def write(store: Store, signer: Signer, deliveries: list[Delivery], lock: Any) -> list[str]:
        raise StoreError("the database is full")


def test_a_failed_commit_fails_every_delivery_of_its_batch(
    intake: tuple[Workspace, Store, Signer],
) -> None:
    ws, store, signer = intake
    ing = FailingIngestor(store, signer, threading.Lock(), linger_s=0.05)
    ing.start()
    try:

        async def send() -> list[BaseException | str]:
            futs = [ing.submit_async(delivery(f"f-{i}")) for i in range(5)]
            return list(await asyncio.gather(*futs, return_exceptions=True))

        out = asyncio.run(send())
        with pytest.raises(StoreError):
            ing.submit(delivery("f-9")).result(timeout=30)
    finally:
        ing.stop()
    assert all(isinstance(x, StoreError) for x in out), out
    assert stored(ws) == ([], [])


def test_a_sender_that_went_away_does_not_disturb_its_batch(
    intake: tuple[Workspace, Store, Signer],
) -> None:
    ws, store, signer = intake
    ing = Ingestor(store, signer, threading.Lock(), linger_s=0.2)
    ing.start()
    try:

        async def send() -> str:
            gone = ing.submit_async(delivery("gone"))
            kept = ing.submit_async(delivery("kept"))
            gone.cancel()  # the request was cancelled while its batch lingered
            return await asyncio.wait_for(kept, 30)

        assert asyncio.run(send()) == "accepted"
        # committed all the same: a redelivery of it is recognised
        assert ing.submit(delivery("gone")).result(timeout=30) == "duplicate"
    finally:
        ing.stop()
    assert sorted(stored(ws)[0]) == ["gone", "kept"]


def test_header_names_are_understood_in_any_case(tmp_path: Path) -> None:
    """ASGI servers lower-case header names; a delivery is still read if one does not."""
    from changeproof.web.app import create_app

    ws = empty_workspace(tmp_path)
    app = create_app(ws, env=ENV, workers=False)
    body = PUSH.read_bytes()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    headers = [
        (b"X-GitHub-Event", b"push"),
        (b"X-GitHub-Delivery", b"MiXeD-1"),
        (b"X-Hub-Signature-256", github_signature(GITHUB_SECRET.encode(), body).encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {"type": "http", "method": "POST", "path": "/webhooks/github", "headers": headers}
    st = app.state.cp
    st.ingestor.start()
    try:
        asyncio.run(app(scope, receive, send))
    finally:
        st.ingestor.stop()
        st.store.close()
    assert sent[0]["status"] == 202, sent
    ids, _ = stored(ws)
    assert ids == ["MiXeD-1"]


@pytest.fixture
def serve_like(tmp_path: Path) -> Iterator[tuple[str, Workspace, dict[str, str]]]:
    """The application as `changeproof serve` runs it: proxy headers inside the app, uvicorn
    with proxy_headers=False and the HTTP stack http_stack() names."""
    import uvicorn

    from changeproof.web import tokens
    from changeproof.web.app import create_app, http_stack

    ws = empty_workspace(tmp_path)
    with ws.open_store() as store:
        toks = {"read": tokens.create(store, "read", "test-read")[1]}
    app = create_app(ws, env=ENV, workers=False, forwarded_allow_ips="127.0.0.1")
    http, loop = http_stack()
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on", proxy_headers=False, http=http, loop=loop)  # fmt: skip
    server = uvicorn.Server(config)
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not t.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", ws, toks
    finally:
        server.should_exit = True
        t.join(timeout=20)


def test_serve_uses_the_c_http_stack() -> None:
    from changeproof.web.app import http_stack

    # httptools and uvloop are dependencies of the server: uvicorn is told to use them
    assert http_stack() == ("httptools", "uvloop")


def test_forwarded_proto_reaches_the_dashboard_and_deliveries_still_land(
    serve_like: tuple[str, Workspace, dict[str, str]],
) -> None:
    url, ws, toks = serve_like
    form = {"token": toks["read"], "next": "/"}
    behind_tls = httpx.post(f"{url}/signin", data=form, headers={"X-Forwarded-Proto": "https"})
    direct = httpx.post(f"{url}/signin", data=form)
    assert behind_tls.status_code == direct.status_code == 303
    assert "secure" in behind_tls.headers["set-cookie"].lower()
    assert "secure" not in direct.headers["set-cookie"].lower()

    body = PUSH.read_bytes()
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "behind-proxy-1",
        "X-Hub-Signature-256": github_signature(GITHUB_SECRET.encode(), body),
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-Proto": "https",
    }
    r = httpx.post(f"{url}/webhooks/github", content=body, headers=headers)
    assert r.status_code == 202 and r.json()["status"] == "accepted"
    r = httpx.post(f"{url}/webhooks/github", content=body, headers=headers)
    assert r.status_code == 200 and r.json()["status"] == "duplicate"
    assert stored(ws)[0] == ["behind-proxy-1"]


def test_a_delivery_not_stored_is_503_and_leaves_nothing_behind(empty_server: Server) -> None:
    """The locker append fails (here: its table is missing) → the whole batch rolls back:
    no queue row without its locker entry, and a 503 tells the sender to retry."""
    body = PUSH.read_bytes()
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "retry-me",
        "X-Hub-Signature-256": github_signature(GITHUB_SECRET.encode(), body),
    }
    url = f"{empty_server.url}/webhooks/github"
    with empty_server.ws.open_store() as store, store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE locker_entries RENAME TO locker_entries_away")
    r = httpx.post(url, content=body, headers=headers, timeout=30)
    assert r.status_code == 503 and "nothing was kept" in r.json()["detail"]
    with empty_server.ws.open_store() as store, store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE locker_entries_away RENAME TO locker_entries")
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(schema.locker_objects)).scalar()
            == 0
        )
    assert stored(empty_server.ws) == ([], [])
    r = httpx.post(url, content=body, headers=headers, timeout=30)  # the sender's retry
    assert r.status_code == 202 and r.json()["status"] == "accepted"
    assert stored(empty_server.ws) == (["retry-me"], ["webhook.github"])


def test_steady_traffic_does_not_starve_processing(
    intake: tuple[Workspace, Store, Signer],
) -> None:
    """Processing yields to intake while deliveries arrive, but only for max_defer_s: with
    deliveries arriving all the time (busy always), the queue is still worked off."""
    from changeproof.settings import Settings
    from changeproof.web.webhooks import Processor

    _, store, signer = intake
    lock = threading.Lock()
    out = Ingestor.write(store, signer, [delivery(f"s-{i}") for i in range(25)], lock)
    assert out == ["accepted"] * 25
    proc = Processor(store, Settings(), lock, batch=10, busy=lambda: True, max_defer_s=0.3)
    proc.start()
    try:
        deadline = time.monotonic() + 30
        while proc.processed < 25 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.stop()
    assert proc.processed == 25
    d = schema.webhook_deliveries
    with store.connect() as conn:
        assert set(conn.execute(sa.select(d.c.status)).scalars()) == {"done"}
