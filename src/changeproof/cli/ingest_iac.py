"""`changeproof ingest terraform-plan | drift | pulumi-preview`: infrastructure evidence.

Each command reads and validates the whole file first, then writes the masked plan into the
locker and the record into the store in one transaction: bad input keeps nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from changeproof.cli import emit_json, opts
from changeproof.errors import InputFormatError, NotFoundError, UsageError

FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
ACTION_ORDER = (
    "create",
    "update",
    "replace",
    "delete",
    "forget",
    "import",
    "move",
    "read",
    "no-op",
)


def read_input(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise InputFormatError(
            f"{path} is a directory", expected=f"a file holding {what}"
        ) from None
    except OSError as exc:
        raise InputFormatError(
            f"{path} cannot be read ({exc.strerror})", expected=f"a readable file holding {what}"
        ) from None


def require(name: str, value: str | None) -> str:
    if value is None or not value.strip():
        raise UsageError(
            f"{name} is empty",
            expected=f"a value for {name} (an unset CI variable expands to nothing)",
            hint=f"check what is passed to {name}",
        )
    return value.strip()


def when(value: str | None, what: str, default: datetime) -> datetime:
    from changeproof.cli.timeparse import parse_instant

    return parse_instant(value, what=what) if value else default


def counts_text(counts: dict[str, int]) -> str:
    keys = [k for k in ACTION_ORDER if counts.get(k)] + sorted(
        k for k in counts if k not in ACTION_ORDER and counts[k]
    )
    return ", ".join(f"{counts[k]} to {k}" for k in keys) or "no resource changes"


def resolve_subject(
    store: Any, repo: str, change: int | None, commit: str | None
) -> tuple[str, str | None, list[str]]:
    """The change id a plan is attached to, the commit, and notes for the user."""
    from changeproof.evidence import Change

    if (change is None) == (commit is None):
        raise UsageError(
            "say which change the plan belongs to with exactly one of --change N or --commit SHA",
            expected="--change with the PR/MR number, or --commit with a commit of a collected change",
        )
    if change is not None:
        cid = f"{repo}#{change}"
        found = store.get(Change, cid)
        notes = (
            []
            if found is not None
            else [f"{cid} is not collected yet; CM-IAC-2 judges the plan once it is"]
        )
        return cid, (found[1].head_sha if found else None), notes
    assert commit is not None
    sha = commit.strip().lower()
    if not (7 <= len(sha) <= 64 and all(ch in "0123456789abcdef" for ch in sha)):
        raise UsageError(f"malformed commit {commit!r}", expected="a hexadecimal commit SHA")
    hit = store.change_for_commit(repo, sha)
    if hit is None:
        raise NotFoundError(
            f"no collected change of {repo} contains commit {sha[:12]}",
            expected="a commit that landed on a controlled branch and was collected",
            hint=f"run `changeproof collect git PATH --repo {repo}` first, or attach the plan "
            "to its pull request with --change N",
        )
    return hit[1].id, sha, []


def _write(ws: Any, store: Any, raw: bytes, kind: str, source: str, build: Any) -> str:
    from changeproof.locker import Locker

    with store.writer(Locker(ws.signer())) as w:
        sha = w.put_raw(raw, kind=kind, source=source, media_type="application/json")
        return str(w.put(build(sha)))


def _prov(source: str, sha: str, occurred: datetime, now: datetime) -> Any:
    from changeproof.evidence import Provenance

    return Provenance(source=source, occurred_at=occurred, collected_at=now, raw_sha256=sha)


def plan_summary(plan: Any) -> dict[str, Any]:
    import msgspec

    replace = [
        {
            "address": r.address,
            "action_reason": r.action_reason,
            "replace_paths": list(r.replace_paths),
        }
        for r in plan.resources
        if r.action == "replace"
    ]
    return {
        "digest": plan.digest,
        "changes_digest": plan.changes_digest,
        "file_sha256": plan.file_sha256,
        "format_version": plan.format_version,
        "terraform_version": plan.terraform_version,
        "planned_at": plan.planned_at.isoformat() if plan.planned_at else None,
        "applyable": plan.applyable,
        "errored": plan.errored,
        "counts": plan.counts,
        "iam": list(plan.iam),
        "destructive": list(plan.destructive),
        "replace": replace,
        "moved": list(plan.moved),
        "drift": [x.address for x in plan.drift],
        "resources": [msgspec.to_builtins(r) for r in plan.resources],
        "notes": list(plan.notes),
    }


def echo_plan(plan: Any) -> None:
    click.echo(f"  {counts_text(plan.counts)}")
    for r in plan.resources:
        if r.action == "replace":
            why = f" ({r.action_reason})" if r.action_reason else ""
            paths = f" because of {', '.join(r.replace_paths)}" if r.replace_paths else ""
            click.echo(f"  replace {r.address}{why}{paths}")
    if plan.destructive:
        click.echo(f"  destructive: {', '.join(plan.destructive)}")
    if plan.iam:
        click.echo(f"  IAM (privileged): {', '.join(plan.iam)}")
    for n in plan.notes:
        click.echo(f"  note: {n}")


@click.command("terraform-plan")
@click.argument("plan_file", metavar="PLAN.json", type=click.Path(path_type=Path))
@click.option("--repo", required=True, metavar="R", help="Repository the plan's code is in.")
@click.option("--change", type=int, metavar="N", help="PR/MR number the plan belongs to.")
@click.option("--commit", metavar="SHA", help="A commit of the collected change it belongs to.")
@click.option("--workspace", default="default", show_default=True, metavar="W")
@FORMAT
@click.pass_context
def terraform_plan(
    ctx: click.Context,
    plan_file: Path,
    repo: str,
    change: int | None,
    commit: str | None,
    workspace: str,
    fmt: str,
) -> None:
    """Attach a Terraform plan (JSON from `terraform show -json PLAN`) to the change it was
    made for: its canonical digest, resource changes by action (replacements with their
    reasons), IAM and destructive changes. Sensitive values are masked before storing.

    CM-IAC-2 later checks that each production apply applied a plan attached this way, after
    the change was approved.

    \b
    Examples:
      terraform plan -out=tfplan && terraform show -json tfplan > plan.json
      changeproof ingest terraform-plan plan.json --repo acme/infra --change 42 --workspace prod
      changeproof ingest terraform-plan plan.json --repo acme/infra --commit 1a2b3c4 --format json
    """
    from changeproof.evidence import PlanRecord
    from changeproof.iac.terraform import parse_plan

    repo = require("--repo", repo)
    workspace = require("--workspace", workspace)
    ws = opts(ctx).workspace()
    settings = ws.settings()
    data = read_input(plan_file, "a Terraform plan JSON")
    plan = parse_plan(data, str(plan_file), settings.infrastructure.iam_resource_types)
    now = datetime.now(UTC)
    store = ws.open_store()
    try:
        subject, sha, notes = resolve_subject(store, repo, change, commit)

        def build(raw_sha: str) -> PlanRecord:
            return PlanRecord(
                id=f"{repo}|{workspace}|{plan.digest}",
                repo=repo,
                workspace=workspace,
                subject=subject,
                commit_sha=sha,
                digest=plan.digest,
                changes_digest=plan.changes_digest,
                file_sha256=plan.file_sha256,
                format_version=plan.format_version,
                terraform_version=plan.terraform_version,
                planned_at=plan.planned_at,
                applyable=plan.applyable,
                complete=plan.complete,
                errored=plan.errored,
                counts=plan.counts,
                resources=plan.resources,
                drift=plan.drift,
                moved=plan.moved,
                provenance=_prov("terraform", raw_sha, plan.planned_at or now, now),
            )

        dig = _write(ws, store, plan.masked, "terraform.plan", "terraform", build)
    finally:
        store.close()
    if fmt == "json":
        emit_json(
            {
                "record": dig,
                "repo": repo,
                "workspace": workspace,
                "change": subject,
                **plan_summary(plan),
                "notes": [*plan.notes, *notes],
            }
        )
        return
    ver = f", Terraform {plan.terraform_version}" if plan.terraform_version else ""
    click.echo(
        f"plan {plan.digest[:12]} (format {plan.format_version}{ver}) for {repo} "
        f"workspace {workspace} → attached to {subject}"
    )
    echo_plan(plan)
    for n in notes:
        click.echo(f"  note: {n}")


def _drift_write(ws: Any, report_args: dict[str, Any], raw: bytes, source: str) -> str:
    from changeproof.evidence import DriftReport

    store = ws.open_store()
    try:
        return _write(
            ws,
            store,
            raw,
            f"{source}.drift",
            source,
            lambda sha: DriftReport(
                **report_args,
                provenance=_prov(source, sha, report_args["checked_at"], datetime.now(UTC)),
            ),
        )
    finally:
        store.close()


def _drift_out(fmt: str, dig: str, args: dict[str, Any], notes: list[str]) -> None:
    import msgspec

    if fmt == "json":
        emit_json(
            {
                "record": dig,
                **{k: msgspec.to_builtins(v) for k, v in args.items()},
                "notes": notes,
            }
        )
        return
    click.echo(
        f"{args['repo']} {args['workspace']}: {args['status']} at "
        f"{args['checked_at'].isoformat()} ({args['mode']})"
    )
    for x in args["drifted"]:
        click.echo(f"  {x.cause}: {x.address} ({'/'.join(x.actions) or '?'})")
    for m in args["moved"]:
        click.echo(f"  moved (not drift): {m}")
    for n in notes:
        click.echo(f"  note: {n}")


@click.command("drift")
@click.argument("plan_file", metavar="[PLAN.json]", required=False, type=click.Path(path_type=Path))
@click.option("--repo", required=True, metavar="R")
@click.option("--workspace", required=True, metavar="W", help="Workspace (or stack) checked.")
@click.option(
    "--exit-code",
    type=int,
    metavar="N",
    help="Exit code of `terraform plan -detailed-exitcode`: 0 clean, 1 error, 2 changes.",
)
@click.option(
    "--refresh-only",
    is_flag=True,
    help="The plan was made with -refresh-only (only changes made outside Terraform).",
)
@click.option("--at", "at", metavar="TIME", help="When the check ran (default: plan time or now).")
@FORMAT
@click.pass_context
def drift(
    ctx: click.Context,
    plan_file: Path | None,
    repo: str,
    workspace: str,
    exit_code: int | None,
    refresh_only: bool,
    at: str | None,
    fmt: str,
) -> None:
    """Record one drift check of a workspace: a refresh-only (or normal) plan JSON, and/or
    the exit code of `terraform plan -detailed-exitcode`. Move-only entries (`moved`
    blocks) are not drift, even when they make the exit code 2.

    CM-IAC-3 fails a workspace whose drift stays unresolved longer than
    infrastructure.drift_max_age_days, and is indeterminate when no recent check exists.

    \b
    Examples:
      terraform plan -refresh-only -detailed-exitcode -out=drift.tfplan; echo $? > rc
      terraform show -json drift.tfplan > drift.json
      changeproof ingest drift drift.json --refresh-only --exit-code "$(cat rc)" \\
          --repo acme/infra --workspace prod
      changeproof ingest drift --exit-code 0 --repo acme/infra --workspace prod
    """
    from changeproof.iac.terraform import parse_plan, pending_items

    repo = require("--repo", repo)
    workspace = require("--workspace", workspace)
    if exit_code is not None and exit_code not in (0, 1, 2):
        raise UsageError(
            f"--exit-code {exit_code} is not a `terraform plan -detailed-exitcode` result",
            expected="0 (no changes), 1 (error) or 2 (changes present)",
        )
    if plan_file is None and exit_code is None:
        raise UsageError(
            "nothing to record: give the plan JSON, --exit-code, or both",
            hint="changeproof ingest drift drift.json --refresh-only --exit-code 2 --repo R --workspace W",
        )
    ws = opts(ctx).workspace()
    settings = ws.settings()
    now = datetime.now(UTC)
    notes: list[str] = []
    if plan_file is not None:
        data = read_input(plan_file, "a Terraform plan JSON")
        plan = parse_plan(data, str(plan_file), settings.infrastructure.iam_resource_types)
        notes.extend(plan.notes)
        items = list(plan.drift) + ([] if refresh_only else pending_items(plan))
        status = "drift" if items else "clean"
        if exit_code == 1 or plan.errored:
            status = "error"
            notes.append("the check errored: it shows neither drift nor its absence")
        elif exit_code == 2 and not items:
            notes.append("exit code 2 comes from move-only changes (moved blocks): not drift")
        elif exit_code == 0 and items:
            notes.append("exit code 0, but the plan lists changes: recorded as drift")
        args: dict[str, Any] = {
            "id": "",
            "repo": repo,
            "workspace": workspace,
            "tool": "terraform",
            "mode": "refresh-only" if refresh_only else "plan",
            "checked_at": when(at, "--at time", plan.planned_at or now),
            "status": status,
            "exit_code": exit_code,
            "drifted": tuple(items) if status != "error" else (),
            "moved": plan.moved,
            "plan_digest": plan.digest,
        }
        raw = plan.masked
    else:
        assert exit_code is not None
        status = {0: "clean", 1: "error", 2: "drift"}[exit_code]
        if exit_code == 2:
            notes.append(
                "exit code 2 without the plan JSON: drift is recorded without detail, and "
                "move-only plans cannot be told apart; pass the plan JSON as well"
            )
        args = {
            "id": "",
            "repo": repo,
            "workspace": workspace,
            "tool": "terraform",
            "mode": "exit-code",
            "checked_at": when(at, "--at time", now),
            "status": status,
            "exit_code": exit_code,
            "drifted": (),
            "moved": (),
            "plan_digest": None,
        }
        from changeproof.evidence import canonical_json

        raw = canonical_json(
            {
                "type": "changeproof.drift.exit-code/v1",
                "repo": repo,
                "workspace": workspace,
                "exit_code": exit_code,
                "checked_at": args["checked_at"].isoformat(),
            }
        )
    args["id"] = f"{repo}|{workspace}|{args['checked_at'].isoformat()}"
    dig = _drift_write(ws, args, raw, "terraform")
    _drift_out(fmt, dig, args, notes)


@click.command("pulumi-preview")
@click.argument("preview_file", metavar="PREVIEW.json", type=click.Path(path_type=Path))
@click.option("--repo", required=True, metavar="R")
@click.option("--stack", metavar="S", help="Stack (default: from the resource URNs).")
@click.option("--at", "at", metavar="TIME", help="When the preview ran (default now).")
@FORMAT
@click.pass_context
def pulumi_preview(
    ctx: click.Context,
    preview_file: Path,
    repo: str,
    stack: str | None,
    at: str | None,
    fmt: str,
) -> None:
    """Record a scheduled `pulumi preview --json` of a stack as a drift check: any step
    other than same/read means the stack no longer matches its program (CM-IAC-3).

    \b
    Examples:
      pulumi preview --json --stack prod > preview.json
      changeproof ingest pulumi-preview preview.json --repo acme/infra
      changeproof ingest pulumi-preview preview.json --repo acme/infra --stack prod --format json
    """
    from changeproof.iac.pulumi import parse_preview

    repo = require("--repo", repo)
    ws = opts(ctx).workspace()
    data = read_input(preview_file, "pulumi preview --json output")
    pv = parse_preview(data, str(preview_file))
    name = stack.strip() if stack and stack.strip() else pv.stack
    if not name:
        raise UsageError(
            f"{preview_file} names no stack (its steps carry no URN)",
            hint="pass the stack with --stack NAME",
        )
    now = datetime.now(UTC)
    notes = [f"preview error: {e}" for e in pv.errors]
    status = "error" if pv.errors else ("drift" if pv.changes else "clean")
    args: dict[str, Any] = {
        "id": "",
        "repo": repo,
        "workspace": name,
        "tool": "pulumi",
        "mode": "preview",
        "checked_at": when(at, "--at time", now),
        "status": status,
        "exit_code": None,
        "drifted": pv.changes if status == "drift" else (),
        "moved": (),
        "plan_digest": pv.digest,
    }
    args["id"] = f"{repo}|{name}|{args['checked_at'].isoformat()}"
    dig = _drift_write(ws, args, pv.masked, "pulumi")
    _drift_out(fmt, dig, {**args, "counts": pv.counts}, notes)
