"""Notifications delivered to a real HTTP receiver on 127.0.0.1, with retries after a 500."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from changeproof import settings as st
from changeproof.controls.emergency import clock
from changeproof.notify import notify_clocks, notify_opened, post_json
from tests.conftest import GitRepo
from tests.gate_helpers import NOW, change, emergency
from tests.test_gate_e2e import SETTINGS, Proj, merge_pr


class Receiver:
    """A loopback webhook receiver answering with scripted statuses (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[tuple[str, dict[str, object]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.requests.append((self.path, json.loads(body)))
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def test_retry_after_500_then_delivered(receiver: Receiver) -> None:
    receiver.statuses = [500]
    d = post_json(receiver.url + "/hook", {"text": "hi"}, target="slack", base_delay_s=0.05)
    assert d.ok and d.attempts == 2 and d.status == 200
    assert [p for p, _ in receiver.requests] == ["/hook", "/hook"]
    assert receiver.requests[-1][1] == {"text": "hi"}
    assert "/hook" not in d.url  # the webhook path is a secret: never shown


def test_client_error_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [404]
    d = post_json(receiver.url, {"a": 1}, target="webhook", base_delay_s=0.05)
    assert not d.ok and d.attempts == 1 and d.error == "HTTP 404"


def test_bounded_time_when_the_receiver_keeps_failing(receiver: Receiver) -> None:
    receiver.statuses = [503] * 100
    t = time.monotonic()
    d = post_json(receiver.url, {"a": 1}, target="webhook", deadline_s=1.0, base_delay_s=0.2)
    took = time.monotonic() - t
    assert not d.ok and d.status == 503 and d.attempts >= 2
    assert took < 5.0  # 1 s deadline plus one in-flight request, on a busy machine


def test_unreachable_receiver_never_raises() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = post_json(
        f"http://127.0.0.1:{port}/x", {"a": 1}, target="slack", deadline_s=1.0, base_delay_s=0.1
    )
    assert not d.ok and d.status is None and d.error


def test_clock_reminders_to_slack_and_webhook(receiver: Receiver) -> None:
    s = st.Settings(
        emergency=st.Emergency(
            approvers=("carol",),
            slack_webhook_url=receiver.url + "/slack",
            webhook_url=receiver.url + "/generic",
        )
    )
    e_over = emergency(change(1), at=NOW)
    e_soon = emergency(change(2), at=NOW + timedelta(hours=10))
    e_open = emergency(change(3), at=NOW + timedelta(hours=48))
    now = NOW + timedelta(hours=50)
    clocks = [clock(e, "0" * 64, [], s, now) for e in (e_over, e_soon, e_open)]
    assert [c.status for c in clocks] == ["overdue", "due_soon", "open"]
    out = notify_clocks(clocks, s, now, base_delay_s=0.05)
    assert [d.ok for d in out] == [True, True]
    by = dict(receiver.requests)
    text = str(by["/slack"]["text"])
    assert "1 emergency retro review(s) overdue, 1 due soon" in text
    assert e_over.id in text and e_soon.id in text and e_open.id not in text
    generic = by["/generic"]
    assert generic["type"] == "changeproof.emergency.reminder/v1"
    listed = generic["emergencies"]
    assert isinstance(listed, list)
    assert [x["status"] for x in listed] == ["overdue", "due_soon"]
    # nothing due: nothing sent
    receiver.requests.clear()
    assert notify_clocks([clocks[2]], s, now) == []
    assert receiver.requests == []
    # a declaration announcement
    assert all(d.ok for d in notify_opened(e_over, NOW + timedelta(hours=48), s))
    assert dict(receiver.requests)["/generic"]["type"] == "changeproof.emergency.declared/v1"


def test_emergencies_notify_and_gate_announce_end_to_end(
    tmp_path: Path, repo: GitRepo, receiver: Receiver
) -> None:
    d = tmp_path / "proj"
    d.mkdir()
    p = Proj(d, repo)
    hooks = f'slack_webhook_url = "{receiver.url}/slack"\nwebhook_url = "{receiver.url}/generic"\n'
    (d / "changeproof.toml").write_text(SETTINGS + hooks)
    sha = merge_pr(repo, 1)
    p.collect()
    receiver.statuses = [500]  # the first delivery fails and is retried
    r = p.run(
        "gate", "--env", "production", "--commit", sha, "--actor", "github-actions[bot]",
        "--at", "2026-01-02T03:00:00Z", "--emergency", "--incident", "INC-9", "--approver", "carol",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert [path for path, _ in receiver.requests] == ["/slack", "/slack", "/generic"]
    assert "INC-9" in str(receiver.requests[1][1]["text"])
    receiver.requests.clear()
    r = p.run("emergencies", "--notify", "--as-of", "2026-01-04T05:00:00Z")
    assert r.returncode == 1  # overdue
    assert "notification to slack" in r.stdout and "sent after 1 attempt(s)" in r.stdout
    paths = [path for path, _ in receiver.requests]
    assert paths == ["/slack", "/generic"]
    assert receiver.requests[1][1]["emergencies"][0]["status"] == "overdue"  # type: ignore[index]


def test_one_time_budget_for_all_targets(receiver: Receiver) -> None:
    receiver.statuses = [503] * 100
    s = st.Settings(
        emergency=st.Emergency(
            slack_webhook_url=receiver.url + "/s", webhook_url=receiver.url + "/g"
        )
    )
    e = emergency(change(1), at=NOW)
    c = clock(e, "0" * 64, [], s, NOW + timedelta(hours=60))
    t = time.monotonic()
    out = notify_clocks([c], s, NOW, deadline_s=1.0, base_delay_s=0.2)
    took = time.monotonic() - t
    assert [d.ok for d in out] == [False, False]
    assert took < 5.0  # one 1 s budget shared by both targets, not 1 s each plus retries
