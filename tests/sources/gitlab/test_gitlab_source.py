"""The GitLab source through the real HTTP client against a GitLab model built from the
gitlab4j corpus examples, judged by the real controls."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from changeproof.cli.collect_gitlab import build_gitlab_client, graphql_url_for
from changeproof.controls import CHANGE_CONTROLS
from changeproof.errors import SourceError
from changeproof.evaluate import build_context, evaluate_change
from changeproof.evidence import Change, Deployment, DeploymentApproval, ProtectionSnapshot
from changeproof.outcomes import Outcome
from changeproof.settings import Settings
from changeproof.sources.gitlab import GitLabSource, ProjectResult
from changeproof.store import Store
from changeproof.workspace import Workspace
from tests.sources.gitlab.fake_gitlab import Commit, FakeGitLab, Project, User, sha

API = "https://gitlab.example.com/api/v4"
NOW = datetime(2026, 6, 1, tzinfo=UTC)
ALICE = User("alice", "Alice", "alice@example.com")
BOB = User("bob", "Bob", "bob@example.com")
CAROL = User("carol", "Carol", "carol@example.com")
BOT = User("project_7_bot_abc", "deploy bot", bot=True)


def collect(
    fake: FakeGitLab,
    store: Store,
    ws: Workspace,
    path: str = "acme/app",
    token: str | None = None,
    now: datetime = NOW,
) -> ProjectResult:
    client = build_gitlab_client(API, token or fake.token, transport=fake.transport())
    client._sleep = lambda s: None  # no real waiting in tests
    with client:
        src = GitLabSource(client, Settings(), graphql_url=graphql_url_for(API))
        return src.collect_project(store, ws.signer(), path, since=None, now=now)


def outcomes(store: Store, number: int) -> dict[str, Outcome]:
    found = store.get(Change, f"acme/app#{number}")
    assert found is not None
    digest, change = found
    ctx = build_context(store, Settings(), NOW)
    return {r.control: r.outcome for r in evaluate_change(change, digest, ctx, CHANGE_CONTROLS)}


@pytest.fixture
def fake() -> FakeGitLab:
    return FakeGitLab()


@pytest.fixture
def proj(fake: FakeGitLab) -> Project:
    p = fake.project("acme/app")
    p.initial(ALICE)
    return p


def test_approved_by_a_non_author(
    fake: FakeGitLab, proj: Project, store: Store, workspace: Workspace
) -> None:
    proj.merge(1, ALICE, approvers=[BOB])
    res = collect(fake, store, workspace)
    assert res.changes == 2 and res.merge_requests == 1 and res.direct_pushes == 0
    o = outcomes(store, 1)
    assert o["CM-REV-1"] == Outcome.PASS
    assert o["CM-REV-2"] == Outcome.PASS
    assert o["CM-REV-3"] == Outcome.PASS
    assert o["CM-REV-5"] == Outcome.PASS
    found = store.get(Change, "acme/app#1")
    assert found is not None
    change = found[1]
    assert change.platform == "gitlab" and change.change_type == "merge"
    assert change.reviews is not None and change.reviews[0].commit_sha == change.head_sha


@pytest.mark.parametrize("prevented", [True, False])
def test_approved_by_the_author(
    fake: FakeGitLab, proj: Project, store: Store, workspace: Workspace, prevented: bool
) -> None:
    proj.author_approval = not prevented
    proj.merge(2, ALICE, approvers=[ALICE])
    collect(fake, store, workspace)
    o = outcomes(store, 2)
    assert o["CM-REV-1"] == Outcome.FAIL  # never counted, whatever the project allows
    assert o["CM-REV-2"] == Outcome.FAIL
    [snap] = store.records(ProtectionSnapshot)
    assert snap.layers[0].author_approval_allowed is (not prevented)


def test_approved_by_a_committer(
    fake: FakeGitLab, proj: Project, store: Store, workspace: Workspace
) -> None:
    cs = proj.branch_commits(ALICE, 1, committer=CAROL)
    proj.merge(3, ALICE, commits=cs, approvers=[CAROL])
    collect(fake, store, workspace)
    o = outcomes(store, 3)
    assert (o["CM-REV-1"], o["CM-REV-2"]) == (Outcome.FAIL, Outcome.FAIL)


def test_approval_reset_on_push(
    fake: FakeGitLab, proj: Project, store: Store, workspace: Workspace
) -> None:
    first = proj.branch_commits(ALICE, 1)
    t_approve = proj.tick()
    second = Commit(sha("p"), ALICE, ALICE, "more", proj.tick(), [first[0].sha])
    t_push = second.at
    proj.merge(
        4,
        ALICE,
        commits=[*first, second],
        approvals=[(BOB, t_approve)],
        approved_by=[],  # GitLab reset it on the push
        pushes=[(ALICE, t_push, [second])],
        versions=[(1, first[0].at, first[0].sha, first), (2, t_push, second.sha, [*first, second])],
    )
    res = collect(fake, store, workspace)
    assert res.versions_fetched == 1
    found = store.get(Change, "acme/app#4")
    assert found is not None
    [review] = found[1].reviews or ()
    assert review.dismissed_at == t_push and review.dismissed_by is not None
    assert review.commit_sha == first[0].sha
    assert outcomes(store, 4)["CM-REV-1"] == Outcome.FAIL


def test_approval_before_last_push_without_reset_is_stale(
    fake: FakeGitLab, proj: Project, store: Store, workspace: Workspace
) -> None:
    proj.reset_on_push = False
    first = proj.branch_commits(ALICE, 1)
    t_approve = proj.tick()
    second = Commit(sha("p"), ALICE, ALICE, "more", proj.tick(), [first[0].sha])
    proj.merge(
        5,
        ALICE,
        commits=[*first, second],
        approvals=[(BOB, t_approve)],
        approved_by=[BOB],
        pushes=[(ALICE, second.at, [second])],
        versions=[
            (1, first[0].at, first[0].sha, first),
            (2, second.at, second.sha, [*first, second]),
        ],
    )
    collect(fake, store, workspace)
    o = outcomes(store, 5)
    assert o["CM-REV-1"] == Outcome.FAIL
    assert o["CM-REV-3"] == Outcome.FAIL


def test_rebased_away_commit_authors_are_participants(
    fake: FakeGitLab, proj: Project, store: Store, workspace: Workspace
) -> None:
    gone = Commit(sha("gone"), BOB, BOB, "bob's work", proj.tick(), [proj.history[-1].sha])
    final = Commit(sha("final"), ALICE, ALICE, "rebased", proj.tick(), [proj.history[-1].sha])
    t_push = final.at
    t_approve = proj.tick()
    proj.merge(
        6,
        ALICE,
        commits=[final],
        approvals=[(BOB, t_approve)],
        approved_by=[BOB],
        pushes=[(ALICE, t_push, [final])],
        versions=[(1, gone.at, gone.sha, [gone]), (2, t_push, final.sha, [final])],
    )
    collect(fake, store, workspace)
    o = outcomes(store, 6)
    assert o["CM-REV-1"] == Outcome.FAIL  # bob wrote code in an earlier version
    assert o["CM-REV-2"] == Outcome.FAIL


def test_failed_pipeline_merged(
    fake: FakeGitLab, proj: Project, store: Store, workspace: Workspace
) -> None:
    # an earlier collect recorded the protection in force (pipelines must succeed) …
    collect(fake, store, workspace, now=proj.tick())
    # … then an MR was merged with a failed pipeline
    proj.merge(7, ALICE, approvers=[BOB], pipeline="failed")
    collect(fake, store, workspace)
    found = store.get(Change, "acme/app#7")
    assert found is not None
    checks = found[1].checks or ()
    assert {c.name: c.conclusion for c in checks} == {"pipeline": "failure", "test": "failure"}
    snaps = store.records(ProtectionSnapshot)
    assert len(snaps) == 2  # re-taken at every collect: known over time
    assert snaps[0].layers[0].required_checks == (("pipeline", "gitlab"),)
    assert outcomes(store, 7)["CM-TST-1"] == Outcome.FAIL


def test_protection_unknown_at_merge_is_indeterminate(
    fake: FakeGitLab, proj: Project, store: Store, workspace: Workspace
) -> None:
    proj.merge(17, ALICE, approvers=[BOB], pipeline="failed")
    collect(fake, store, workspace)  # first snapshot only after the merge
    assert outcomes(store, 17)["CM-TST-1"] == Outcome.INDETERMINATE


def test_deployment_with_approval(
    fake: FakeGitLab, proj: Project, store: Store, workspace: Workspace
) -> None:
    proj.merge(8, ALICE, approvers=[BOB])
    head = proj.history[-1].sha
    proj.deploy("staging", head, BOT)
    proj.deploy("production", head, BOT, approver=CAROL)
    res = collect(fake, store, workspace)
    assert res.deployments == 2
    deps = {d.environment: d for d in store.records(Deployment)}
    assert deps["production"].commit_sha == head and deps["production"].status == "success"
    assert deps["production"].actor is not None and deps["production"].actor.type == "bot"
    [appr] = store.records(DeploymentApproval)
    assert appr.approver.login == "carol" and appr.environment == "production"


def test_squash_fast_forward_and_direct_push(
    fake: FakeGitLab, proj: Project, store: Store, workspace: Workspace
) -> None:
    proj.merge(9, ALICE, approvers=[BOB], method="squash")
    proj.merge(10, ALICE, approvers=[BOB], method="ff", commits=proj.branch_commits(ALICE, 2))
    proj.direct_push(CAROL)
    res = collect(fake, store, workspace)
    assert res.direct_pushes == 1
    changes = {c.number: c for c in store.records(Change, repo="acme/app")}
    assert changes[9].change_type == "squash"
    assert changes[10].change_type == "rebase" and len(changes[10].landed_shas) == 2
    push = next(c for c in changes.values() if c.change_type == "direct_push")
    assert push.merged_by is not None and push.merged_by.email == "carol@example.com"


def test_merged_as_part_of_another_mr_is_not_counted_twice(
    fake: FakeGitLab, proj: Project, store: Store, workspace: Workspace
) -> None:
    shared = proj.branch_commits(BOB, 1)
    extra = proj.branch_commits(ALICE, 1)
    extra[0].parents = [shared[0].sha]
    host = proj.merge(11, ALICE, commits=[*shared, *extra], approvers=[CAROL])
    # MR !12 held only bob's commit; GitLab marked it merged when !11 landed
    from tests.sources.gitlab.fake_gitlab import MR

    proj.mrs.append(MR(12, "Bob's part", BOB, shared, host.merged_at, ALICE))
    res = collect(fake, store, workspace)
    assert res.absorbed == 1
    changes = store.records(Change, repo="acme/app")
    assert [c.number for c in changes if c.number] == [11]
    assert changes[-1].absorbed == ("acme/app!12",)


def test_incremental_recollect_is_cheap(
    fake: FakeGitLab, proj: Project, store: Store, workspace: Workspace
) -> None:
    proj.merge(13, ALICE, approvers=[BOB])
    collect(fake, store, workspace)
    before = len(fake.requests)
    res = collect(fake, store, workspace)
    assert res.changes == 0
    assert len(fake.requests) - before <= 8
    proj.merge(14, ALICE, approvers=[BOB])
    res = collect(fake, store, workspace)
    assert res.changes == 1
    assert len(store.records(Change, repo="acme/app")) == 3


def test_bad_token(fake: FakeGitLab, proj: Project, store: Store, workspace: Workspace) -> None:
    with pytest.raises(SourceError, match="rejected the token"):
        collect(fake, store, workspace, token="glpat-wrong")
    assert store.records(Change) == []


def test_project_not_found(fake: FakeGitLab, store: Store, workspace: Workspace) -> None:
    with pytest.raises(SourceError, match="404"):
        collect(fake, store, workspace, "acme/nope")


def test_server_errors_are_retried(
    fake: FakeGitLab, proj: Project, store: Store, workspace: Workspace
) -> None:
    proj.merge(15, ALICE, approvers=[BOB])
    fake.fail_next["/api/graphql"] = [502, 503]
    res = collect(fake, store, workspace)
    assert res.merge_requests == 1


def test_not_gitlab(store: Store, workspace: Workspace) -> None:
    import httpx

    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>login</html>", headers={"content-type": "text/html"})

    client = build_gitlab_client(API, "t", transport=httpx.MockTransport(html))
    with client, pytest.raises(SourceError, match="not JSON"):
        GitLabSource(client, Settings(), graphql_url=graphql_url_for(API)).collect_project(
            store, workspace.signer(), "acme/app", since=None, now=NOW
        )


def test_graphql_url() -> None:
    assert graphql_url_for("https://gitlab.com/api/v4") == "https://gitlab.com/api/graphql"
    assert graphql_url_for("https://h/gl/api/v4/") == "https://h/gl/api/graphql"


def test_approval_time_unknown_fails_closed(
    fake: FakeGitLab, proj: Project, store: Store, workspace: Workspace
) -> None:
    mr = proj.merge(16, ALICE, approvers=[])
    mr.approved_by = [BOB]  # approver known, but no activity note with the time
    collect(fake, store, workspace)
    assert outcomes(store, 16)["CM-REV-1"] == Outcome.INDETERMINATE


def test_more_than_a_page_of_commits_and_notes_is_followed(
    fake: FakeGitLab, proj: Project, store: Store, workspace: Workspace
) -> None:
    cs = proj.branch_commits(ALICE, 120)
    cs[110].committer = CAROL  # beyond the first nested page: must still be a participant
    proj.merge(18, ALICE, commits=cs, approvers=[CAROL])
    collect(fake, store, workspace)
    found = store.get(Change, "acme/app#18")
    assert found is not None and len(found[1].commits) == 120
    assert outcomes(store, 18)["CM-REV-2"] == Outcome.FAIL


def test_cli_refuses_without_project_or_token(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEPROOF_")}
    cmd = [sys.executable, "-m", "changeproof", "collect", "gitlab"]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "no GitLab project" in r.stderr
    r = subprocess.run(
        [*cmd, "--project", "acme/app"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2 and "CHANGEPROOF_GITLAB_TOKEN" in r.stderr and "read_api" in r.stderr
    assert "Traceback" not in r.stderr
