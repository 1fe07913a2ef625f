"""Webhook receivers over a real uvicorn server: signatures, replay, size, mapping, locker."""

from __future__ import annotations

import hashlib
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from changeproof.evidence import Deployment
from changeproof.locker import verify_locker
from changeproof.store import schema
from changeproof.web.webhooks import (
    MAX_BODY,
    github_signature,
    github_signature_ok,
    gitlab_token_ok,
    parse_envelope,
)
from tests.web.conftest import GITHUB_SECRET, GITLAB_TOKEN, Server

FIXTURES = Path(__file__).parents[1] / "fixtures" / "webhooks"
GITHUB_FIXTURES = sorted((FIXTURES / "github").glob("*/*.json"))


# --- signature vectors -------------------------------------------------------------------


def test_githubs_published_signature_example() -> None:
    # docs.github.com "Validating webhook deliveries": the documented test values
    secret, payload = b"It's a Secret to Everybody", b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert github_signature(secret, payload) == expected
    assert github_signature_ok(secret, payload, expected)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e18",
        "sha1=757107ea0eb2509fc211221cce984b8a37570b6d",
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17",
    ],
)
def test_wrong_or_missing_signatures_are_refused(header: str | None) -> None:
    assert not github_signature_ok(b"It's a Secret to Everybody", b"Hello, World!", header)


def test_signature_covers_secret_and_body() -> None:
    good = github_signature(b"s", b"body")
    assert not github_signature_ok(b"t", b"body", good)
    assert not github_signature_ok(b"s", b"body ", good)


def test_gitlab_token_compare() -> None:
    assert gitlab_token_ok(b"tok", "tok")
    for bad in (None, "", "tok ", "TOK", "to"):
        assert not gitlab_token_ok(b"tok", bad)


# --- helpers -----------------------------------------------------------------------------


def post_github(
    server: Server,
    event: str,
    body: bytes,
    *,
    delivery: str | None = None,
    secret: str = GITHUB_SECRET,
    signature: str | None = "sign",
) -> httpx.Response:
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/test",
    }
    if signature == "sign":
        headers["X-Hub-Signature-256"] = github_signature(secret.encode(), body)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return httpx.post(f"{server.url}/webhooks/github", content=body, headers=headers, timeout=30)


def deliveries(server: Server) -> list[sa.Row[tuple[object, ...]]]:
    d = schema.webhook_deliveries
    with server.ws.open_store() as store, store.connect() as conn:
        return list(conn.execute(sa.select(d).order_by(d.c.id)).all())


def locker_envelopes(server: Server, source: str = "github") -> list[bytes]:
    e, o = schema.locker_entries, schema.locker_objects
    with server.ws.open_store() as store, store.connect() as conn:
        rows = conn.execute(
            sa.select(o.c.body)
            .select_from(e.join(o, o.c.digest == e.c.digest))
            .where(e.c.kind == f"webhook.{source}")
            .order_by(e.c.seq)
        ).all()
    return [bytes(r[0]) for r in rows]


def process_all(server: Server) -> None:
    proc = server.state.processor  # type: ignore[attr-defined]
    while proc.run_once():
        pass


# --- receivers ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", GITHUB_FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_corpus_payload_is_stored_before_the_2xx(empty_server: Server, path: Path) -> None:
    body = path.read_bytes()
    event = path.parent.name
    r = post_github(empty_server, event, body, delivery=f"d-{path.parent.name}-{path.name}")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "accepted"
    # committed before the answer: the row and the envelope are already there
    (row,) = deliveries(empty_server)
    assert row.status == "pending" and row.event == event
    (env,) = locker_envelopes(empty_server)
    headers, raw = parse_envelope(env)
    assert raw == body  # the exact bytes GitHub signed
    assert headers["x-hub-signature-256"] == github_signature(GITHUB_SECRET.encode(), body)
    assert hashlib.sha256(env).hexdigest() == row.raw_sha256
    process_all(empty_server)
    (row,) = deliveries(empty_server)
    assert row.status == "done", row.detail
    assert row.detail


def test_replayed_delivery_id_is_kept_once(backend_server: Server) -> None:
    body = (FIXTURES / "github" / "push" / "payload.json").read_bytes()
    first = post_github(backend_server, "push", body, delivery="replay-1")
    again = post_github(backend_server, "push", body, delivery="replay-1")
    assert first.status_code == 202
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert len(deliveries(backend_server)) == 1
    assert len(locker_envelopes(backend_server)) == 1


@pytest.mark.parametrize("signature", [None, "", "sha256=" + "0" * 64, "wrong-secret"])
def test_bad_signature_is_401_and_not_stored(empty_server: Server, signature: str | None) -> None:
    body = (FIXTURES / "github" / "ping" / "payload.json").read_bytes()
    if signature == "wrong-secret":
        r = post_github(empty_server, "ping", body, secret="not-the-secret")
    else:
        r = post_github(empty_server, "ping", body, signature=signature)
    assert r.status_code == 401
    assert deliveries(empty_server) == []
    assert locker_envelopes(empty_server) == []


def test_tampered_body_is_refused(empty_server: Server) -> None:
    body = b'{"zen": "x"}'
    sig = github_signature(GITHUB_SECRET.encode(), body)
    r = post_github(empty_server, "ping", body + b" ", signature=sig)
    assert r.status_code == 401
    assert deliveries(empty_server) == []


def test_oversized_body_refused_without_reading_it(empty_server: Server) -> None:
    host, port = empty_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            (
                "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n"
                f"X-GitHub-Delivery: big\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n"
            ).encode()
            + b"{"
        )
        # the answer comes while almost all of the declared body is still unsent
        reply = s.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413")
    assert deliveries(empty_server) == []


