"""`changeproof record apply`: bind a Terraform apply to the plan file it applied."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from changeproof.cli import emit_json, opts
from changeproof.cli.ingest_iac import (
    FORMAT,
    echo_plan,
    plan_summary,
    read_input,
    require,
    when,
)
from changeproof.errors import ConfigError, UsageError


def _env(settings: Any, env: str) -> str:
    envs = settings.environments
    if env not in (*envs.production, *envs.pre_production):
        raise ConfigError(
            f"unknown environment {env!r}",
            expected="an environment from [environments]: "
            + ", ".join([*envs.pre_production, *envs.production]),
            hint="add it to [environments] in changeproof.toml, or fix --env",
        )
    return env


@click.command("apply")
@click.option(
    "--plan",
    "plan_file",
    metavar="PLAN.json",
    type=click.Path(path_type=Path),
    help="JSON of the saved plan that was applied (terraform show -json PLAN).",
)
@click.option("--no-plan", is_flag=True, help="The apply used no saved plan (-auto-approve).")
@click.option("--env", "environment", required=True, metavar="ENV")
@click.option("--repo", required=True, metavar="R")
@click.option("--workspace", default="default", show_default=True, metavar="W")
@click.option("--commit", metavar="SHA", help="Commit the applied code came from.")
@click.option("--status", type=click.Choice(["success", "failure", "started"]), default="success")
@click.option("--actor", metavar="ID", help="Identity that ran the apply.")
@click.option("--url", metavar="URL", help="Link to the pipeline run or apply log.")
@click.option("--at", "at", metavar="TIME", help="When the apply started (default now).")
@FORMAT
@click.pass_context
def record_apply(
    ctx: click.Context,
    plan_file: Path | None,
    no_plan: bool,
    environment: str,
    repo: str,
    workspace: str,
    commit: str | None,
    status: str,
    actor: str | None,
    url: str | None,
    at: str | None,
    fmt: str,
) -> None:
    """Record an apply and the plan it applied. CM-IAC-2 checks that a production apply
    applied a plan attached to an approved change (`changeproof ingest terraform-plan`),
    after the approval. Run it right after `terraform apply PLAN` with the same plan file.

    \b
    Examples:
      terraform show -json tfplan > plan.json && terraform apply tfplan
      changeproof record apply --plan plan.json --env production --repo acme/infra --workspace prod
      changeproof record apply --no-plan --env production --repo acme/infra --workspace prod
    """
    from changeproof.evidence import Actor, ApplyRecord, Provenance, canonical_json
    from changeproof.iac.terraform import parse_plan
    from changeproof.locker import Locker

    repo = require("--repo", repo)
    workspace = require("--workspace", workspace)
    if (plan_file is None) == (not no_plan):
        raise UsageError(
            "say what was applied: --plan PLAN.json, or --no-plan for an apply without a saved plan",
            hint="terraform show -json PLAN > plan.json, then pass --plan plan.json",
        )
    ws = opts(ctx).workspace()
    settings = ws.settings()
    env = _env(settings, require("--env", environment))
    now = datetime.now(UTC)
    applied_at = when(at, "--at time", now)
    plan = None
    if plan_file is not None:
        plan = parse_plan(
            read_input(plan_file, "a Terraform plan JSON"),
            str(plan_file),
            settings.infrastructure.iam_resource_types,
        )
    who = Actor(login=actor.strip()) if actor and actor.strip() else None
    raw = (
        plan.masked
        if plan is not None
        else canonical_json(
            {
                "type": "changeproof.apply.no-plan/v1",
                "repo": repo,
                "workspace": workspace,
                "environment": env,
                "applied_at": applied_at.isoformat(),
            }
        )
    )
    store = ws.open_store()
    try:
        with store.writer(Locker(ws.signer())) as w:
            sha = w.put_raw(
                raw, kind="terraform.apply", source="record", media_type="application/json"
            )
            rec = ApplyRecord(
                id=f"{repo}|{workspace}|{env}|{applied_at.isoformat()}",
                repo=repo,
                workspace=workspace,
                environment=env,
                commit_sha=commit.strip().lower() if commit and commit.strip() else None,
                plan_digest=plan.digest if plan else None,
                changes_digest=plan.changes_digest if plan else None,
                plan_file_sha256=plan.file_sha256 if plan else None,
                counts=plan.counts if plan else {},
                resources=plan.resources if plan else (),
                applied_at=applied_at,
                status=status,  # type: ignore[arg-type]
                actor=who,
                url=url,
                provenance=Provenance(
                    source="record",
                    occurred_at=applied_at,
                    collected_at=now,
                    raw_sha256=sha,
                    url=url,
                ),
            )
            dig = w.put(rec)
    finally:
        store.close()
    if fmt == "json":
        emit_json(
            {
                "record": dig,
                "id": rec.id,
                "environment": env,
                "repo": repo,
                "workspace": workspace,
                "applied_at": applied_at.isoformat(),
                "plan": plan_summary(plan) if plan else None,
                "counts": plan.counts if plan else {},
            }
        )
        return
    if plan is None:
        click.echo(f"apply to {repo} {workspace} ({env}) without a saved plan recorded")
        return
    click.echo(
        f"apply of plan {plan.digest[:12]} to {repo} {workspace} ({env}) at "
        f"{applied_at.isoformat()} recorded"
    )
    echo_plan(plan)
