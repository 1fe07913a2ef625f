"""An audited workspace: a real git repository collected by the git source (with a direct
push) plus forge-like changes, deployments, emergencies, protection history and a bypass."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from changeproof.audit import AuditRequest, AuditResult, run_audit
from changeproof.settings import Settings
from changeproof.store import Store
from changeproof.workspace import Workspace
from tests.audit.builders import T0, collect_git, fill_forge
from tests.conftest import GitRepo

AuditFn = Callable[..., AuditResult]


def build_git_history(repo: GitRepo) -> None:
    repo.branch("feature")
    repo.commit("feature work", {"app.py": "1"}, author="Bob <bob@example.com>")
    repo.checkout("main")
    repo.merge("feature", "Merge pull request #1 from acme/feature\n\nJIRA-1 feature work")
    repo.commit("hotfix straight to main", {"app.py": "2"}, author="Eve <eve@example.com>")


@pytest.fixture
def populated(repo: GitRepo, workspace: Workspace, store: Store) -> Store:
    build_git_history(repo)
    collect_git(workspace, store, Settings(), repo.path, T0 + timedelta(days=31))
    fill_forge(workspace, store, 60, emergencies=(10, 20))
    return store


@pytest.fixture
def audit(populated: Store, workspace: Workspace, tmp_path: Path) -> AuditFn:
    def run(settings: Settings | None = None, **kw: object) -> AuditResult:
        args: dict[str, object] = {
            "start": T0,
            "end": T0 + timedelta(days=31),
            "period_text": "2026-01-01..2026-01-31",
            "tz": "UTC",
            "out": tmp_path / "pkg",
            "operator": "auditor@test",
            "now": T0 + timedelta(days=40),
            "seed": "fixed-seed",
            "pdf": False,
        }
        args.update(kw)
        req = AuditRequest(**args)  # type: ignore[arg-type]
        return run_audit(populated, settings or Settings(), workspace.signer(), req)

    return run
