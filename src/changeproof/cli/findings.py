"""`changeproof findings`: the patch board (every finding with its clock) and
`changeproof record risk-acceptance` (an approved, expiring acceptance of one finding)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from changeproof.cli import emit_json, opts
from changeproof.errors import UsageError

_STATES = ["open", "fixed-not-deployed", "resolved", "accepted", "breached"]


def load_states(store: Any, settings: Any, now: datetime, repo: str | None) -> list[Any]:
    """Read the evidence a patch board needs and compute the lifecycles (pure part)."""
    from changeproof.controls.vuln import fix_signatures
    from changeproof.evaluate import vuln_linkage
    from changeproof.evidence import Deployment, RiskAcceptance, Scan, ScanFindings
    from changeproof.vuln.lifecycle import compute_states

    scans = [s for _, s in store.iter_records(Scan, repo=repo)]
    observations = [
        (d, f) for d, batch in store.iter_records(ScanFindings, repo=repo) for f in batch.findings
    ]
    acceptances = [a for _, a in store.iter_records(RiskAcceptance, repo=repo)]
    sigs = fix_signatures(o for _, o in observations)
    prod = set(settings.environments.production)
    deployments = (
        d
        for r in sorted(sigs)
        for _, d in store.iter_records(Deployment, repo=r)
        if d.environment in prod and d.status == "success"
    )
    link = vuln_linkage(store, sigs, deployments)
    return compute_states(observations, scans, acceptances, link, settings, now)


def _clock(s: Any, now: datetime) -> str:
    h = s.remaining_hours(now)
    if h is None:
        return "no deadline"
    if s.state == "resolved":
        return f"met with {h:.0f} h to spare" if h >= 0 else f"late by {-h:.0f} h"
    if s.state == "accepted":
        return f"paused ({h:.0f} h left)"
    return f"{h:.0f} h left" if h >= 0 else f"{-h:.0f} h overdue"


def _row(s: Any, now: datetime) -> dict[str, Any]:
    def iso(t: datetime | None) -> str | None:
        return t.isoformat() if t else None

    return {
        "id": s.key,
        "repo": s.repo,
        "state": s.state,
        "breached": s.breached,
        "tier": s.tier,
        "score": s.score,
        "severity_source": s.severity_source,
        "needs_triage": s.needs_triage,
        "advisory": s.advisory,
        "aliases": list(s.aliases),
        "category": s.category,
        "target": s.target,
        "ecosystem": s.ecosystem,
        "package": s.package,
        "version": s.version,
        "manifest": s.manifest,
        "title": s.title,
        "first_detected_at": iso(s.first_detected_at),
        "last_seen_at": iso(s.last_seen_at),
        "due_at": iso(s.due_at),
        "remaining_hours": None
        if s.remaining_hours(now) is None
        else round(s.remaining_hours(now), 1),
        "breached_at": iso(s.breached_at),
        "occurrence": s.occurrence if hasattr(s, "occurrence") else 1,
        "regression": s.regression,
        "fix_change": s.fix_change,
        "fix_merged_at": iso(s.fix_merged_at),
        "deployment": s.deployment,
        "deployed_at": iso(s.deployed_at),
        "verified_absent_at": iso(s.verified_absent_at),
        "resolved_at": iso(s.resolved_at),
        "acceptance": s.acceptance,
        "accepted_until": iso(s.accepted_until),
        "late_acceptance": s.late_acceptance,
        "paused_hours": round(s.paused_hours, 1),
        "scanners": list(s.scanners),
        "scanner_status": s.scanner_status,
        "notes": s.notes,
    }


@click.command("findings")
@click.option("--repo", metavar="R", help="Only this repository.")
@click.option("--breached", is_flag=True, help="Only findings whose deadline was breached.")
@click.option(
    "--state", "states", multiple=True, type=click.Choice(_STATES), help="Only these states."
)
@click.option("--at", "at", metavar="TS", help="Evaluate the clocks as at this time (default now).")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.pass_context
def findings(
    ctx: click.Context,
    repo: str | None,
    breached: bool,
    states: tuple[str, ...],
    at: str | None,
    fmt: str,
) -> None:
    """The patch board: every vulnerability finding with its deadline clock.

    States: open, fixed-not-deployed (the fix merged but is not in production: the clock
    still runs), resolved (fixed in production), accepted (a valid risk acceptance pauses the
    clock), breached (the deadline passed first).

    \b
    Examples:
      changeproof findings
      changeproof findings --breached
      changeproof findings --repo acme/api --state open --state fixed-not-deployed
      changeproof findings --format json --at 2026-06-30
    """
    from changeproof.cli.timeparse import parse_instant

    ws = opts(ctx).workspace()
    settings = ws.settings()
    now = parse_instant(at, what="--at time") if at else datetime.now(UTC)
    store = ws.open_store(write=False)
    try:
        all_states = load_states(store, settings, now, repo)
    finally:
        store.close()
    shown = [
        s for s in all_states if (not breached or s.breached) and (not states or s.state in states)
    ]
    if fmt == "json":
        counts: dict[str, int] = {}
        for s in all_states:
            counts[s.state] = counts.get(s.state, 0) + 1
        emit_json(
            {"at": now.isoformat(), "counts": counts, "findings": [_row(s, now) for s in shown]}
        )
        return
    if not shown:
        click.echo("no findings" + (" matching the filters" if breached or states else ""))
        return
    header = ("ID", "STATE", "TIER", "ADVISORY", "PACKAGE", "FIRST SEEN", "DUE", "CLOCK")
    rows = [
        (
            s.key,
            s.state + ("*" if s.breached and s.state != "breached" else ""),
            s.tier + ("?" if s.needs_triage else ""),
            s.advisory,
            (s.package or s.target or "-")[:40],
            f"{s.first_detected_at:%Y-%m-%d %H:%M}",
            f"{s.due_at:%Y-%m-%d %H:%M}" if s.due_at else "-",
            _clock(s, now),
        )
        for s in shown
    ]
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, *rows):
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    click.echo(
        f"\n{len(shown)} finding(s); * = deadline breached, ? = unscored (provisional tier, "
        "needs triage). Times UTC."
    )


_DURATION = re.compile(r"^(\d+)\s*([hdw])$")


def _expiry(text: str, start: datetime) -> datetime:
    from changeproof.cli.timeparse import parse_instant

    m = _DURATION.match(text.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        return (
            start + {"h": timedelta(hours=n), "d": timedelta(days=n), "w": timedelta(weeks=n)}[unit]
        )
    return parse_instant(text, end_of_day=True, what="--expires time")


@click.command("risk-acceptance")
@click.option("--repo", required=True, metavar="R", help="Repository of the finding.")
@click.option(
    "--advisory", required=True, metavar="ID", help="The finding's advisory id or any alias."
)
@click.option("--package", metavar="P", help="Limit to this package (default: any).")
@click.option("--target", metavar="T", help="Limit to this scan target (default: any).")
@click.option("--requester", required=True, metavar="USER", help="Who asks to accept the risk.")
@click.option("--approver", required=True, metavar="USER", help="Who approves (not the requester).")
@click.option("--reason", required=True, help="Why the risk is acceptable for now.")
@click.option("--compensating-control", default="", help="What mitigates it meanwhile.")
@click.option(
    "--expires",
    required=True,
    metavar="WHEN",
    help="Expiry: an ISO date/time or a duration such as 30d, 2w, 72h.",
)
@click.option("--accepted-at", metavar="TS", help="When it was approved (default now).")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def record_risk_acceptance(
    ctx: click.Context,
    repo: str,
    advisory: str,
    package: str | None,
    target: str | None,
    requester: str,
    approver: str,
    reason: str,
    compensating_control: str,
    expires: str,
    accepted_at: str | None,
    fmt: str,
) -> None:
    """Record an approved, expiring acceptance of a vulnerability finding's risk.

    While valid it pauses the finding's patch clock; when it expires the remaining time
    resumes. An acceptance recorded after the deadline does not erase the breach.

    \b
    Examples:
      changeproof record risk-acceptance --repo acme/api --advisory CVE-2024-3094 \\
          --requester bob --approver carol --reason "not reachable: feature disabled" \\
          --compensating-control "WAF rule 942100" --expires 30d
    """
    import hashlib

    import msgspec

    from changeproof.cli.timeparse import parse_instant
    from changeproof.evidence import Actor, Provenance, RiskAcceptance
    from changeproof.locker import Locker

    ws = opts(ctx).workspace()
    settings = ws.settings()
    now = datetime.now(UTC)
    for name, value in (
        ("--repo", repo),
        ("--advisory", advisory),
        ("--requester", requester),
        ("--approver", approver),
        ("--reason", reason),
    ):
        if not value.strip():
            raise UsageError(f"{name} is empty", expected=f"a value for {name}")
    start = parse_instant(accepted_at, what="--accepted-at time") if accepted_at else now
    end = _expiry(expires, start)
    if end <= start:
        raise UsageError(
            f"--expires {expires!r} is not after the acceptance ({start.isoformat()})",
            expected="an expiry after the acceptance time",
        )
    limit = timedelta(days=settings.patching.max_acceptance_days)
    if end - start > limit:
        raise UsageError(
            f"--expires {expires!r} runs {(end - start).days} days",
            expected=f"at most patching.max_acceptance_days = {settings.patching.max_acceptance_days} days",
            hint="accept for a shorter time and renew it if still needed",
        )
    req, appr = Actor(login=requester.strip()), Actor(login=approver.strip())
    if req.keys() & appr.keys():
        raise UsageError(
            f"{approver!r} cannot approve their own risk acceptance",
            expected="an approver other than the requester",
        )
    submission = {
        "repo": repo.strip(),
        "advisory": advisory.strip(),
        "package": package,
        "target": target,
        "requester": requester.strip(),
        "approver": approver.strip(),
        "reason": reason,
        "compensating_control": compensating_control,
        "accepted_at": start.isoformat(),
        "expires_at": end.isoformat(),
    }
    raw = msgspec.json.encode(submission, order="sorted")
    rid = "RA-" + hashlib.sha256(raw).hexdigest()[:16]
    store = ws.open_store()
    try:
        with store.writer(Locker(ws.signer())) as w:
            sha = w.put_raw(
                raw, kind="risk_acceptance", source="record", media_type="application/json"
            )
            rec = RiskAcceptance(
                id=rid,
                repo=submission["repo"] or repo,
                advisory=advisory.strip(),
                package=package,
                target=target,
                requester=req,
                approver=appr,
                reason=reason.strip(),
                compensating_control=compensating_control.strip(),
                accepted_at=start,
                expires_at=end,
                provenance=Provenance(
                    source="record", occurred_at=start, collected_at=now, raw_sha256=sha
                ),
            )
            w.put(rec)
    finally:
        store.close()
    if fmt == "json":
        emit_json({"id": rid, **submission})
        return
    click.echo(
        f"recorded {rid}: {advisory} in {repo} accepted by {approver} until {end.isoformat()}"
    )
