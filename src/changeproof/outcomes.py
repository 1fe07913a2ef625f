"""Outcomes and results: what a control says about one subject, and why."""

from __future__ import annotations

import enum

import msgspec


class Outcome(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    EXCEPTION = "exception"
    NOT_APPLICABLE = "not_applicable"
    INDETERMINATE = "indeterminate"

    @property
    def ok(self) -> bool:
        """Only pass, exception (a recorded, approved deviation) and n/a are acceptable."""
        return self in OK


# Module-level names for the members: ``Outcome.PASS`` is a lookup through the enum's
# metaclass (~0.1 µs), and the controls name outcomes millions of times in a check.
PASS = Outcome.PASS
FAIL = Outcome.FAIL
EXCEPTION = Outcome.EXCEPTION
NOT_APPLICABLE = Outcome.NOT_APPLICABLE
INDETERMINATE = Outcome.INDETERMINATE
OK: frozenset[Outcome] = frozenset({PASS, EXCEPTION, NOT_APPLICABLE})
# What an exception (or a completed emergency) can turn into ``exception``.
EXCEPTABLE: frozenset[Outcome] = frozenset({FAIL, INDETERMINATE})


# Worst first: combining outcomes keeps the worst one.
SEVERITY: dict[Outcome, int] = {
    Outcome.INDETERMINATE: 4,
    Outcome.FAIL: 3,
    Outcome.EXCEPTION: 2,
    Outcome.PASS: 1,
    Outcome.NOT_APPLICABLE: 0,
}


def worst(outcomes: list[Outcome]) -> Outcome:
    if not outcomes:
        return Outcome.NOT_APPLICABLE
    return max(outcomes, key=SEVERITY.__getitem__)


class Result(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One control's verdict on one subject, with the digests of the evidence it read."""

    control: str
    subject: str
    outcome: Outcome
    reasons: tuple[str, ...]
    repo: str | None = None
    evidence: tuple[str, ...] = ()  # sha256 digests of the evidence records read
    remediation: str | None = None
    details: dict[str, str] = {}

    def __post_init__(self) -> None:
        if not self.reasons:
            raise ValueError(f"{self.control} {self.subject}: a result needs at least one reason")
