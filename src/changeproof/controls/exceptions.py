"""Turning a failure into ``exception``: only a recorded, approved, unexpired exception (or a
completed emergency procedure) can do it, and it never becomes ``pass``."""

from __future__ import annotations

import fnmatch

from changeproof.controls.base import Context
from changeproof.controls.emergency import covering_emergency
from changeproof.evidence import ExceptionGrant
from changeproof.outcomes import EXCEPTABLE, EXCEPTION, Result


def covering_exception(
    result: Result, participant_keys: frozenset[str], ctx: Context
) -> tuple[str, ExceptionGrant] | None:
    for dig, grant in ctx.exceptions:
        if grant.control != result.control:
            continue
        if not fnmatch.fnmatchcase(result.subject, grant.subject):
            continue
        if ctx.now >= grant.expires_at:
            continue
        if ctx.now < grant.granted_at:
            continue  # judged as of a time before the exception existed (--as-of)
        if grant.approver.keys() & participant_keys:
            continue
        return dig, grant
    return None


def apply_exceptions(result: Result, participant_keys: frozenset[str], ctx: Context) -> Result:
    if result.outcome not in EXCEPTABLE:
        return result
    found = covering_exception(result, participant_keys, ctx) if ctx.exceptions else None
    if found is None:
        return _emergency_exception(result, participant_keys, ctx)
    dig, grant = found
    reason = (
        f"excepted by {grant.id}: approved by {grant.approver.login or grant.approver.email}, "
        f"expires {grant.expires_at.isoformat()} — {grant.reason}"
    )
    return Result(
        control=result.control,
        subject=result.subject,
        outcome=EXCEPTION,
        reasons=(reason, *(f"underlying {result.outcome.value}: {r}" for r in result.reasons)),
        repo=result.repo,
        evidence=tuple(sorted({*result.evidence, dig})),
        remediation=result.remediation,
        details=result.details,
    )


def _emergency_exception(result: Result, participant_keys: frozenset[str], ctx: Context) -> Result:
    """A failure of CM-REV-1/CM-TST-1/CM-DEP-2/CM-REV-5 becomes ``exception`` only when an
    emergency covering it passes both CM-EMG-1 and CM-EMG-2 (declared properly at the time,
    and independently reviewed within the window)."""
    found = covering_emergency(result, participant_keys, ctx)
    if found is None:
        return result
    reasons, digests = found
    return Result(
        control=result.control,
        subject=result.subject,
        outcome=EXCEPTION,
        reasons=(*reasons, *(f"underlying {result.outcome.value}: {r}" for r in result.reasons)),
        repo=result.repo,
        evidence=tuple(sorted({*result.evidence, *digests})),
        remediation=result.remediation,
        details=result.details,
    )
