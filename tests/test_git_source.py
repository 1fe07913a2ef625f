"""The git source against real repositories built with the git CLI: every attribution case."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from changeproof.errors import SourceError
from changeproof.evidence import Change, Coverage
from changeproof.locker import Locker
from changeproof.settings import Repository, Settings
from changeproof.sources.git import GitSource
from changeproof.store import Store
from changeproof.workspace import Workspace
from tests.conftest import GitRepo

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def collect(
    repo: GitRepo,
    store: Store,
    workspace: Workspace,
    settings: Settings | None = None,
    since: datetime | None = None,
    branches: list[str] | None = None,
) -> list[Change]:
    src = GitSource(repo.path, settings or Settings(), repo="acme/app")
    with store.writer(Locker(workspace.signer())) as w:
        for b in src.branches(branches):
            src.collect_branch(store, w, b, since=since, now=NOW)
    return store.records(Change, repo="acme/app")


def by_type(changes: list[Change]) -> dict[str, list[Change]]:
    out: dict[str, list[Change]] = {}
    for c in changes:
        out.setdefault(c.change_type, []).append(c)
    return out


def test_initial_commit_is_its_own_change(
    repo: GitRepo, store: Store, workspace: Workspace
) -> None:
    changes = collect(repo, store, workspace)
    assert [c.change_type for c in changes] == ["initial"]
    assert changes[0].files is not None
    assert [f.path for f in changes[0].files] == ["README.md"]


def test_github_merge_commit_attributes_the_pr_and_its_commits(
    repo: GitRepo, store: Store, workspace: Workspace
) -> None:
    repo.branch("feature")
    c1 = repo.commit("add auth", {"src/auth/login.py": "x"}, author="Bob <bob@example.com>")
    c2 = repo.commit(
        "tweak\n\nCo-authored-by: Carol <carol@example.com>",
        {"src/auth/login.py": "y"},
        author="Bob <bob@example.com>",
    )
    repo.checkout("main")
    m = repo.merge(
        "feature",
        "Merge pull request #7 from acme/feature\n\nAdd login",
        author="Dana <dana@example.com>",
    )
    changes = collect(repo, store, workspace)
    pr = next(c for c in changes if c.number == 7)
    assert pr.change_type == "merge"
    assert pr.merge_sha == m
    assert pr.head_sha == c2
    assert pr.id == "acme/app#7"
    assert {c.sha for c in pr.commits} == {c1, c2}
    assert pr.commits[-1].co_authors[0].email == "carol@example.com"
    assert pr.files is not None and [f.path for f in pr.files] == ["src/auth/login.py"]
    assert pr.reviews is None  # git proves no review


def test_squash_merge(repo: GitRepo, store: Store, workspace: Workspace) -> None:
    sha = repo.commit("Add billing (#12)", {"billing.py": "x"})
    [c] = [c for c in collect(repo, store, workspace) if c.number == 12]
    assert c.change_type == "squash"
    assert c.merge_sha == sha and c.head_sha == sha


def test_rebase_merge_run_is_one_change(repo: GitRepo, store: Store, workspace: Workspace) -> None:
    web = "GitHub <noreply@github.com>"
    clock = repo.clock
    repo.env = {"GIT_COMMITTER_DATE": f"@{clock + 500} +0000"}
    a = repo.commit("part one", {"a.txt": "1"}, author="Eve <eve@example.com>", committer=web)
    b = repo.commit("part two", {"b.txt": "2"}, author="Eve <eve@example.com>", committer=web)
    repo.env = {}
    changes = collect(repo, store, workspace)
    [run] = by_type(changes)["rebase"]
    assert run.landed_shas == (a, b)
    assert {f.path for f in run.files or ()} == {"a.txt", "b.txt"}


def test_gitlab_merge_request(repo: GitRepo, store: Store, workspace: Workspace) -> None:
    repo.branch("topic")
    repo.commit("work", {"w.txt": "1"})
    repo.checkout("main")
    repo.merge("topic", "Merge branch 'topic' into 'main'\n\nWork\n\nSee merge request acme/app!31")
    [mr] = [c for c in collect(repo, store, workspace) if c.number == 31]
    assert mr.change_type == "merge"


def test_gerrit_trailers_count_only_on_declared_gerrit_repo(
    repo: GitRepo, store: Store, workspace: Workspace
) -> None:
    repo.commit(
        "Fix crash\n\nChange-Id: I123\nReviewed-on: https://review.example.com/c/app/+/4321\n"
        "Reviewed-by: Rita Reviewer <rita@example.com>",
        {"c.txt": "1"},
    )
    [plain] = [c for c in collect(repo, store, workspace) if c.change_type == "gerrit"]
    assert plain.number == 4321 and plain.reviews is None
    gerrit = Settings(repositories=(Repository(name="acme/app", platform="gerrit"),))
    store2 = Store.open(f"sqlite:///{workspace.home / 'g.db'}")
    try:
        [g] = [c for c in collect(repo, store2, workspace, gerrit) if c.change_type == "gerrit"]
    finally:
        store2.close()
    assert g.reviews is not None
    assert [r.reviewer.email for r in g.reviews] == ["rita@example.com"]


def test_direct_push_and_revert(repo: GitRepo, store: Store, workspace: Workspace) -> None:
    bad = repo.commit("hotfix straight to main", {"x.txt": "1"}, author="Mallory <m@example.com>")
    repo.git("revert", "--no-edit", bad)
    changes = collect(repo, store, workspace)
    pushes = by_type(changes)["direct_push"]
    assert pushes[0].merge_sha == bad
    revert = pushes[1]
    assert revert.reverts == bad
    assert pushes[0].merged_by is not None and pushes[0].merged_by.email == "m@example.com"


def test_merge_from_a_non_default_branch_without_pr_is_a_direct_push(
    repo: GitRepo, store: Store, workspace: Workspace
) -> None:
    repo.branch("release/1.0")
    repo.commit("release fix", {"r.txt": "1"})
    repo.checkout("main")
    m = repo.merge("release/1.0", "Merge branch 'release/1.0'")
    changes = collect(repo, store, workspace)
    [c] = [c for c in changes if c.merge_sha == m]
    assert c.change_type == "direct_push"
    assert len(c.commits) == 1  # the release commit it brought in is a participant's commit


def test_merge_of_a_pr_from_a_release_branch(
    repo: GitRepo, store: Store, workspace: Workspace
) -> None:
    repo.branch("release/2.0")
    repo.commit("backport", {"r.txt": "2"})
    repo.checkout("main")
    repo.merge("release/2.0", "Merge pull request #99 from acme/release/2.0")
    [c] = [c for c in collect(repo, store, workspace) if c.number == 99]
    assert c.change_type == "merge"


def test_a_second_claim_of_the_same_pr_number_is_not_that_pr(
    repo: GitRepo, store: Store, workspace: Workspace
) -> None:
    repo.commit("Real change (#5)", {"a.txt": "1"})
    fake = repo.commit("Sneaky (#5)", {"b.txt": "1"})
    changes = collect(repo, store, workspace)
    [c] = [c for c in changes if c.merge_sha == fake]
    assert c.change_type == "direct_push"
    assert "already landed" in c.body


def test_renames_keep_both_names(repo: GitRepo, store: Store, workspace: Workspace) -> None:
    repo.commit("base (#1)", {"docs/guide.md": "a\n" * 50})
    (repo.path / "auth").mkdir()
    repo.git("mv", "docs/guide.md", "auth/guide.md")
    repo.git("commit", "-q", "-m", "move (#2)")
    [c] = [c for c in collect(repo, store, workspace) if c.number == 2]
    assert c.files is not None
    [f] = c.files
    assert (f.status, f.path, f.previous_path) == ("renamed", "auth/guide.md", "docs/guide.md")


def test_incremental_collect_reads_only_new_commits(
    repo: GitRepo, store: Store, workspace: Workspace
) -> None:
    src = GitSource(repo.path, Settings(), repo="acme/app")
    with store.writer(Locker(workspace.signer())) as w:
        first = src.collect_branch(store, w, "main", since=None, now=NOW)
    repo.commit("next (#2)", {"n.txt": "1"})
    with store.writer(Locker(workspace.signer())) as w:
        second = src.collect_branch(store, w, "main", since=None, now=NOW)
    with store.writer(Locker(workspace.signer())) as w:
        third = src.collect_branch(store, w, "main", since=None, now=NOW)
    assert (first.commits, second.commits, third.commits) == (1, 1, 0)
    assert second.incremental
    assert len(store.records(Change)) == 2
    assert store.records(Coverage)


def test_since_limits_the_walk(repo: GitRepo, store: Store, workspace: Workspace) -> None:
    repo.commit("old (#1)")
    repo.clock += 86400 * 30
    repo.commit("new (#2)")
    cutoff = datetime.fromtimestamp(repo.clock - 86400, tz=UTC)
    changes = collect(repo, store, workspace, since=cutoff)
    assert [c.number for c in changes] == [2]


def test_empty_period_after_the_last_commit(
    repo: GitRepo, store: Store, workspace: Workspace
) -> None:
    changes = collect(repo, store, workspace, since=datetime(2030, 1, 1, tzinfo=UTC))
    assert changes == []


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a git repository"):
        GitSource(tmp_path, Settings())


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        GitSource(tmp_path / "nope", Settings())


def test_missing_branch(repo: GitRepo) -> None:
    src = GitSource(repo.path, Settings())
    with pytest.raises(SourceError, match="branch 'develop' does not exist"):
        src.branches(["develop"])


def test_shallow_clone_is_refused_with_the_fix(repo: GitRepo, tmp_path: Path) -> None:
    for i in range(3):
        repo.commit(f"c{i} (#{i + 10})")
    shallow = tmp_path / "shallow"
    GitRepo(tmp_path).git("clone", "-q", "--depth", "1", f"file://{repo.path}", str(shallow))
    with pytest.raises(SourceError, match="shallow clone") as err:
        GitSource(shallow, Settings())
    assert "fetch --unshallow" in str(err.value)


def test_history_rewrite_is_noted(repo: GitRepo, store: Store, workspace: Workspace) -> None:
    repo.commit("one (#1)")
    src = GitSource(repo.path, Settings(), repo="acme/app")
    with store.writer(Locker(workspace.signer())) as w:
        src.collect_branch(store, w, "main", since=None, now=NOW)
    repo.git("commit", "-q", "--amend", "-m", "one, rewritten (#1)")
    with store.writer(Locker(workspace.signer())) as w:
        res = src.collect_branch(store, w, "main", since=None, now=NOW)
    assert res.rewritten and "rewritten" in res.notes[0]
