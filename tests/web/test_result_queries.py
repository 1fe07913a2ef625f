"""The read models over stored result groups give exactly what a result-by-result reading of
the run gives: filtered pages (across group boundaries), counts, worst outcomes, posture."""

from __future__ import annotations

from collections import Counter

import msgspec
import pytest

from changeproof.evaluate import run_check, stored_results
from changeproof.outcomes import SEVERITY, Outcome, Result
from changeproof.settings import Settings, Testing
from changeproof.store import Store
from changeproof.web import queries
from changeproof.workspace import Workspace
from tests.controls.storing import put
from tests.controls.test_parallel_check import NOW, _variety

_enc = msgspec.json.Encoder(order="sorted")


@pytest.fixture
def run(workspace: Workspace, store: Store) -> tuple[int, list[Result]]:
    put(workspace, store, *_variety())
    settings = Settings(testing=Testing(required_checks=("build", "test")))
    run_id = run_check(store, settings, NOW).run_id
    return run_id, stored_results(store, run_id)


def _plain(r: Result) -> object:
    return msgspec.json.decode(_enc.encode(r))


@pytest.mark.parametrize(
    ("control", "outcome", "subject", "repo"),
    [
        (None, None, None, None),
        ("CM-REV-1", None, None, None),
        (None, "fail", None, None),
        ("CM-TST-1", "fail", None, "acme/web"),
        (None, "not_applicable", None, "acme/ops"),
        (None, None, "acme/api#4", None),
        ("CM-DEP-1", None, None, None),
        ("CM-NONE-1", None, None, None),
    ],
)
def test_results_pages_match_the_run_result_by_result(
    store: Store,
    run: tuple[int, list[Result]],
    control: str | None,
    outcome: str | None,
    subject: str | None,
    repo: str | None,
) -> None:
    run_id, every = run
    want = [
        _plain(r)
        for r in every
        if (control is None or r.control == control)
        and (outcome is None or r.outcome == outcome)
        and (subject is None or r.subject == subject)
        and (repo is None or r.repo == repo)
    ]
    for limit, offset in ((1000, 0), (7, 0), (7, 5), (4, 13), (50, len(want) - 3), (5, 10**6)):
        total, page = queries.results(
            store,
            run_id,
            control=control,
            outcome=outcome,
            subject=subject,
            repo=repo,
            limit=limit,
            offset=offset,
        )
        assert total == len(want)
        assert page == want[max(offset, 0) : max(offset, 0) + limit]


def test_worst_outcomes_and_posture_count_every_result(
    store: Store, run: tuple[int, list[Result]]
) -> None:
    run_id, every = run
    worst: dict[str, Outcome] = {}
    for r in every:
        if r.subject not in worst or SEVERITY[r.outcome] > SEVERITY[worst[r.subject]]:
            worst[r.subject] = r.outcome
    assert queries.subject_outcomes(store, run_id) == {k: v.value for k, v in worst.items()}
    counts: dict[str, Counter[str]] = {}
    for r in every:
        counts.setdefault(r.control, Counter())[r.outcome.value] += 1
    got = {p["control"]: p["counts"] for p in queries.posture(store, run_id)}
    assert got == {k: dict(v) for k, v in counts.items()}
    assert (
        len({r.control for r in every}) > 10
        and Counter(r.outcome for r in every)[Outcome.FAIL] > 20
    )
