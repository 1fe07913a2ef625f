"""Evaluating one change: its facts computed once, every change control, then exceptions.

Lives here (not in :mod:`changeproof.evaluate`, which re-exports it) so that the deployment
gate can run exactly the check's evaluation without importing the store and SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable

from changeproof.controls import CHANGE_CONTROLS, ChangeControl, Context
from changeproof.controls.exceptions import apply_exceptions
from changeproof.controls.facts import ChangeFacts, compute_facts, shared
from changeproof.controls.review import ReviewControl
from changeproof.evidence import Change
from changeproof.outcomes import EXCEPTABLE, Result

_Judge = Callable[[ChangeFacts, Context, str], Result]

# id(controls) → (controls, [(id, the bound method judging a change, whether its verdict is
# kept for ReviewControl.verdict)]): a control that keeps ChangeControl.evaluate is called at
# its ``judge`` (evaluate only forwards to it)
_JUDGES: dict[int, tuple[tuple[ChangeControl, ...], list[tuple[str, _Judge, bool]]]] = {}


def _judges(controls: tuple[ChangeControl, ...]) -> list[tuple[str, _Judge, bool]]:
    hit = _JUDGES.get(id(controls))
    if hit is not None and hit[0] is controls:
        return hit[1]
    out: list[tuple[str, _Judge, bool]] = [
        (
            c.id,
            c.judge if type(c).evaluate is ChangeControl.evaluate else c.evaluate,
            isinstance(c, ReviewControl),
        )
        for c in controls
    ]
    if len(_JUDGES) >= 64:
        _JUDGES.clear()
    _JUDGES[id(controls)] = (controls, out)
    return out


def evaluate_change(
    change: Change, digest: str, ctx: Context, controls: tuple[ChangeControl, ...] = CHANGE_CONTROLS
) -> list[Result]:
    facts = compute_facts(change, ctx.settings)
    # each review control's own verdict (before exceptions), for a control that repeats it
    # (CM-IAC-1: ReviewControl.verdict)
    verdicts = shared(facts, ctx)
    pkeys = facts.participant_keys
    out = []
    for cid, judge, keep in _judges(controls):
        r = judge(facts, ctx, digest)
        if keep:
            verdicts[cid] = (digest, r)
        # only a failure or an indeterminate result can be excepted
        out.append(apply_exceptions(r, pkeys, ctx) if r.outcome in EXCEPTABLE else r)
    return out
