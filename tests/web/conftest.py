"""Server fixtures: a real uvicorn server on a free loopback port, over a real workspace."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from changeproof.workspace import Workspace

GITHUB_SECRET = "test-webhook-secret"
GITLAB_TOKEN = "test-gitlab-token"
ENV = {
    "CHANGEPROOF_GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
    "CHANGEPROOF_GITLAB_WEBHOOK_TOKEN": GITLAB_TOKEN,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    ws: Workspace
    app: object
    tokens: dict[str, str]

    def client(self, scope: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[scope]}"} if scope else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    @property
    def state(self) -> object:
        return self.app.state.cp  # type: ignore[attr-defined]


def start_server(ws: Workspace, *, workers: bool = True) -> Iterator[Server]:
    import uvicorn

    from changeproof.web import tokens
    from changeproof.web.app import create_app

    app = create_app(ws, env=ENV, workers=workers)
    store = ws.open_store()
    try:
        toks: dict[str, str] = {s: tokens.create(store, s, f"test-{s}")[1] for s in tokens.SCOPES}
    finally:
        store.close()
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not t.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield Server(f"http://127.0.0.1:{port}", ws, app, toks)
    finally:
        server.should_exit = True
        t.join(timeout=20)


def empty_workspace(root: Path) -> Workspace:
    cfg = root / "changeproof.toml"
    cfg.write_text('controlled_branches = ["main"]\n', encoding="utf-8")
    ws = Workspace.resolve(str(root / ".changeproof"), None, str(cfg))
    ws.open_store().close()  # creates the folder, the key and the schema
    return ws


@pytest.fixture
def empty_server(tmp_path: Path) -> Iterator[Server]:
    """A server on a fresh workspace; the processing worker is driven by the test."""
    yield from start_server(empty_workspace(tmp_path), workers=False)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`changeproof demo` once per session: a collected organisation, checked and audited."""
    out = tmp_path_factory.mktemp("demo") / "org"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEPROOF_")}
    subprocess.run(
        [sys.executable, "-m", "changeproof", "demo", "--out", str(out), "--scale", "8"],
        check=True,
        capture_output=True,
        env=env,
        timeout=600,
    )
    return out


@pytest.fixture
def demo_server(demo_dir: Path, tmp_path: Path) -> Iterator[Server]:
    """A server over a private copy of the demo workspace (tests may write to it)."""
    root = tmp_path / "org"
    shutil.copytree(demo_dir, root)
    ws = Workspace.resolve(str(root / ".changeproof"), None, str(root / "changeproof.toml"))
    yield from start_server(ws)


@pytest.fixture
def backend_server(workspace: Workspace) -> Iterator[Server]:
    """A server on this test's backend (SQLite, and PostgreSQL when configured)."""
    yield from start_server(workspace, workers=False)
