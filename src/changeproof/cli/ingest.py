"""`changeproof ingest KIND FILE…`: files produced by other tools."""

from __future__ import annotations

import click

from changeproof.cli import LazyGroup

# kind → (module, attribute); each kind lives in its own module.
INGEST_COMMANDS: dict[str, tuple[str, str]] = {
    "terraform-plan": ("changeproof.cli.ingest_iac", "terraform_plan"),
    "drift": ("changeproof.cli.ingest_iac", "drift"),
    "pulumi-preview": ("changeproof.cli.ingest_iac", "pulumi_preview"),
    "pip-audit": ("changeproof.cli.ingest_scan", "pip_audit"),
    "npm-audit": ("changeproof.cli.ingest_scan", "npm_audit"),
    "trivy": ("changeproof.cli.ingest_scan", "trivy"),
    "grype": ("changeproof.cli.ingest_scan", "grype"),
    "osv-scanner": ("changeproof.cli.ingest_scan", "osv_scanner"),
    "snyk": ("changeproof.cli.ingest_scan", "snyk"),
    "sarif": ("changeproof.cli.ingest_scan", "sarif"),
    "semgrep": ("changeproof.cli.ingest_scan", "semgrep"),
    "dependabot": ("changeproof.cli.ingest_scan", "dependabot"),
    "batch": ("changeproof.cli.ingest_batch", "batch"),
}


@click.group("ingest", cls=LazyGroup, registry=INGEST_COMMANDS)
def ingest() -> None:
    """Ingest scanner output, Terraform plans, test reports … as evidence (all or nothing)."""
