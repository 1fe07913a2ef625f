"""Several `changeproof collect git` processes against one PostgreSQL at once.

Same repository twice (the advisory-lock claim makes the second continue from the first's
cursor), different repositories in parallel (including two names for identical history, so
the locker sees the same payloads from two transactions at once): afterwards no duplicate
rows, every cursor at its tip, and `changeproof verify` intact. Needs CHANGEPROOF_TEST_PG_URL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from changeproof.evidence import Change
from changeproof.locker import Locker, verify_locker
from changeproof.store import Store, schema
from changeproof.workspace import Workspace

CLI = [sys.executable, "-m", "changeproof"]
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def make_repo(path: Path, prs: int, *, seed: str = "") -> int:
    """A repository whose main has `prs` merged PRs (merge commits with one feature commit
    each) and a direct push every tenth, built in one `git fast-import`. Returns the number
    of first-parent commits on main."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    out: list[str] = []
    mark = 0
    t = T0

    def commit(ref: str, msg: str, parents: list[int], name: str, content: str) -> int:
        nonlocal mark, t
        mark += 1
        t += 60
        data = msg.encode()
        out.append(f"commit {ref}\nmark :{mark}\n")
        out.append(f"author {name} <{name.lower()}@example.com> {t} +0000\n")
        out.append(f"committer {name} <{name.lower()}@example.com> {t} +0000\n")
        out.append(f"data {len(data)}\n{msg}\n")
        if parents:
            out.append(f"from :{parents[0]}\n")
        for p in parents[1:]:
            out.append(f"merge :{p}\n")
        body = content.encode()
        out.append(f"M 100644 inline f{mark % 7}.txt\ndata {len(body)}\n{content}\n\n")
        return mark

    tip = commit("refs/heads/main", "initial", [], "Alice", f"{seed}init")
    first_parent = 1
    for i in range(1, prs + 1):
        feat = commit("refs/heads/feature", f"work {i}", [tip], "Bob", f"{seed}work {i}")
        tip = commit(
            "refs/heads/main",
            f"Merge pull request #{i} from acme/feature-{i}",
            [tip, feat],
            "Carol",
            f"{seed}merge {i}",
        )
        first_parent += 1
        if i % 10 == 0:
            tip = commit("refs/heads/main", f"hotfix {i}", [tip], "Mallory", f"{seed}fix {i}")
            first_parent += 1
    subprocess.run(
        ["git", "-C", str(path), "fast-import", "--quiet"],
        input="".join(out).encode(),
        check=True,
    )
    subprocess.run(["git", "-C", str(path), "checkout", "-q", "main"], check=True)
    return first_parent