def test_oversized_chunked_body_refused(empty_server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        block = b"x" * (1024 * 1024)
        for _ in range(MAX_BODY // len(block) + 2):
            yield block

    r = httpx.post(
        f"{empty_server.url}/webhooks/github",
        content=chunks(),
        headers={
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": "chunked",
            "X-Hub-Signature-256": "sha256=" + "0" * 64,
        },
        timeout=60,
    )
    assert r.status_code == 413
    assert deliveries(empty_server) == []


def test_unknown_event_is_stored_and_acknowledged(empty_server: Server) -> None:
    body = (
        FIXTURES / "github" / "workflow_job" / "completed.success.with-organization.payload.json"
    ).read_bytes()
    r = post_github(empty_server, "workflow_job", body)
    assert r.status_code == 202
    process_all(empty_server)
    (row,) = deliveries(empty_server)
    assert row.status == "done" and "not used" in row.detail
    assert len(locker_envelopes(empty_server)) == 1


def test_deployment_events_map_to_the_sources_deployment_record(backend_server: Server) -> None:
    dep = (FIXTURES / "github" / "deployment" / "payload.json").read_bytes()
    status = (FIXTURES / "github" / "deployment_status" / "payload.json").read_bytes()
    assert post_github(backend_server, "deployment", dep).status_code == 202
    process_all(backend_server)
    with backend_server.ws.open_store() as store:
        hit = store.get(Deployment, "github:Codertocat/Hello-World:145988746")
    assert hit is not None
    assert hit[1].status == "queued"
    assert post_github(backend_server, "deployment_status", status).status_code == 202
    process_all(backend_server)
    with backend_server.ws.open_store() as store:
        hit = store.get(Deployment, "github:Codertocat/Hello-World:145988746")
    assert hit is not None
    d = hit[1]
    assert (d.status, d.environment, d.system) == ("success", "production", "github")
    assert d.commit_sha == "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
    assert d.started_at.isoformat() == "2019-05-15T15:20:55+00:00"
    assert d.finished_at == d.started_at
    assert d.actor is not None and d.actor.login == "Codertocat"
    # provenance names the raw delivery in the locker
    envs = {hashlib.sha256(e).hexdigest() for e in locker_envelopes(backend_server)}
    assert d.provenance.raw_sha256 in envs


def test_merged_pr_and_protection_edits_mark_for_recollection(empty_server: Server) -> None:
    pr = json.loads((FIXTURES / "github" / "pull_request" / "closed.payload.json").read_bytes())
    pr["pull_request"]["merged"] = True
    body = json.dumps(pr).encode()
    assert post_github(empty_server, "pull_request", body).status_code == 202
    rule = (FIXTURES / "github" / "branch_protection_rule" / "edited.payload.json").read_bytes()
    assert post_github(empty_server, "branch_protection_rule", rule).status_code == 202
    opened = (FIXTURES / "github" / "pull_request" / "opened.payload.json").read_bytes()
    assert post_github(empty_server, "pull_request", opened).status_code == 202
    process_all(empty_server)
    rows = deliveries(empty_server)
    assert [bool(r.recollect) for r in rows] == [True, True, False]
    assert "re-collect" in rows[0].detail


def post_gitlab(server: Server, header: str, body: bytes, token: str = GITLAB_TOKEN,
                uuid_: str | None = None) -> httpx.Response:  # fmt: skip
    return httpx.post(
        f"{server.url}/webhooks/gitlab",
        content=body,
        headers={
            "X-Gitlab-Event": header,
            "X-Gitlab-Token": token,
            "X-Gitlab-Event-UUID": uuid_ or str(uuid.uuid4()),
        },
        timeout=30,
    )


def test_gitlab_deployment_maps_and_wrong_token_is_refused(backend_server: Server) -> None:
    body = (FIXTURES / "deployment-event.json").read_bytes()
    assert post_gitlab(backend_server, "Deployment Hook", body, token="nope").status_code == 401
    assert deliveries(backend_server) == []
    r = post_gitlab(backend_server, "Deployment Hook", body, uuid_="gl-1")
    assert r.status_code == 202
    assert post_gitlab(backend_server, "Deployment Hook", body, uuid_="gl-1").status_code == 200
    for name, header in (("merge-request-event.json", "Merge Request Hook"),
                         ("pipeline-event.json", "Pipeline Hook")):  # fmt: skip
        assert (
            post_gitlab(backend_server, header, (FIXTURES / name).read_bytes()).status_code == 202
        )
    process_all(backend_server)
    assert [r.status for r in deliveries(backend_server)] == ["done", "done", "done"]
    with backend_server.ws.open_store() as store:
        hit = store.get(Deployment, "gitlab:root/test-deployment-webhooks:15")
    assert hit is not None
    d = hit[1]
    assert d.commit_sha == "279484c09fbe69ededfced8c1bb6e6d24616b468"
    assert (d.environment, d.status, d.system) == ("staging", "success", "gitlab")
    assert d.started_at.isoformat() == "2021-04-28T19:50:00+00:00"


def test_locker_verifies_after_deliveries(backend_server: Server) -> None:
    for path in GITHUB_FIXTURES[:8]:
        assert post_github(backend_server, path.parent.name, path.read_bytes()).status_code == 202
    process_all(backend_server)
    with backend_server.ws.open_store() as store:
        rep = verify_locker(store, backend_server.ws.public_key_pem())
    assert rep.ok, rep.problems
    assert rep.entries == 8
