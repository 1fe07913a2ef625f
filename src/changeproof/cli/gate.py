"""`changeproof gate` (allow / deny one deployment) and `changeproof emergencies` (the register).

Start-up matters here: this module imports only click and what the decision needs; the
store, the locker and HTTP are imported inside the command.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from changeproof.cli import emit_json, opts
from changeproof.errors import EXIT_FAIL, EXIT_OK, UsageError


def _nonempty(name: str, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise UsageError(
            f"{name} is empty",
            expected=f"a value for {name} (an unset CI variable expands to nothing)",
            hint=f"check the variable passed to {name}, or leave the option out",
        )
    return value.strip() if value is not None else None


def default_repo(settings: Any, db: Any) -> str:
    names = [r.name for r in settings.repositories]
    if len(names) == 1:
        return str(names[0])
    repos = [str(r[0]) for r in db.rows("SELECT DISTINCT repo FROM commit_index ORDER BY repo", {})]
    if len(repos) == 1:
        return str(repos[0])
    raise UsageError(
        "which repository is being deployed?",
        expected="--repo NAME"
        + (f" (one of: {', '.join(repos[:10])})" if repos else " naming a collected repository"),
        hint="pass --repo as `changeproof collect` named it",
    )


@click.command("gate")
@click.option("--env", "environment", required=True, metavar="ENV", help="Target environment.")
@click.option("--commit", required=True, metavar="SHA", help="The commit being deployed.")
@click.option(
    "--repo", metavar="R", help="Repository (default: the only one configured/collected)."
)
@click.option("--artifact", metavar="sha256:…", help="Digest of the artifact being deployed.")
@click.option(
    "--actor",
    metavar="ID",
    envvar="CHANGEPROOF_ACTOR",
    help="Identity performing the deployment (env CHANGEPROOF_ACTOR).",
)
@click.option(
    "--triggered-by",
    metavar="USER",
    envvar="CHANGEPROOF_TRIGGERED_BY",
    help="Person who started it (manual-trigger model; env CHANGEPROOF_TRIGGERED_BY).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "github", "gitlab"]),
    default="text",
    show_default=True,
)
@click.option("--report", type=click.Path(path_type=Path), help="Also write the JSON report here.")
@click.option("--at", "at", metavar="TIME", help="Decision time (default now; ISO 8601).")
@click.option("--emergency", is_flag=True, help="Ask for the emergency path.")
@click.option("--incident", metavar="REF", help="Incident reference (with --emergency).")
@click.option(
    "--approver", metavar="USER", help="Designated emergency approver (with --emergency)."
)
@click.option("--reason", metavar="TEXT", help="Why this is an emergency.")
@click.option("--live", is_flag=True, help="Ask GitHub directly instead of the local store.")
@click.option(
    "--api-url",
    metavar="URL",
    envvar="GITHUB_API_URL",
    default="https://api.github.com",
    show_default=True,
    help="GitHub API for --live (env GITHUB_API_URL; GitHub Enterprise: https://HOST/api/v3).",
)
@click.option(
    "--run-id",
    type=int,
    envvar="GITHUB_RUN_ID",
    help="--live: the workflow run whose environment approvals to read (env GITHUB_RUN_ID).",
)
@click.pass_context
def gate(
    ctx: click.Context,
    environment: str,
    commit: str,
    repo: str | None,
    artifact: str | None,
    actor: str | None,
    triggered_by: str | None,
    fmt: str,
    report: Path | None,
    at: str | None,
    emergency: bool,
    incident: str | None,
    approver: str | None,
    reason: str | None,
    live: bool,
    api_url: str,
    run_id: int | None,
) -> None:
    """Decide from evidence whether this deployment may go ahead, and record the decision
    (the production authorisation record) in the locker.

    \b
    Rules: the commit is on a controlled branch; every change shipped since the previous
    production deployment passes (or is excepted from) the review and testing controls;
    the same commit or artifact succeeded in pre-production first (plus any soak time);
    the deployment is authorised per deployment.model; the actor is allowed.
    Indeterminate evidence denies. --emergency lets a would-be-denied deployment through
    only with a valid incident and a designated, independent emergency approver, and opens
    a retro-review clock (see `changeproof emergencies`).

    \b
    Exit codes: 0 allow, 1 deny, 2 cannot decide (bad input, unknown environment or
    commit, unreachable store or GitHub) — never 0 unless allowed and recorded.
    \b
    Examples:
      changeproof gate --env production --commit $GITHUB_SHA --actor github-actions[bot]
      changeproof gate --env production --commit abc1234 --repo acme/api --format json
      changeproof gate --env production --commit $CI_COMMIT_SHA --format gitlab
      changeproof gate --env production --commit abc1234 --emergency \\
          --incident INC-4711 --approver oncall-lead
      changeproof gate --live --env production --commit $GITHUB_SHA --repo acme/api
    """
    from changeproof.cli.timeparse import parse_instant
    from changeproof.gate import (
        EmergencyRequest,
        GateRequest,
        decide,
        load_evidence,
        record,
        validate_request,
    )

    environment = _nonempty("--env", environment) or ""
    commit = _nonempty("--commit", commit) or ""
    repo = _nonempty("--repo", repo)
    artifact = _nonempty("--artifact", artifact)
    actor = _nonempty("--actor", actor)
    triggered_by = _nonempty("--triggered-by", triggered_by)
    incident = _nonempty("--incident", incident)
    approver = _nonempty("--approver", approver)
    if not emergency and (incident or approver or reason):
        raise UsageError(
            "--incident, --approver and --reason belong to the emergency path",
            hint="add --emergency, or leave them out",
        )
    if emergency and not incident:
        raise UsageError(
            "--emergency needs --incident REF",
            expected="the incident reference (e.g. INC-123, a PagerDuty or Jira id)",
        )
    if emergency and not approver:
        raise UsageError(
            "--emergency needs --approver USER",
            expected="a designated emergency approver (emergency.approvers)",
        )
    now = parse_instant(at, what="--at time") if at else datetime.now(UTC)
    ws = opts(ctx).workspace()
    settings = ws.settings()
    em = (
        EmergencyRequest(
            incident=incident, approver=approver, reason=reason or "", declared_by=triggered_by
        )
        if emergency
        else None
    )

    def request(r: str) -> GateRequest:
        req = GateRequest(
            repo=r,
            environment=environment,
            commit=commit,
            now=now,
            artifact=artifact,
            actor=actor,
            triggered_by=triggered_by,
            emergency=em,
        )
        validate_request(req, settings)
        return req

    if live:
        from changeproof.gate_live import run_live

        if repo is None:
            raise UsageError("--live needs --repo OWNER/NAME")
        req = request(repo)
        verdict, rec = run_live(ws, settings, req, api_url=api_url, run_id=run_id)
    else:
        from changeproof.gate_store import open_gate_store

        if repo is not None:
            request(repo)  # reject bad input before touching the store
        db = open_gate_store(ws)
        try:
            req = request(repo or default_repo(settings, db))
            ev = load_evidence(db, req, settings)
            verdict = decide(req, ev, settings)
            rec = record(db, verdict)
        finally:
            db.close()
    code = EXIT_OK if verdict.allowed and rec.decision.decision == "allow" else EXIT_FAIL
    try:
        _render(verdict, rec, fmt, report)
    except BrokenPipeError:
        # stdout went away (piped into `head`, a closed log): the decision, already recorded,
        # sets the exit code, whatever the CLI's generic broken-pipe handling would say
        os._exit(code)
    if rec.emergency is not None:
        _announce(rec.emergency, settings)
    ctx.exit(code)


def _render(verdict: Any, rec: Any, fmt: str, report: Path | None) -> None:
    from changeproof.gate import to_github, to_gitlab, to_json, to_text

    data = to_json(verdict, rec)
    if report is not None:
        import msgspec

        try:
            report.write_bytes(msgspec.json.format(msgspec.json.encode(data), indent=2) + b"\n")
        except OSError as exc:
            click.echo(f"warning: cannot write the report {report}: {exc.strerror}", err=True)
    if fmt == "json":
        emit_json(data)
    elif fmt == "github":
        cmds, md = to_github(verdict, rec)
        click.echo(cmds)
        click.echo(to_text(verdict, rec))
        path = os.environ.get("GITHUB_STEP_SUMMARY")
        if path:
            try:
                with Path(path).open("a", encoding="utf-8") as fh:
                    fh.write(md + "\n")
            except OSError as exc:
                click.echo(f"warning: cannot append the job summary: {exc.strerror}", err=True)
    elif fmt == "gitlab":
        click.echo(to_gitlab(verdict, rec))
    else:
        click.echo(to_text(verdict, rec))
    sys.stdout.flush()


def _announce(e: Any, settings: Any) -> None:
    """Tell the configured channels about a new emergency; bounded, never fatal."""
    if not (settings.emergency.slack_webhook_url or settings.emergency.webhook_url):
        return
    from changeproof.controls.emergency import due_at
    from changeproof.notify import notify_opened

    for d in notify_opened(e, due_at(e, settings), settings, deadline_s=6.0):
        if not d.ok:
            click.echo(
                f"warning: could not notify {d.target} {d.url} after {d.attempts} attempt(s): "
                f"{d.error}",
                err=True,
            )


@click.command("emergencies")
@click.option("--repo", metavar="R", help="Only this repository.")
@click.option("--open", "only_open", is_flag=True, help="Only emergencies not yet reviewed.")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option("--as-of", "as_of", metavar="TIME", help="Judge the clocks as of this instant.")
@click.option(
    "--notify",
    is_flag=True,
    help="Send overdue and nearly-due clocks to the Slack / generic webhook in the settings.",
)
@click.pass_context
def emergencies(
    ctx: click.Context,
    repo: str | None,
    only_open: bool,
    fmt: str,
    as_of: str | None,
    notify: bool,
) -> None:
    """The emergency register: every declared emergency with its retro-review clock.

    A clock is open from declaration, due soon within emergency.remind_before_hours of its
    deadline, overdue past it, closed by an independent `changeproof record review`, or
    closed late.

    \b
    Exit codes: 0 nothing overdue, 1 an emergency is overdue or was reviewed late, 2 error.
    \b
    Examples:
      changeproof emergencies
      changeproof emergencies --open --format json
      changeproof emergencies --notify          # e.g. hourly from cron or a scheduled job
    """
    from changeproof.cli.timeparse import parse_instant
    from changeproof.controls.emergency import clock
    from changeproof.evidence import Emergency, RetroReview
    from changeproof.notify import clock_json, clock_line, notify_clocks

    now = parse_instant(as_of, what="--as-of time") if as_of else datetime.now(UTC)
    ws = opts(ctx).workspace()
    settings = ws.settings()
    store = ws.open_store(write=False)
    try:
        reviews: dict[str, list[Any]] = {}
        for d, r in store.iter_records(RetroReview):
            reviews.setdefault(r.subject, []).append((d, r))
        clocks = [
            clock(e, d, reviews.get(e.id, []), settings, now)
            for d, e in store.iter_records(Emergency, repo=repo)
        ]
    finally:
        store.close()
    order = {"overdue": 0, "due_soon": 1, "open": 2, "closed_late": 3, "closed": 4}
    clocks.sort(key=lambda c: (order[c.status], c.due_at))
    if only_open:
        clocks = [c for c in clocks if c.status in ("open", "due_soon", "overdue")]
    deliveries = notify_clocks(clocks, settings, now) if notify else []
    if notify and not (settings.emergency.slack_webhook_url or settings.emergency.webhook_url):
        click.echo(
            "warning: --notify: no emergency.slack_webhook_url or emergency.webhook_url is set",
            err=True,
        )
    if fmt == "json":
        emit_json(
            {
                "as_of": now.isoformat(),
                "emergencies": [clock_json(c) for c in clocks],
                "notifications": [d.__dict__ for d in deliveries],
            }
        )
    else:
        if not clocks:
            click.echo("No emergencies declared" + (" and open." if only_open else "."))
        for c in clocks:
            mark = {
                "overdue": "OVERDUE",
                "due_soon": "DUE SOON",
                "open": "open",
                "closed": "closed",
                "closed_late": "CLOSED LATE",
            }[c.status]
            if c.status in ("closed", "closed_late"):
                assert c.reviewed_at is not None
                click.echo(
                    f"{mark:<11} {c.emergency.id}  {c.emergency.repo} {c.emergency.subject} "
                    f"incident {c.emergency.incident}; reviewed by {c.reviewed_by} at "
                    f"{c.reviewed_at.isoformat()} (due {c.due_at.isoformat()})"
                )
            else:
                click.echo(f"{mark:<11} {clock_line(c)}")
        for dl in deliveries:
            state = "sent" if dl.ok else f"NOT sent ({dl.error})"
            click.echo(
                f"notification to {dl.target} {dl.url}: {state} after {dl.attempts} attempt(s)"
            )
    failed_delivery = any(not d.ok for d in deliveries)
    bad = any(c.status in ("overdue", "closed_late") for c in clocks)
    if failed_delivery:
        click.echo("warning: some notifications could not be delivered", err=True)
    ctx.exit(EXIT_FAIL if bad else EXIT_OK)
