"""Evaluating one change: its facts computed once, every change control, then exceptions.

Lives here (not in :mod:`changeproof.evaluate`, which re-exports it) so that the deployment
gate can run exactly the check's evaluation without importing the store and SQLAlchemy.
"""

from __future__ import annotations

from changeproof.controls import CHANGE_CONTROLS, ChangeControl, Context
from changeproof.controls.exceptions import apply_exceptions
from changeproof.controls.facts import compute_facts
from changeproof.evidence import Change
from changeproof.outcomes import Result


def evaluate_change(
    change: Change, digest: str, ctx: Context, controls: tuple[ChangeControl, ...] = CHANGE_CONTROLS
) -> list[Result]:
    facts = compute_facts(change, ctx.settings)
    out = []
    for control in controls:
        r = control.evaluate(facts, ctx, digest)
        out.append(apply_exceptions(r, facts.participant_keys, ctx))
    return out
