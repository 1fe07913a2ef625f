"""Judging changes in worker processes gives exactly the in-process results."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest
import sqlalchemy as sa

from changeproof.evaluate import (
    Period,
    iter_result_groups,
    iter_results,
    run_check,
    stored_results,
)
from changeproof.evidence import Change, Coverage, Deployment, FileChange
from changeproof.settings import Settings, Testing
from changeproof.store import Store, schema
from changeproof.workspace import Workspace
from tests.controls.builders import MERGED, check, commit, layer, prov, review, snapshot, user
from tests.controls.builders import change as make_change
from tests.controls.storing import put

NOW = MERGED + timedelta(days=30)


def _variety() -> list[Change | Deployment]:
    """Changes in three repositories that pass and fail in different ways, and deployments."""
    out: list[Change | Deployment] = []
    for r, repo in enumerate(("acme/api", "acme/web", "acme/ops")):
        for n in range(1, 31):
            at = MERGED + timedelta(hours=7 * n + r)
            kind = n % 6
            kw: dict[str, object] = {"repo": repo, "number": n, "merged_at": at}
            kw["merge_sha"] = f"{r:02d}{n:038x}"
            kw["landed_shas"] = (kw["merge_sha"],)
            if kind == 1:  # self-approved
                kw["reviews"] = (review("alice", at=at - timedelta(hours=1)),)
            elif kind == 2:  # a failing required check
                kw["checks"] = (check("build", "failure", at=at - timedelta(hours=1)),)
            elif kind == 3:  # a direct push
                kw.update(change_type="direct_push", number=None, reviews=(), body="")
                kw["commits"] = (commit(sha=str(kw["merge_sha"]), at=at),)
            elif kind == 4:  # a sensitive path and an empty change record
                kw.update(files=(FileChange(path="infra/prod/main.tf"),), body="fix")
            elif kind == 5:  # approval of an older commit
                kw["reviews"] = (review("bob", sha="9" * 40, at=at - timedelta(hours=1)),)
            out.append(make_change(**kw))
            if n % 10 == 0:
                out.append(
                    Deployment(
                        id=f"{repo}/prod/{n}",
                        repo=repo,
                        environment="production",
                        commit_sha=str(kw["merge_sha"]),
                        status="success",
                        started_at=at + timedelta(hours=1),
                        finished_at=at + timedelta(hours=2),
                        actor=user("carol"),
                        provenance=prov(at + timedelta(hours=1), repo, "dep", n),
                    )
                )
    return out


def _rows(store: Store, run_id: int) -> list[tuple[object, ...]]:
    t = schema.result_groups
    q = sa.select(t.c.subject, t.c.repo, t.c.outcomes, t.c.worst, t.c.n, t.c.digest, t.c.body)
    with store.connect() as conn:
        return [tuple(r) for r in conn.execute(q.where(t.c.run_id == run_id).order_by(t.c.id))]


def test_worker_processes_store_the_same_results_in_the_same_order(
    workspace: Workspace, store: Store
) -> None:
    put(workspace, store, *_variety())
    settings = Settings(testing=Testing(required_checks=("build", "test")))
    one = run_check(store, settings, NOW, jobs=1)
    two = run_check(store, settings, NOW, jobs=2, parallel_from=0)
    assert one.results_digest == two.results_digest
    assert one.summary.as_dict() == two.summary.as_dict()
    assert _rows(store, one.run_id) == _rows(store, two.run_id)
    # the variety is real: several controls fail, and deployments were judged
    counts = one.summary.as_dict()
    assert counts["CM-REV-1"].get("fail", 0) >= 10
    assert counts["CM-TST-1"].get("fail", 0) >= 10
    assert sum(counts["CM-DEP-1"].values()) == 9
    # a period and a repository narrow the stream the same way in both modes
    window = Period(MERGED + timedelta(days=2), MERGED + timedelta(days=6))
    a = run_check(store, settings, NOW, period=window, repo="acme/web", jobs=1)
    b = run_check(store, settings, NOW, period=window, repo="acme/web", jobs=2, parallel_from=0)
    assert a.results_digest == b.results_digest
    assert _rows(store, a.run_id) == _rows(store, b.run_id)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_corrupt_stored_change_stops_the_run_and_stores_nothing(
    workspace: Workspace, store: Store, jobs: int
) -> None:
    put(workspace, store, *_variety())
    t = schema.evidence
    with store.engine.begin() as conn:
        victim = conn.execute(
            sa.select(t.c.id).where(t.c.kind == Change.kind).order_by(t.c.id).limit(1).offset(40)
        ).scalar_one()
        conn.execute(sa.update(t).where(t.c.id == victim).values(body=b'{"repo": 7}'))
    with pytest.raises(msgspec.ValidationError):
        run_check(store, Settings(), NOW, jobs=jobs, parallel_from=0)
    with store.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.runs)).scalar() == 0
        n = conn.execute(sa.select(sa.func.count()).select_from(schema.result_groups)).scalar()
        assert n == 0


@pytest.mark.parametrize("jobs", [1, 2])
def test_small_batches_gather_the_same_population_as_one(
    workspace: Workspace, store: Store, jobs: int
) -> None:
    # What the record controls learn from the stream (spans per branch, probable bypasses,
    # changes merged in weak-protection windows, deployments traced to changes, changes
    # since the last shipped one) is gathered per batch and merged: batch boundaries
    # anywhere must not change a single result.
    weak = layer(required_approvals=0)
    snaps = [
        snapshot(MERGED - timedelta(days=1), repo=repo, branch="main")
        for repo in ("acme/api", "acme/web")
    ] + [
        snapshot(MERGED + timedelta(days=2), weak, repo="acme/api", branch="main"),
        snapshot(MERGED + timedelta(days=5), repo="acme/api", branch="main"),
        snapshot(MERGED + timedelta(days=3, hours=5), weak, repo="acme/web", branch="main"),
    ]
    covs = [
        Coverage(
            id=f"git:{repo}:main",
            source="git",
            repo=repo,
            branch="main",
            start=None,
            end=NOW,
            complete=True,
            provenance=prov(NOW, "coverage", repo),
        )
        for repo in ("acme/api", "acme/web", "acme/ops")
    ]
    # no deployment after the 20th change of each repository: the ten after it are unshipped
    evidence = [x for x in _variety() if not (isinstance(x, Deployment) and x.id.endswith("/30"))]
    put(workspace, store, *evidence, *snaps, *covs)
    settings = Settings(testing=Testing(required_checks=("build", "test")))
    whole = run_check(store, settings, NOW, jobs=1)
    unshipped = [
        r
        for r in stored_results(store, whole.run_id)
        if r.control == "CM-POP-1" and any("not shipped yet" in x for x in r.reasons)
    ]
    print([r for r in stored_results(store, whole.run_id) if r.control == "CM-POP-1"])
    assert len(unshipped) == 3  # changes merged after each repository's last deployment
    counts = whole.summary.as_dict()
    assert counts["CM-CFG-3"].get("fail", 0) >= 2  # the weak windows had changes merged in them
    assert counts["CM-CFG-2"].get("fail", 0) >= 1  # probable bypasses were found
    for size in (1, 3, 7, 40):
        run = run_check(store, settings, NOW, jobs=jobs, parallel_from=0, batch=size)
        assert run.results_digest == whole.results_digest, size
        assert _rows(store, run.run_id) == _rows(store, whole.run_id)


def test_rows_decode_to_the_results_they_store(workspace: Workspace, store: Store) -> None:
    put(workspace, store, *_variety()[:12])
    run = run_check(store, Settings(), NOW)
    assert list(iter_results(store, Settings(), NOW)) == stored_results(store, run.run_id)


@pytest.mark.parametrize("jobs", [1, 2])
def test_groups_carry_bodies_only_for_the_subjects_asked_for(
    workspace: Workspace, store: Store, jobs: int
) -> None:
    put(workspace, store, *_variety())
    settings = Settings(testing=Testing(required_checks=("build", "test")))
    full = [g for c in iter_result_groups(store, settings, NOW) for g in c.groups]
    wanted = frozenset({"acme/api#2", "acme/web#7"})
    lean = [
        g
        for c in iter_result_groups(store, settings, NOW, jobs=jobs, bodies_for=wanted)
        for g in c.groups
    ]
    # the same groups in the same order; bodies and digests only where asked (and for the
    # record controls' results, which are few)
    assert [g[:5] for g in lean] == [g[:5] for g in full]
    change_groups = [(a, b) for a, b in zip(full, lean, strict=True) if "#" in a[0]]
    for a, b in change_groups:
        assert b == (a if a[0] in wanted else (*a[:5], "", b""))
    assert {a[0] for a, b in change_groups if b[6]} == wanted
