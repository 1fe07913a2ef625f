"""Evaluating one change: its facts computed once, every change control, then exceptions.

Lives here (not in :mod:`changeproof.evaluate`, which re-exports it) so that the deployment
gate can run exactly the check's evaluation without importing the store and SQLAlchemy.
"""

from __future__ import annotations

from changeproof.controls import CHANGE_CONTROLS, ChangeControl, Context
from changeproof.controls.exceptions import apply_exceptions
from changeproof.controls.facts import compute_facts, shared
from changeproof.evidence import Change
from changeproof.outcomes import EXCEPTABLE, Result


def evaluate_change(
    change: Change, digest: str, ctx: Context, controls: tuple[ChangeControl, ...] = CHANGE_CONTROLS
) -> list[Result]:
    facts = compute_facts(change, ctx.settings)
    # each control's own verdict (before exceptions), for a control that repeats another's
    # (CM-IAC-1 the review controls': ReviewControl.verdict)
    verdicts = shared(facts, ctx)
    pkeys = facts.participant_keys
    out = []
    for control in controls:
        r = control.evaluate(facts, ctx, digest)
        verdicts[control.id] = (digest, r)
        # only a failure or an indeterminate result can be excepted
        out.append(apply_exceptions(r, pkeys, ctx) if r.outcome in EXCEPTABLE else r)
    return out
