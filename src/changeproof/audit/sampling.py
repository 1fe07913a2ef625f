"""Sample size and reproducible sample selection.

Sample size is zero-deviation attribute sampling: the smallest n such that, if the population's
true deviation rate were the tolerable rate T, a sample of n would show no deviation with
probability at most the risk of overreliance R.

* Infinite population (binomial): (1 − T)^n ≤ R, so n = ⌈ln R / ln(1 − T)⌉
  (22, 29, 45, 59 for R/T = 10%/10%, 5%/10%, 10%/5%, 5%/5%).
* Finite population of N with D = ⌈T·N⌉ deviations (hypergeometric):
  P(no deviation in n) = Π_{i<n} (N − D − i) / (N − i) ≤ R. Never larger than the binomial n.

Selection ranks every change by SHA-256(seed ‖ change id) — the UTF-8 bytes of the seed
immediately followed by those of the id — and takes the lowest n. The rank of a change
depends only on the seed and its own id, so the sample does not depend on the population's
order and anyone can re-perform it with sha256sum.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass

from changeproof.errors import UsageError

METHOD_STATISTICAL = "zero-deviation attribute sampling (hypergeometric, finite population)"
METHOD_FIXED = "fixed sample size given by the auditor"
METHOD_LIST = "auditor-supplied list of change ids"
SELECTION_SEEDED = "rank by SHA-256(seed ‖ change id), lowest n"


def _check_rate(name: str, value: float) -> None:
    if not (0.0 < value < 1.0) or math.isnan(value):
        raise UsageError(
            f"{name} must be between 0 and 1 (exclusive), got {value}",
            expected="a fraction such as 0.05 or a percentage such as 5%",
        )


def binomial_size(risk: float, tolerable_rate: float) -> int:
    """n = ⌈ln(risk) / ln(1 − tolerable rate)⌉ (infinite population, zero deviations)."""
    _check_rate("the risk of overreliance", risk)
    _check_rate("the tolerable deviation rate", tolerable_rate)
    # round before ceil so that float noise (e.g. 21.000000000000004) cannot add one
    return math.ceil(round(math.log(risk) / math.log(1.0 - tolerable_rate), 9))


def no_deviation_probability(population: int, deviations: int, n: int) -> float:
    """Hypergeometric P(a sample of n from N shows none of the D deviations)."""
    p = 1.0
    for i in range(n):
        good = population - deviations - i
        if good <= 0:
            return 0.0
        p *= good / (population - i)
    return p


def hypergeometric_size(risk: float, tolerable_rate: float, population: int) -> int:
    """Smallest n with P(no deviation | N, D = ⌈T·N⌉, n) ≤ risk; 0 for an empty population."""
    upper = binomial_size(risk, tolerable_rate)
    if population <= 0:
        return 0
    deviations = max(1, math.ceil(round(tolerable_rate * population, 9)))
    p = 1.0
    for n in range(1, min(upper, population) + 1):
        i = n - 1
        good = population - deviations - i
        p = 0.0 if good <= 0 else p * good / (population - i)
        if p <= risk * (1 + 1e-12):  # float products may land a hair above an exact R
            return n
    return min(upper, population)


def parse_rate(text: str, what: str) -> float:
    """'5%' or '0.05' → 0.05."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise UsageError(
            f"malformed {what} {text!r}",
            expected="a fraction such as 0.05 or a percentage such as 5%",
        ) from None
    _check_rate(what, value)
    return value


def rank(seed: str, change_id: str) -> str:
    return hashlib.sha256((seed + change_id).encode("utf-8")).hexdigest()


def select_seeded(ids: Iterable[str], seed: str, n: int) -> list[tuple[str, str]]:
    """The n ids with the lowest SHA-256(seed ‖ id), as (rank, id) in rank order."""
    if n <= 0:
        return []
    return heapq.nsmallest(n, ((rank(seed, i), i) for i in ids))


@dataclass(frozen=True)
class SamplePlan:
    """How a sample was sized and chosen; recorded verbatim in the package."""

    method: str
    selection: str
    population: int
    size: int
    risk: float | None = None
    tolerable_rate: float | None = None
    binomial_size: int | None = None
    requested: int | None = None
    seed: str | None = None
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "selection": self.selection,
            "population": self.population,
            "size": self.size,
            "risk_of_overreliance": self.risk,
            "tolerable_deviation_rate": self.tolerable_rate,
            "binomial_size": self.binomial_size,
            "requested_size": self.requested,
            "seed": self.seed,
            "note": self.note,
        }


def plan_size(
    population: int,
    *,
    sample: int | None,
    risk: float,
    tolerable_rate: float,
    seed: str | None,
) -> SamplePlan:
    """Size one population's sample: the auditor's fixed N, or the statistical size."""
    selection = SELECTION_SEEDED if seed is not None else METHOD_LIST
    if sample is not None:
        size = min(sample, population)
        note = (
            f"the requested {sample} exceeds the population of {population}: every item is tested"
            if sample > population
            else ""
        )
        return SamplePlan(
            METHOD_FIXED, selection, population, size, requested=sample, seed=seed, note=note
        )
    size = hypergeometric_size(risk, tolerable_rate, population)
    big = binomial_size(risk, tolerable_rate)
    note = ""
    if population and size < big:
        note = f"finite-population correction: {size} instead of {big} for a population of {population}"
    return SamplePlan(
        METHOD_STATISTICAL,
        selection,
        population,
        size,
        risk=risk,
        tolerable_rate=tolerable_rate,
        binomial_size=big,
        seed=seed,
        note=note,
    )
