"""`changeproof record …`: events recorded from a pipeline or by a person."""

from __future__ import annotations

import click

from changeproof.cli import LazyGroup

# name → (module, attribute); each subcommand lives in its own module.
RECORD_COMMANDS: dict[str, tuple[str, str]] = {
    "risk-acceptance": ("changeproof.cli.findings", "record_risk_acceptance"),
    "apply": ("changeproof.cli.record_apply", "record_apply"),
    "deployment": ("changeproof.cli.record_deploy", "record_deployment"),
    "approval": ("changeproof.cli.record_deploy", "record_approval"),
    "emergency": ("changeproof.cli.record_deploy", "record_emergency"),
    "review": ("changeproof.cli.record_deploy", "record_review"),
    "exception": ("changeproof.cli.record_exception", "record_exception"),
}


@click.group("record", cls=LazyGroup, registry=RECORD_COMMANDS)
def record() -> None:
    """Record an event (deployment, approval, emergency, review, exception …) as evidence.

    Every record goes into the locker and the store in one transaction.
    """
