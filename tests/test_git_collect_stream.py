"""The streamed git collect over a history big enough for several write batches: every
first-parent commit attributed as built, collected whole or in increments alike, the locker
chain intact, and git's failures reported (real repositories built with git fast-import)."""

from __future__ import annotations

import os
import random
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from changeproof.errors import SourceError
from changeproof.evidence import Change
from changeproof.locker import Locker, verify_locker
from changeproof.settings import Settings
from changeproof.sources.git import FORMAT, GitSource, StreamedCommits, _GitStream
from changeproof.store import Store
from changeproof.workspace import Workspace
from tests.conftest import GIT_ENV, GitRepo

NOW = datetime(2026, 11, 1, tzinfo=UTC)
PEOPLE = [f"Dev {i} <dev{i}@example.com>" for i in range(7)]
# more first-parent commits than one write batch (2,000), so batches overlap the parsing
COMMITS = 2600


@dataclass
class Built:
    """What each first-parent commit (in order) should become: (type, number, side commits)."""

    expected: list[tuple[str, int | None, int]] = field(default_factory=list)


def build(path: Path, n: int, seed: int = 7) -> Built:
    """A first-parent history of ``n`` commits: GitHub merges of one or two feature commits,
    squashes, GitLab merges, direct pushes, and a long-lived branch merged near the end."""
    rng = random.Random(seed)
    out: list[bytes] = []
    built = Built()
    mark = 0
    t = 1_767_225_600

    def commit(ref: str, who: str, msg: str, parent: int, merge: int | None, path: str) -> int:
        nonlocal mark, t
        mark += 1
        t += 11
        data = msg.encode()
        head = f"commit {ref}\nmark :{mark}\nauthor {who} {t} +0000\ncommitter {who} {t} +0000\n"
        out.append(head.encode() + f"data {len(data)}\n".encode() + data + b"\n")
        if parent:
            out.append(f"from :{parent}\n".encode())
        if merge:
            out.append(f"merge :{merge}\n".encode())
        body = f"{mark}\n".encode()
        out.append(f"M 644 inline {path}\ndata {len(body)}\n".encode() + body + b"\n")
        return mark

    main = commit("refs/heads/main", PEOPLE[0], "initial", 0, None, "README.md")
    built.expected.append(("initial", None, 1))
    long_lived = commit("refs/heads/long", PEOPLE[1], "long-lived work", main, None, "long.py")
    for i in range(1, n):
        who = rng.choice(PEOPLE)
        file = f"src/m{rng.randrange(30)}/f{rng.randrange(5)}.py"
        kind = rng.random()
        if i == n - 5:  # the long-lived branch, forked at the start, lands near the end
            main = commit(
                "refs/heads/main",
                who,
                f"Merge pull request #{i} from acme/long",
                main,
                long_lived,
                file,
            )
            built.expected.append(("merge", i, 1))
        elif kind < 0.4:
            side = main
            k = rng.choice((1, 2))
            for j in range(k):
                side = commit("refs/heads/feature", who, f"work {i}.{j}", side, None, file)
            main = commit(
                "refs/heads/main",
                PEOPLE[0],
                f"Merge pull request #{i} from acme/f{i}",
                main,
                side,
                file,
            )
            built.expected.append(("merge", i, k))
        elif kind < 0.8:
            main = commit("refs/heads/main", who, f"Change {i} (#{i})", main, None, file)
            built.expected.append(("squash", i, 1))
        elif kind < 0.9:
            side = commit("refs/heads/topic", who, f"mr work {i}", main, None, file)
            msg = f"Merge branch 't{i}' into 'main'\n\nSee merge request acme/app!{i}"
            main = commit("refs/heads/main", who, msg, main, side, file)
            built.expected.append(("merge", i, 1))
        else:
            main = commit("refs/heads/main", who, f"hotfix {i}", main, None, file)
            built.expected.append(("direct_push", None, 1))
    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=env)
    subprocess.run(
        ["git", "-C", str(path), "fast-import", "--quiet"], input=b"".join(out), check=True, env=env
    )
    return built


