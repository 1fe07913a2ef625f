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


# Stored results: a subject's results as one canonical JSON object (a row of result_groups).
# The subject, repository and (usually shared) evidence digests appear once instead of once
# per result, and empty remediation/details are left out: ≈ 40 % of the bytes of a change's
# results, which the check writes (and hashes, and hands between processes) for every change.


class _Item(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True, gc=False):
    control: str
    outcome: Outcome
    reasons: tuple[str, ...]
    remediation: str | None = None
    details: dict[str, str] = {}
    evidence: tuple[str, ...] | None = None  # None: the group's


class _Group(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    subject: str
    repo: str | None
    evidence: tuple[str, ...]  # what most of the results read
    results: tuple[_Item, ...]


_group_encoder = msgspec.json.Encoder(order="sorted")
_group_decoder = msgspec.json.Decoder(_Group)
_list_decoder = msgspec.json.Decoder(list[Result])


def encode_group(results: list[Result]) -> bytes:
    """One subject's results as stored: canonical JSON (sorted keys, no spaces), so the same
    results always give the same bytes and digest."""
    first = results[0]
    common = first.evidence
    if len({(r.subject, r.repo) for r in results}) != 1:
        raise ValueError(f"{first.subject}: a group holds the results of one subject")
    return _group_encoder.encode(
        _Group(
            first.subject,
            first.repo,
            common,
            tuple(
                [
                    _Item(
                        r.control,
                        r.outcome,
                        r.reasons,
                        r.remediation,
                        r.details,
                        None if r.evidence == common else r.evidence,
                    )
                    for r in results
                ]
            ),
        )
    )


def decode_group(body: bytes) -> list[Result]:
    """The results of a stored group; reads both layouts (a JSON array of results is what
    runs stored before the grouped layout)."""
    if body[:1] == b"[":
        return _list_decoder.decode(body)
    g = _group_decoder.decode(body)
    subject, repo, common = g.subject, g.repo, g.evidence
    return [
        Result(
            control=i.control,
            subject=subject,
            outcome=i.outcome,
            reasons=i.reasons,
            repo=repo,
            evidence=common if i.evidence is None else i.evidence,
            remediation=i.remediation,
            details=i.details,
        )
        for i in g.results
    ]
