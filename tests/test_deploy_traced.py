"""CM-DEP-1 and CM-DEP-3 for deployments made without the gate (e.g. collected from GitHub):
what a production deployment shipped is traced through the commit index."""

from __future__ import annotations

from datetime import timedelta

from changeproof.evaluate import iter_results, shipped_changes
from changeproof.locker import Locker
from changeproof.outcomes import Outcome
from changeproof.store import Store
from changeproof.workspace import Workspace
from tests.gate_helpers import T0, approval, change, deployment, settings


def store_all(store: Store, ws: Workspace, records: list[object]) -> None:
    with store.writer(Locker(ws.signer())) as w:
        for seq, r in enumerate(records):
            w.put(r, seq=seq * 1000)  # type: ignore[arg-type]


def dep_results(store: Store, s: object, control: str) -> dict[str, Outcome]:
    out = {}
    for r in iter_results(store, s, T0 + timedelta(days=2)):  # type: ignore[arg-type]
        if r.control == control:
            out[r.subject] = r.outcome
    return out


def test_shipped_ranges_between_production_deployments(store: Store, workspace: Workspace) -> None:
    c1, c2, c3 = change(1), change(2), change(3)
    d1 = deployment("production", c1.merge_sha, at=T0 + timedelta(hours=1), did="d1")
    d2 = deployment("production", c3.merge_sha, at=T0 + timedelta(hours=2), did="d2")
    stg = deployment("staging", c3.merge_sha, at=T0 + timedelta(minutes=90), did="s1")
    store_all(store, workspace, [c1, c2, c3])
    with store.writer(Locker(workspace.signer())) as w:
        for d in (d1, d2, stg):
            w.put(d)
    shipped = shipped_changes(store, settings())
    assert shipped["d1"] == (c1.id,)
    assert shipped["d2"] == tuple(sorted((c2.id, c3.id)))
    assert "s1" not in shipped


def test_dep1_fails_when_a_shipped_change_fails_review(store: Store, workspace: Workspace) -> None:
    good, bad = change(1), change(2, reviewer=None)  # #2 merged without any approval
    store_all(store, workspace, [good, bad])
    with store.writer(Locker(workspace.signer())) as w:
        w.put(deployment("production", good.merge_sha, at=T0 + timedelta(hours=1), did="ok"))
        w.put(deployment("production", bad.merge_sha, at=T0 + timedelta(hours=2), did="nok"))
    got = dep_results(store, settings(), "CM-DEP-1")
    assert got["ok"] == Outcome.PASS
    assert got["nok"] == Outcome.FAIL


def test_dep1_untraceable_commit_stays_indeterminate(store: Store, workspace: Workspace) -> None:
    store_all(store, workspace, [change(1)])
    with store.writer(Locker(workspace.signer())) as w:
        w.put(deployment("production", "f" * 40, at=T0 + timedelta(hours=1), did="x"))
    assert dep_results(store, settings(), "CM-DEP-1")["x"] == Outcome.INDETERMINATE


def test_dep3_release_manager_independence_uses_traced_participants(
    store: Store, workspace: Workspace
) -> None:
    s = settings(
        deployment=__import__("changeproof.settings", fromlist=["Deployment"]).Deployment(
            model="release_manager", release_managers=("rita", "alice")
        )
    )
    c = change(1, author="alice")
    store_all(store, workspace, [c])
    at = T0 + timedelta(hours=1)
    with store.writer(Locker(workspace.signer())) as w:
        w.put(deployment("production", c.merge_sha, at=at, did="by-author"))
        w.put(approval("alice", c.merge_sha, at=at - timedelta(minutes=5)))
    assert dep_results(store, s, "CM-DEP-3")["by-author"] == Outcome.FAIL
    with store.writer(Locker(workspace.signer())) as w:
        w.put(approval("rita", c.merge_sha, at=at - timedelta(minutes=4)))
    assert dep_results(store, s, "CM-DEP-3")["by-author"] == Outcome.PASS
