"""`changeproof ingest KIND FILE…`: files produced by other tools."""

from __future__ import annotations

import click

from changeproof.cli import LazyGroup

# kind → (module, attribute); each kind lives in its own module.
INGEST_COMMANDS: dict[str, tuple[str, str]] = {
    "terraform-plan": ("changeproof.cli.ingest_iac", "terraform_plan"),
    "drift": ("changeproof.cli.ingest_iac", "drift"),
    "pulumi-preview": ("changeproof.cli.ingest_iac", "pulumi_preview"),
}


@click.group("ingest", cls=LazyGroup, registry=INGEST_COMMANDS)
def ingest() -> None:
    """Ingest scanner output, Terraform plans, test reports … as evidence (all or nothing)."""
