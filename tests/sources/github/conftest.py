"""Shared helpers: a GitHub-shaped organisation served through the real HTTP client."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from changeproof.demo_github import GitHubReplay, Org, RepoBuilder
from changeproof.locker import Signer
from changeproof.settings import Settings
from changeproof.sources.github import GitHubSource, Options, RepoResult
from changeproof.sources.github.collector import github_error_mapper
from changeproof.sources.http import HttpClient
from changeproof.store import Store

FIXTURES = Path(__file__).parent / "fixtures"
API = "https://api.github.com"


def fixture(name: str) -> Any:
    """The ``value`` of a copied octokit/openapi example (see fixtures/SOURCES.md)."""
    return json.loads((FIXTURES / f"{name}.json").read_text())["value"]


@dataclass
class Harness:
    org: Org
    replay: GitHubReplay
    store: Store
    signer: Signer
    sleeps: list[float]

    def client(self) -> HttpClient:
        return HttpClient(
            API,
            transport=self.replay.transport(),
            error_mapper=github_error_mapper,
            sleep=self.sleeps.append,
            backoff_base_s=0.01,
        )

    def source(self, client: HttpClient | None = None, **opts: Any) -> GitHubSource:
        return GitHubSource(
            client or self.client(), Settings(), api_url=API, options=Options(workers=2, **opts)
        )

    def collect(
        self, repos: list[str] | None = None, **opts: Any
    ) -> tuple[list[RepoResult], HttpClient]:
        client = self.client()
        src = self.source(client, **opts)
        names = repos or sorted(self.org.repos)
        src.validate(names)
        return src.collect(self.store, self.signer, names), client


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    stores: list[Store] = []

    def make(org: Org, name: str = "store") -> Harness:
        store = Store.open(f"sqlite:///{tmp_path / (name + '.db')}")
        stores.append(store)
        keys = tmp_path / "keys"
        signer = (
            Signer.load(keys) if (keys / "locker-ed25519.pem").exists() else Signer.generate(keys)
        )
        return Harness(org, GitHubReplay(org), store, signer, [])

    yield make
    for s in stores:
        s.close()


def scenario_org() -> tuple[Org, dict[str, Any]]:
    """One repository holding every review and merge case the issue names."""
    org = Org(login="octo-org", teams={"security": ["sam"]})
    b = RepoBuilder(org, "api")
    reviewer = fixture("pull-request-review")["user"]["login"]  # "octocat"
    cases: dict[str, Any] = {}
    cases["approved"] = b.merge_pr(author="alice", reviews=[(reviewer, "APPROVED", "head")])
    cases["self_merged"] = b.merge_pr(author="alice", merged_by="alice", reviews=[])
    cases["outdated"] = b.merge_pr(author="alice", commits=2, reviews=[("bob", "APPROVED", "old")])
    cases["dismissed"] = b.merge_pr(
        author="alice", reviews=[("bob", "APPROVED", "head")], dismissed=[("bob", "alice")]
    )
    cases["changes_then_ok"] = b.merge_pr(
        author="alice",
        reviews=[("bob", "CHANGES_REQUESTED", "old"), ("bob", "APPROVED", "head")],
        commits=2,
    )
    cases["bot"] = b.merge_pr(
        author="dependabot[bot]", reviews=[("bob", "APPROVED", "head")], labels=["dependencies"]
    )
    cases["merge"] = b.merge_pr(
        author="carol", method="merge", commits=3, reviews=[("bob", "APPROVED", "head")]
    )
    cases["rebase"] = b.merge_pr(
        author="carol", method="rebase", commits=2, reviews=[("bob", "APPROVED", "head")]
    )
    cases["queue"] = b.merge_pr(
        author="carol", method="merge_queue", reviews=[("bob", "APPROVED", "head")]
    )
    cases["direct"] = b.direct_push(author="mallory")
    cases["many_reviews"] = b.merge_pr(
        author="dave", reviews=[("bob", "COMMENTED", "head")] * 70 + [("erin", "APPROVED", "head")]
    )
    cases["many_files"] = b.merge_pr(
        author="dave",
        reviews=[("bob", "APPROVED", "head")],
        files=[(f"src/f{i}.py", "MODIFIED", None) for i in range(250)]
        + [("src/auth/new.py", "RENAMED", "src/old/login.py")],
    )
    cases["huge"] = b.merge_pr(
        author="dave",
        reviews=[("bob", "APPROVED", "head")],
        files=[(f"gen/f{i}.py", "ADDED", None) for i in range(120)],
        changed_files=3500,
    )
    # configuration, verbatim from GitHub's OpenAPI examples
    b.repo.classic["main"] = fixture("branch-protection")
    b.repo.rulesets.append(fixture("repository-ruleset"))
    org.org_rulesets.append(fixture("org-ruleset"))
    b.repo.environments = fixture("environments")["environments"]
    b.repo.rule_suites = fixture("rule-suite-items")
    cases["deploy"] = b.deploy("production", approver="octocat")
    run_id = 900_000 + cases["deploy"]["databaseId"]
    b.repo.run_approvals[run_id] = fixture("environment-approvals-items")
    return org, cases