def collect_all(
    home: Path, db: str, jobs: list[tuple[Path, str]]
) -> list[subprocess.CompletedProcess[str]]:
    """Start every `collect git` at once, wait for all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEPROOF_")}
    procs = [
        subprocess.Popen(
            [*CLI, "--home", str(home), "--db", db, "collect", "git", str(p), "--repo", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for p, name in jobs
    ]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def verify_cli(home: Path, db: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEPROOF_")}
    return subprocess.run(
        [*CLI, "--home", str(home), "--db", db, "verify"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def assert_no_duplicates(store: Store) -> None:
    e, o, ci = schema.locker_entries, schema.locker_objects, schema.commit_index
    with store.connect() as conn:
        dup_entries = conn.execute(
            sa.select(e.c.digest).group_by(e.c.digest).having(sa.func.count() > 1)
        ).all()
        n_entries = conn.execute(sa.select(sa.func.count()).select_from(e)).scalar_one()
        n_objects = conn.execute(sa.select(sa.func.count()).select_from(o)).scalar_one()
        # every landed commit is attributed to exactly one change
        orphans = conn.execute(
            sa.select(sa.func.count())
            .select_from(ci)
            .where(
                ~sa.exists().where(
                    schema.evidence.c.kind == "change", schema.evidence.c.key == ci.c.change_key
                )
            )
        ).scalar_one()
    assert dup_entries == [], "a payload was appended to the chain twice"
    assert n_entries == n_objects, "every stored object has exactly one chain entry"
    assert orphans == 0


def changes_of(store: Store, repo: str) -> list[Change]:
    return store.records(Change, repo=repo)


@pytest.fixture
def pg_workspace(tmp_path: Path, pg_url: str) -> Workspace:
    ws = Workspace.resolve(str(tmp_path / "ws"), pg_url, str(tmp_path / "changeproof.toml"))
    ws.ensure_home()
    return ws


def test_same_repository_twice_at_once(tmp_path: Path, pg_workspace: Workspace) -> None:
    ws = pg_workspace
    expected = make_repo(tmp_path / "api", 300)
    runs = collect_all(ws.home, ws.db_url, [(tmp_path / "api", "acme/api")] * 3)
    assert [r.returncode for r in runs] == [0, 0, 0], [r.stderr for r in runs]
    # one process did the work, the others waited for its claim and found nothing new
    outputs = sorted(r.stdout for r in runs)
    assert sum(f"{expected} first-parent" in o for o in outputs) == 1, outputs
    assert sum("0 new first-parent" in o for o in outputs) == 2, outputs
    with Store.open(ws.db_url) as store:
        changes = changes_of(store, "acme/api")
        assert len(changes) == expected
        assert len({c.id for c in changes}) == expected
        assert sum(len(c.landed_shas) for c in changes) == expected
        assert_no_duplicates(store)
        assert verify_locker(store, ws.public_key_pem()).ok
    v = verify_cli(ws.home, ws.db_url)
    assert v.returncode == 0 and v.stdout.startswith("intact"), v.stdout + v.stderr


def test_different_repositories_in_parallel(tmp_path: Path, pg_workspace: Workspace) -> None:
    ws = pg_workspace
    n_api = make_repo(tmp_path / "api", 80, seed="api ")
    n_web = make_repo(tmp_path / "web", 60, seed="web ")
    # the same history under a second name: identical raw payloads in two transactions
    runs = collect_all(
        ws.home,
        ws.db_url,
        [
            (tmp_path / "api", "acme/api"),
            (tmp_path / "web", "acme/web"),
            (tmp_path / "api", "acme/api-mirror"),
            (tmp_path / "web", "acme/web"),
        ],
    )
    assert [r.returncode for r in runs] == [0, 0, 0, 0], [r.stderr for r in runs]
    with Store.open(ws.db_url) as store:
        assert len(changes_of(store, "acme/api")) == n_api
        assert len(changes_of(store, "acme/api-mirror")) == n_api
        assert len(changes_of(store, "acme/web")) == n_web
        assert sorted(store.repos()) == ["acme/api", "acme/api-mirror", "acme/web"]
        tips = {
            r: store.cursor("git", f"{r}:main") for r in ("acme/api", "acme/api-mirror", "acme/web")
        }
        assert all(tips.values()), tips  # no lost cursor update
        assert tips["acme/api"] == tips["acme/api-mirror"]
        assert_no_duplicates(store)
        rep = verify_locker(store, ws.public_key_pem())
        assert rep.ok, rep.problems
        assert rep.checkpoints >= 3
    v = verify_cli(ws.home, ws.db_url)
    assert v.returncode == 0, v.stdout + v.stderr


def test_incremental_collectors_racing_new_commits(tmp_path: Path, pg_workspace: Workspace) -> None:
    """Two collectors of one repository, again and again while it grows: every round
    ends with each change stored once and the cursor at the tip."""
    ws = pg_workspace
    path = tmp_path / "api"
    make_repo(path, 20)
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    for i in range(3):
        for j in range(5):
            (path / "g.txt").write_text(f"{i} {j}\n")
            subprocess.run(["git", "-C", str(path), "add", "-A"], check=True, env=env)
            subprocess.run(
                [
                    "git", "-C", str(path), "-c", "user.name=Dev", "-c", "user.email=d@x",
                    "commit", "-qm", f"feat {i}.{j} (#{1000 + i * 10 + j})",
                ],
                check=True,
                env=env,
            )  # fmt: skip
        runs = collect_all(ws.home, ws.db_url, [(path, "acme/api")] * 2)
        assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    tip = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with Store.open(ws.db_url) as store:
        changes = changes_of(store, "acme/api")
        squashes = [c for c in changes if c.number is not None and c.number >= 1000]
        assert sorted(c.number or 0 for c in squashes) == [
            1000 + i * 10 + j for i in range(3) for j in range(5)
        ]
        assert store.cursor("git", "acme/api:main") == tip
        assert_no_duplicates(store)
    assert verify_cli(ws.home, ws.db_url).returncode == 0


def test_claim_makes_a_second_writer_wait_for_the_first(pg_workspace: Workspace) -> None:
    """Writer.claim: a second unit of work on the same scope starts only after the first
    committed (so it reads the first's cursor); another scope does not wait."""
    ws = pg_workspace
    events: list[str] = []
    holding = threading.Event()

    def first() -> None:
        with Store.open(ws.db_url) as store, store.writer() as w:
            w.claim("repo", "acme/api")
            holding.set()
            time.sleep(0.5)
            w.set_cursor("git", "acme/api:main", "aaa")
            events.append("first commits")
        events.append("first committed")

    def second(scope: str, label: str) -> None:
        holding.wait(10)
        with Store.open(ws.db_url) as store, store.writer() as w:
            w.claim("repo", scope)
            events.append(f"{label} claimed, cursor={store.cursor('git', 'acme/api:main')}")

    t1 = threading.Thread(target=first)
    t2 = threading.Thread(target=second, args=("acme/api", "same"))
    t3 = threading.Thread(target=second, args=("acme/web", "other"))
    for t in (t1, t2, t3):
        t.start()
    for t in (t1, t2, t3):
        t.join(30)
    assert events.index("same claimed, cursor=aaa") > events.index("first committed")
    assert events.index("other claimed, cursor=None") < events.index("first commits")


def test_concurrent_upserts_of_one_key_do_not_conflict(pg_workspace: Workspace) -> None:
    """Two transactions writing the same record and payload at once (without a claim):
    the second waits for the first and then updates — no unique violation, one row, one
    chain entry."""
    from datetime import UTC, datetime

    from changeproof.evidence import Deployment, Provenance

    ws = pg_workspace
    signer = ws.signer()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def write(status: str) -> None:
        try:
            with Store.open(ws.db_url) as store, store.writer(Locker(signer)) as w:
                raw = w.put_raw(b"deploy 1 payload", kind="deploy", source="unit")
                at = datetime(2026, 1, 2, tzinfo=UTC)
                w.put(
                    Deployment(
                        id="d1",
                        repo="acme/api",
                        environment="production",
                        commit_sha="a" * 40,
                        status=status,  # type: ignore[arg-type]
                        started_at=at,
                        provenance=Provenance(
                            source="unit", occurred_at=at, collected_at=at, raw_sha256=raw
                        ),
                    )
                )
                # both buffered: now flush and commit at the same moment
                barrier.wait(10)
        except BaseException as exc:
            errors.append(exc)

    ts = [threading.Thread(target=write, args=(s,)) for s in ("started", "success")]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert errors == []
    with Store.open(ws.db_url) as store:
        assert store.count("deployment") == 1
        assert_no_duplicates(store)
        rep = verify_locker(store, ws.public_key_pem())
        # the second had nothing new for the chain: one entry, one checkpoint
        assert rep.ok and rep.entries == 1 and rep.checkpoints == 1


def test_hold_keeps_a_second_collection_out_until_the_first_lets_go(
    pg_workspace: Workspace,
) -> None:
    """Store.hold spans several units of work (a collection committing page by page): a
    second holder of the same scope starts after the first let go and reads its last cursor;
    another scope does not wait."""
    ws = pg_workspace
    events: list[str] = []
    holding = threading.Event()
    committed_p1 = threading.Event()
    other_done = threading.Event()

    def first() -> None:
        with Store.open(ws.db_url) as store, store.hold("github", "acme/api"):
            holding.set()
            for page in ("p1", "p2"):
                with store.writer() as w:
                    w.set_cursor("github", "acme/api:prs", page)
                events.append(f"first committed {page}")
                if page == "p1":
                    committed_p1.set()
                    other_done.wait(10)  # another scope gets in while this one is held
                time.sleep(0.2)  # the same scope, waiting, must not get in meanwhile
        events.append("first let go")

    def second(scope: str, label: str) -> None:
        holding.wait(10)
        if label == "other":
            committed_p1.wait(10)
        with Store.open(ws.db_url) as store, store.hold("github", scope):
            events.append(f"{label} holds, cursor={store.cursor('github', 'acme/api:prs')}")
        if label == "other":
            other_done.set()

    threads = [
        threading.Thread(target=first),
        threading.Thread(target=second, args=("acme/api", "same")),
        threading.Thread(target=second, args=("acme/web", "other")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert events.index("same holds, cursor=p2") > events.index("first let go")
    assert events.index("other holds, cursor=p1") < events.index("first committed p2")


def test_two_github_collections_of_one_organisation_at_once(pg_workspace: Workspace) -> None:
    """Two `collect github` runs of the same repositories at the same moment: the second waits
    for each repository the first holds, then finds it unchanged; nothing is stored twice and
    the locker verifies."""
    from changeproof.demo_github import GitHubReplay
    from changeproof.settings import Settings
    from changeproof.sources.github import GitHubSource, Options
    from changeproof.sources.github.collector import github_error_mapper
    from changeproof.sources.http import HttpClient
    from tests.sources.github.conftest import API, scenario_org

    ws = pg_workspace
    org, _ = scenario_org()
    replay = GitHubReplay(org)
    names = sorted(org.repos)
    signer = ws.signer()
    outcomes: list[object] = []

    def collect() -> None:
        client = HttpClient(
            API,
            transport=replay.transport(),
            error_mapper=github_error_mapper,
            sleep=lambda s: None,
        )
        src = GitHubSource(client, Settings(), api_url=API, options=Options(workers=2))
        with Store.open(ws.db_url) as store:
            try:
                src.validate(names)
                outcomes.append(src.collect(store, signer, names))
            except Exception as exc:  # reported by the assertion below
                outcomes.append(exc)

    threads = [threading.Thread(target=collect) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(isinstance(o, list) for o in outcomes) and len(outcomes) == 2, outcomes
    done = [r for o in outcomes if isinstance(o, list) for r in o]
    assert all(r.complete for r in done), [r.notes for r in done]
    # each repository was collected once and found unchanged once
    assert sorted(r.skipped for r in done) == [False] * len(names) + [True] * len(names)
    with Store.open(ws.db_url) as store:
        assert _stored_once(store, ws)


def test_two_gitlab_collections_of_one_project_at_once(pg_workspace: Workspace) -> None:
    """Two `collect gitlab` runs of the same project at the same moment (and a third of
    another project): the project's hold makes the second wait and start from the first's
    cursors; nothing is stored twice and the locker verifies."""
    from changeproof.cli.collect_gitlab import build_gitlab_client, graphql_url_for
    from changeproof.settings import Settings
    from changeproof.sources.gitlab import GitLabSource, ProjectResult
    from tests.sources.gitlab.fake_gitlab import FakeGitLab, User

    api = "https://gitlab.example.com/api/v4"
    now = datetime(2026, 6, 1, tzinfo=UTC)
    alice, bob = User("alice", "Alice", "alice@example.com"), User("bob", "Bob", "b@example.com")
    fake = FakeGitLab()
    for path in ("acme/app", "acme/web"):
        p = fake.project(path)
        p.initial(alice)
        for iid in range(1, 13):
            p.merge(iid, alice if iid % 2 else bob, approvers=[bob if iid % 2 else alice])
        p.direct_push(alice)
    ws = pg_workspace
    signer = ws.signer()
    outcomes: list[tuple[str, ProjectResult | Exception]] = []

    def collect(path: str) -> None:
        client = build_gitlab_client(api, fake.token, transport=fake.transport())
        client._sleep = lambda s: None
        with client, Store.open(ws.db_url) as store:
            src = GitLabSource(client, Settings(), graphql_url=graphql_url_for(api))
            try:
                outcomes.append(
                    (path, src.collect_project(store, signer, path, since=None, now=now))
                )
            except Exception as exc:  # reported by the assertion below
                outcomes.append((path, exc))

    threads = [
        threading.Thread(target=collect, args=(p,)) for p in ("acme/app", "acme/app", "acme/web")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(outcomes) == 3 and not [o for o in outcomes if isinstance(o[1], Exception)], outcomes
    # the first collector of acme/app stored its changes; the second found them stored
    app = sorted(r.changes for p, r in outcomes if p == "acme/app" and isinstance(r, ProjectResult))
    assert app[0] == 0 and app[1] == 14, app
    with Store.open(ws.db_url) as store:
        assert _stored_once(store, ws) == {"acme/app": 14, "acme/web": 14}


def _stored_once(store: Store, ws: Workspace) -> dict[str, int]:
    """Changes stored per repository, after checking no record is stored twice and the
    locker verifies."""
    e = schema.evidence
    with store.connect() as conn:
        dup = conn.execute(
            sa.select(e.c.kind, e.c.key).group_by(e.c.kind, e.c.key).having(sa.func.count() > 1)
        ).all()
        per_repo: dict[str, int] = dict(
            conn.execute(
                sa.select(e.c.repo, sa.func.count())
                .where(e.c.kind == Change.kind)
                .group_by(e.c.repo)
            ).all()
        )
    assert dup == []
    assert verify_locker(store, ws.public_key_pem()).ok
    return per_repo
