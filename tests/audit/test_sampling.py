"""Sample sizes against the zero-deviation formula, and reproducible seeded selection."""

from __future__ import annotations

import random

import pytest

from changeproof.audit import sampling
from changeproof.errors import UsageError


@pytest.mark.parametrize(
    ("risk", "rate", "expected"),
    [(0.10, 0.10, 22), (0.05, 0.10, 29), (0.10, 0.05, 45), (0.05, 0.05, 59)],
)
def test_sample_sizes_match_the_formula_for_a_large_population(
    risk: float, rate: float, expected: int
) -> None:
    assert sampling.binomial_size(risk, rate) == expected
    assert sampling.hypergeometric_size(risk, rate, 1_000_000) == expected
    plan = sampling.plan_size(100_000, sample=None, risk=risk, tolerable_rate=rate, seed="s")
    assert plan.size == expected and plan.binomial_size == expected


@pytest.mark.parametrize(("population", "expected"), [(50, 18), (100, 20), (250, 21)])
def test_finite_population_correction_makes_small_populations_smaller(
    population: int, expected: int
) -> None:
    n = sampling.hypergeometric_size(0.10, 0.10, population)
    assert n == expected < 22
    # the defining property: n is the smallest size whose no-deviation probability is ≤ risk
    d = 10 * population // 100
    assert sampling.no_deviation_probability(population, d, n) <= 0.10
    assert sampling.no_deviation_probability(population, d, n - 1) > 0.10


def test_tiny_and_empty_populations() -> None:
    assert sampling.hypergeometric_size(0.10, 0.10, 0) == 0
    assert sampling.hypergeometric_size(0.10, 0.10, 1) == 1
    assert sampling.hypergeometric_size(0.10, 0.10, 10) == 9  # (10 - n)/10 ≤ 0.1
    plan = sampling.plan_size(5, sample=25, risk=0.05, tolerable_rate=0.1, seed="x")
    assert plan.size == 5 and "every item" in plan.note


def test_rates_are_validated() -> None:
    assert sampling.parse_rate("5%", "risk") == pytest.approx(0.05)
    assert sampling.parse_rate("0.1", "rate") == pytest.approx(0.1)
    for bad in ("0", "1", "150%", "abc", "-0.1"):
        with pytest.raises(UsageError):
            sampling.parse_rate(bad, "risk")


def test_same_seed_same_sample_whatever_the_population_order() -> None:
    ids = [f"acme/api#{i}" for i in range(1, 2001)] + [f"acme/web@{i:012x}" for i in range(300)]
    first = sampling.select_seeded(ids, "auditor-seed-1", 29)
    for k in range(5):
        shuffled = ids[:]
        random.Random(k).shuffle(shuffled)
        assert sampling.select_seeded(shuffled, "auditor-seed-1", 29) == first
    assert len({i for _, i in first}) == 29
    # ranks are in order and are SHA-256(seed ‖ id)
    assert [r for r, _ in first] == sorted(r for r, _ in first)
    assert all(r == sampling.rank("auditor-seed-1", i) for r, i in first)


def test_another_seed_gives_another_sample() -> None:
    ids = [f"acme/api#{i}" for i in range(1, 2001)]
    a = {i for _, i in sampling.select_seeded(ids, "seed-a", 29)}
    b = {i for _, i in sampling.select_seeded(ids, "seed-b", 29)}
    assert a != b
    assert len(a & b) < 10  # independent draws of 29 from 2000 barely overlap
