"""The stored layout of a subject's results (outcomes.encode_group / decode_group)."""

from __future__ import annotations

import msgspec
import pytest

from changeproof.outcomes import Outcome, Result, decode_group, encode_group

A, B = "a" * 64, "b" * 64


def _results() -> list[Result]:
    return [
        Result(
            control="CM-REV-1",
            subject="acme/api#1",
            repo="acme/api",
            outcome=Outcome.PASS,
            reasons=("ok",),
            evidence=(A,),
        ),
        Result(
            control="CM-TST-1",
            subject="acme/api#1",
            repo="acme/api",
            outcome=Outcome.FAIL,
            reasons=("no checks", "none at all"),
            evidence=(A, B),
            remediation="run CI",
            details={"k": "v"},
        ),
        Result(
            control="CM-DOC-1",
            subject="acme/api#1",
            repo="acme/api",
            outcome=Outcome.EXCEPTION,
            reasons=("covered",),
            evidence=(),
        ),
        Result(
            control="CM-IAC-1",
            subject="acme/api#1",
            repo="acme/api",
            outcome=Outcome.NOT_APPLICABLE,
            reasons=("n/a",),
            evidence=(A,),
        ),
    ]


def test_round_trip_keeps_every_field() -> None:
    rs = _results()
    body = encode_group(rs)
    assert decode_group(body) == rs
    # canonical: the same results give the same bytes; shared parts are stored once
    assert encode_group(list(rs)) == body
    assert body.count(b"acme/api#1") == 1 and body.count(A.encode()) == 2
    assert len(body) < len(msgspec.json.encode(rs))


def test_a_record_result_without_repository() -> None:
    r = Result(
        control="CM-POP-1",
        subject="population",
        outcome=Outcome.INDETERMINATE,
        reasons=("unknown",),
    )
    assert decode_group(encode_group([r])) == [r]


def test_runs_stored_as_arrays_still_read() -> None:
    rs = _results()
    old = msgspec.json.Encoder(order="sorted").encode(rs)
    assert old.startswith(b"[") and decode_group(old) == rs


def test_one_subject_per_group() -> None:
    rs = _results()
    other = msgspec.structs.replace(rs[1], subject="acme/api#2")
    with pytest.raises(ValueError, match="one subject"):
        encode_group([rs[0], other])
    with pytest.raises(ValueError, match="one subject"):
        encode_group([rs[0], msgspec.structs.replace(rs[1], repo="acme/web")])


def test_unknown_fields_are_refused() -> None:
    body = encode_group(_results()).replace(b'"subject":', b'"extra":1,"subject":')
    with pytest.raises(msgspec.ValidationError):
        decode_group(body)