def first_parents(path: Path) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(path), "rev-list", "--first-parent", "--reverse", "main"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Built]:
    path = tmp_path_factory.mktemp("stream") / "repo"
    return path, build(path, COMMITS)


def collect(path: Path, store: Store, workspace: Workspace, branch: str = "main") -> int:
    src = GitSource(path, Settings(), repo="acme/app")
    with store.writer(Locker(workspace.signer())) as w:
        return src.collect_branch(store, w, branch, since=None, now=NOW).commits


def test_every_first_parent_commit_is_attributed_as_built(
    history: tuple[Path, Built], store: Store, workspace: Workspace
) -> None:
    path, built = history
    assert collect(path, store, workspace) == COMMITS
    changes = store.records(Change, repo="acme/app")
    shas = first_parents(path)
    assert [c.merge_sha for c in changes] == shas  # one change each, in first-parent order
    got = [(c.change_type, c.number, len(c.commits)) for c in changes]
    assert got == built.expected
    for sha, c in zip(shas, changes, strict=True):
        found = store.change_for_commit("acme/app", sha)
        assert found is not None and found[1].id == c.id
    rep = verify_locker(store, workspace.public_key_pem())
    assert rep.ok, rep.problems
    assert rep.entries == COMMITS + 1  # a raw payload per change, and the coverage record


def test_collecting_in_increments_stores_the_same_changes(
    history: tuple[Path, Built], store: Store, workspace: Workspace, tmp_path: Path
) -> None:
    path, _ = history
    whole = Store.open(f"sqlite:///{tmp_path / 'whole.db'}")
    try:
        collect(path, whole, workspace)
        expected = list(whole.iter_records(Change, repo="acme/app"))
    finally:
        whole.close()
    # the same history collected up to a cut (after the long-lived branch forked, before it
    # lands), then on: merges reaching behind the cut bring in only what the cut did not hold
    shas = first_parents(path)
    cuts = [shas[700], shas[2100], shas[-1]]
    for cut in cuts:
        subprocess.run(["git", "-C", str(path), "branch", "-f", "partial", cut], check=True)
        collect(path, store, workspace, branch="partial")
    got = list(store.iter_records(Change, repo="acme/app"))
    assert len(got) == len(expected) == COMMITS
    # the same records but for the branch they were collected from
    assert [msgspec.structs.replace(c, branch="main") for _, c in got] == [c for _, c in expected]
    assert verify_locker(store, workspace.public_key_pem()).ok


def test_a_failing_git_log_is_reported(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    args = ["log", f"--format={FORMAT}", "no-such-revision", "--"]
    # whether a lookup reads to the end of the output or nothing needed it
    with _GitStream(tmp_path, args) as s, pytest.raises(SourceError, match="bad revision"):
        _ = "0" * 40 in StreamedCommits(s)
    with _GitStream(tmp_path, args) as s, pytest.raises(SourceError, match="no-such-revision"):
        StreamedCommits(s).finish()


def test_since_cuts_what_a_merge_brought_in_at_the_cut(
    repo: GitRepo, store: Store, workspace: Workspace
) -> None:
    """A merge after --since brings in its branch's commits only, not the first-parent history
    before the cut (nor what earlier merges brought in), even where that branch forked."""
    repo.branch("early")
    early = repo.commit("early work", {"e.txt": "1"})
    repo.checkout("main")
    repo.merge("early", "Merge pull request #1 from acme/early")
    fork = repo.commit("old direct push", {"o.txt": "1"})
    repo.clock += 86400 * 30
    cutoff = datetime.fromtimestamp(repo.clock, tz=UTC)
    repo.branch("feature", fork)
    feat = repo.commit("feature work", {"f.txt": "1"})
    repo.checkout("main")
    merge = repo.merge("feature", "Merge pull request #2 from acme/feature")
    src = GitSource(repo.path, Settings(), repo="acme/app")
    with store.writer(Locker(workspace.signer())) as w:
        res = src.collect_branch(store, w, "main", since=cutoff, now=NOW)
    assert res.commits == 1
    [c] = store.records(Change, repo="acme/app")
    assert (c.number, c.merge_sha) == (2, merge)
    assert [x.sha for x in c.commits] == [feat]
    assert early not in {x.sha for x in c.commits}
