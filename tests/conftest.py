"""Shared fixtures: real git repositories built with the git CLI, and a fresh workspace."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
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


# --- the store backends: every test using `workspace`/`store` runs on SQLite and PostgreSQL ---
#
# CHANGEPROOF_TEST_PG_URL (e.g. from `eval "$(scripts/pg start)"`) names a PostgreSQL server
# and a database we may connect to. Each test session (each xdist worker) creates its own
# scratch database there, and each test its own schema in it, migrated by the real Alembic
# migrations (a schema takes ~0.2 s; CREATE DATABASE per test took over 1 s). The schema is
# selected through the URL (`?options=-csearch_path=…`), so subprocesses given the URL by
# --db / CHANGEPROOF_DB see exactly the same tables.

PG_ENV = "CHANGEPROOF_TEST_PG_URL"
BACKENDS = ("sqlite", "postgres")


def _libpq_url(url: str) -> str:
    """The URL for psycopg itself (no SQLAlchemy driver suffix)."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


def _with_database(url: str, name: str, schema: str | None = None) -> str:
    """``url`` pointing at database ``name`` (and ``schema`` first on the search path),
    in SQLAlchemy form."""
    base = url.partition("?")[0]
    hostpart = base.partition("://")[2].split("/", 1)[0]
    out = f"postgresql+psycopg://{hostpart}/{name}"
    return out + (f"?options=-csearch_path%3D{schema}" if schema else "")


@dataclass
class PgServer:
    """The test PostgreSQL server: one scratch database per session, one schema per test."""

    admin_url: str  # libpq URL of an existing database to run CREATE/DROP DATABASE from
    database: str = ""

    def _exec(self, sql: str, database: str | None = None) -> None:
        import psycopg

        url = _libpq_url(_with_database(self.admin_url, database)) if database else self.admin_url
        # CREATE/DROP DATABASE cannot run inside a transaction: autocommit
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.encode())

    def start(self) -> None:
        name = f"cp_tests_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._exec(f'CREATE DATABASE "{name}"')
        self.database = name

    def create(self) -> tuple[str, str]:
        schema = f"t_{uuid.uuid4().hex[:16]}"
        self._exec(f'CREATE SCHEMA "{schema}"', self.database)
        url = _with_database(self.admin_url, self.database, schema)
        s = Store.open(url)  # the real migrations, into this schema
        s.close()
        return schema, url

    def drop(self, schema: str) -> None:
        self._exec(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE', self.database)

    def stop(self) -> None:
        if self.database:
            self._exec(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server named by CHANGEPROOF_TEST_PG_URL; skips when it is not set."""
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f'PostgreSQL backend: set {PG_ENV} (e.g. eval "$(scripts/pg start)")')
    server = PgServer(_libpq_url(url))
    try:
        server.start()
    except Exception as exc:
        pytest.fail(f"{PG_ENV}={url} is set but unusable: {exc}")
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, migrated PostgreSQL schema for one test (SQLAlchemy URL); dropped after."""
    name, url = pg_server.create()
    yield url
    pg_server.drop(name)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store URL of this test's backend: SQLite in the workspace, or a fresh PostgreSQL
    database (the postgres variant is skipped when CHANGEPROOF_TEST_PG_URL is unset)."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'ws' / 'store.db'}"


@pytest.fixture
def workspace(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    ws = Workspace.resolve(str(tmp_path / "ws"), db_url, str(tmp_path / "changeproof.toml"))
    ws.ensure_home()
    # commands run from the test (in-process or as subprocesses that inherit the environment)
    # find the same database without each test passing --db
    if ws.is_sqlite:
        monkeypatch.delenv("CHANGEPROOF_DB", raising=False)
    else:
        monkeypatch.setenv("CHANGEPROOF_DB", ws.db_url)
    return ws


@pytest.fixture
def store(workspace: Workspace) -> Iterator[Store]:
    s = Store.open(workspace.db_url)
    yield s
    s.close()


@pytest.fixture
def settings() -> Settings:
    return Settings()
