"""Shared fixtures: real git repositories built with the git CLI, and a fresh workspace."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from changeproof.settings import Settings
from changeproof.store import Store
from changeproof.workspace import Workspace

GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}


@dataclass
class GitRepo:
    """A throw-away repository driven through the real git CLI, with controllable clocks."""

    path: Path
    clock: int = 1_767_225_600  # 2026-01-01T00:00:00Z
    env: dict[str, str] = field(default_factory=dict)

    def git(
        self,
        *args: str,
        author: str = "Alice Author <alice@example.com>",
        committer: str | None = None,
    ) -> str:
        self.clock += 60
        a_name, a_mail = author[: author.index(" <")], author[author.index("<") + 1 : -1]
        c = committer or author
        c_name, c_mail = c[: c.index(" <")], c[c.index("<") + 1 : -1]
        env = {
            **os.environ,
            **GIT_ENV,
            "GIT_AUTHOR_NAME": a_name,
            "GIT_AUTHOR_EMAIL": a_mail,
            "GIT_COMMITTER_NAME": c_name,
            "GIT_COMMITTER_EMAIL": c_mail,
            "GIT_AUTHOR_DATE": f"@{self.clock} +0000",
            "GIT_COMMITTER_DATE": f"@{self.clock} +0000",
            **self.env,
        }
        out = subprocess.run(
            ["git", "-C", str(self.path), *args],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()

    def write(self, rel: str, text: str) -> None:
        p = self.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def commit(self, message: str, files: dict[str, str] | None = None, **kw: str) -> str:
        for rel, text in (files or {"f.txt": message}).items():
            self.write(rel, text + "\n")
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message, **kw)
        return self.git("rev-parse", "HEAD")

    def branch(self, name: str, start: str = "main") -> None:
        self.git("checkout", "-q", "-b", name, start)

    def checkout(self, name: str) -> None:
        self.git("checkout", "-q", name)

    def merge(self, branch: str, message: str, **kw: str) -> str:
        self.git("merge", "-q", "--no-ff", "-m", message, branch, **kw)
        return self.git("rev-parse", "HEAD")

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    path = tmp_path / "repo"
    path.mkdir()
    r = GitRepo(path)
    r.git("init", "-q", "-b", "main")
    r.commit("initial commit", {"README.md": "hello"})
    return r


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    ws = Workspace.resolve(str(tmp_path / "ws"), None, str(tmp_path / "changeproof.toml"))
    ws.ensure_home()
    return ws


@pytest.fixture
def store(workspace: Workspace) -> Iterator[Store]:
    s = Store.open(workspace.db_url)
    yield s
    s.close()


@pytest.fixture
def settings() -> Settings:
    return Settings()
