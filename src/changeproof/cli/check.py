"""`changeproof check`: evaluate the controls over the collected evidence."""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime

import click

from changeproof.cli import emit_json, opts
from changeproof.cli.timeparse import parse_instant, parse_period, zone
from changeproof.errors import EXIT_FAIL, EXIT_OK, NotFoundError
from changeproof.outcomes import Outcome, Result

MARK = {
    Outcome.PASS: "pass",
    Outcome.FAIL: "FAIL",
    Outcome.EXCEPTION: "exception",
    Outcome.NOT_APPLICABLE: "n/a",
    Outcome.INDETERMINATE: "INDETERMINATE",
}


def result_json(r: Result) -> dict[str, object]:
    d: dict[str, object] = {
        "control": r.control,
        "subject": r.subject,
        "outcome": r.outcome.value,
        "reasons": list(r.reasons),
    }
    if r.repo:
        d["repo"] = r.repo
    if r.remediation:
        d["remediation"] = r.remediation
    d["evidence"] = list(r.evidence)
    return d


@click.command("check")
@click.option(
    "--period",
    metavar="A..B",
    help="Only changes merged in this period (ISO dates; end inclusive).",
)
@click.option(
    "--tz",
    "tz_name",
    metavar="ZONE",
    default="UTC",
    show_default=True,
    help="Time zone for the period's dates.",
)
@click.option("--repo", metavar="R", help="Only this repository.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
@click.option("--all", "show_all", is_flag=True, help="Table: list passing results too.")
@click.option(
    "--explain",
    metavar="SUBJECT",
    help="Show exactly why SUBJECT (e.g. org/app#42) got its results.",
)
@click.option(
    "--as-of",
    "as_of",
    metavar="TIME",
    help="Judge as of this instant (default now): re-derive an earlier verdict exactly.",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    metavar="N",
    help="Processes judging changes (default: one per CPU; 1 = in this process). "
    "Results are identical either way.",
)
@click.pass_context
def check(
    ctx: click.Context,
    period: str | None,
    tz_name: str,
    repo: str | None,
    fmt: str,
    show_all: bool,
    explain: str | None,
    as_of: str | None,
    jobs: int | None,
) -> None:
    """Evaluate the controls for every change in scope and store the results with the
    digests of the evidence they read and the settings version.

    \b
    Exit codes: 0 everything passes (or is excepted / not applicable),
                1 anything fails or is indeterminate, 2 usage or configuration error.
    \b
    Examples:
      changeproof check
      changeproof check --period 2026-01-01..2026-06-30 --tz Europe/Berlin
      changeproof check --repo acme/api --format json
      changeproof check --explain acme/api#42
    """
    from changeproof.cli.progress import progress
    from changeproof.evaluate import Period, ResultGroup, default_jobs, run_check

    ws = opts(ctx).workspace()
    settings = ws.settings()
    tz = zone(tz_name)
    now = parse_instant(as_of, tz, what="--as-of time") if as_of else datetime.now(UTC)
    start, end = parse_period(period, tz) if period else (None, None)
    store = ws.open_store(write=False)
    try:
        if explain:
            ctx.exit(_explain(store, settings, now, explain, fmt))
        from changeproof.evidence import Change, Coverage

        if store.count(Coverage.kind) == 0 and store.count(Change.kind) == 0:
            raise NotFoundError(
                "nothing has been collected into this workspace yet",
                expected="evidence from `changeproof collect`",
                hint="run `changeproof collect git PATH` first",
            )
        shown: list[Result] = []

        def keep(group: ResultGroup) -> None:
            if fmt != "table" or show_all:
                shown.extend(group.results())
            elif not Outcome(group.worst).ok:  # the worst is ok only when every one is
                shown.extend(r for r in group.results() if not r.outcome.ok)

        with progress("check") as advance:
            run = run_check(
                store,
                settings,
                now,
                period=Period(start, end),
                repo=repo,
                keep=keep,
                on_change=advance,
                extra=_locker_report(ws, store),
                jobs=jobs or default_jobs(),
            )
    finally:
        store.close()
    summary = run.summary.as_dict()
    label = Period(start, end).label()
    if fmt == "json":
        emit_json(
            {
                "period": label,
                "as_of": now.isoformat(),
                "results": [result_json(r) for r in shown],
                "summary": summary,
                "run": {
                    "id": run.run_id,
                    "results_digest": run.results_digest,
                    "settings_version": run.settings_digest,
                },
            }
        )
    elif fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["control", "subject", "repo", "outcome", "reasons", "remediation"])
        for r in shown:
            w.writerow(
                [
                    r.control,
                    r.subject,
                    r.repo or "",
                    r.outcome.value,
                    " | ".join(r.reasons),
                    r.remediation or "",
                ]
            )
    else:
        _table(shown, summary, label)
    ctx.exit(EXIT_OK if run.summary.ok else EXIT_FAIL)


def _locker_report(ws, store) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """CM-POP-2 needs the locker verified; controls cannot read the store, so verify here."""
    from changeproof.errors import LockerError
    from changeproof.locker import verify_locker

    try:
        pem = ws.public_key_pem()
    except LockerError:
        return {}  # no key to verify with: CM-POP-2 says indeterminate
    return {"locker": verify_locker(store, pem).to_dict()}


def _table(shown: list[Result], summary: dict[str, dict[str, int]], label: str) -> None:
    from changeproof.controls import CHANGE_CONTROLS

    change_ids = {c.id for c in CHANGE_CONTROLS}
    if not any(k in change_ids for k in summary):
        click.echo(
            f"No changes on controlled branches in {label}: nothing to judge (not applicable)."
        )
        if not summary:
            return
    last = None
    for r in sorted(shown, key=lambda r: (r.subject, r.control)):
        if r.subject != last:
            click.echo(f"\n{r.subject}")
            last = r.subject
        click.echo(f"  {r.control:<10} {MARK[r.outcome]:<13} {r.reasons[0]}")
        for extra in r.reasons[1:]:
            click.echo(f"  {'':<10} {'':<13} {extra}")
        if r.remediation:
            click.echo(f"  {'':<10} {'Fix:':<13} {r.remediation}")
    cols = ["pass", "fail", "exception", "not_applicable", "indeterminate"]
    click.echo(f"\nSummary for {label}")
    click.echo(f"  {'control':<10} " + " ".join(f"{c:>14}" for c in cols))
    for control, counts in summary.items():
        click.echo(f"  {control:<10} " + " ".join(f"{counts.get(c, 0):>14}" for c in cols))
    bad = sum(counts.get("fail", 0) + counts.get("indeterminate", 0) for counts in summary.values())
    click.echo(
        "\nAll controls pass."
        if bad == 0
        else f"\n{bad} result(s) fail or are indeterminate (indeterminate never passes)."
    )


def _explain(store, settings, now, subject: str, fmt: str) -> int:  # type: ignore[no-untyped-def]
    from changeproof.controls.facts import compute_facts
    from changeproof.evaluate import build_context, evaluate_change
    from changeproof.evidence import Change

    found = store.get(Change, subject)
    if found is None and "@" in subject:
        repo, sha = subject.split("@", 1)
        found = store.change_for_commit(repo, sha)
    if found is None:
        raise NotFoundError(
            f"no change {subject!r} in the store",
            expected="a subject as check prints it: owner/repo#N or owner/repo@SHA",
            hint="list subjects with `changeproof check --all`",
        )
    digest, change = found
    from changeproof.evaluate import promotion_context

    # the same context the full run builds for this change, including the promotion index
    ctx = promotion_context(store, build_context(store, settings, now), change)
    facts = compute_facts(change, settings)
    results = evaluate_change(change, digest, ctx)
    data = {
        "subject": change.id,
        "evidence_digest": digest,
        "raw_sha256": change.provenance.raw_sha256,
        "settings_version": settings.version,
        "as_of": now.isoformat(),
        "change": {
            "type": change.change_type,
            "platform": change.platform,
            "branch": change.branch,
            "merged_at": change.merged_at.isoformat(),
            "merge_sha": change.merge_sha,
            "head_sha": change.head_sha,
            "title": change.title,
        },
        "participants": list(facts.participant_labels),
        "required_approvals": facts.required,
        "risk": facts.risk,
        "approvals": [
            {
                "reviewer": a.name,
                "commit": a.review.commit_sha,
                "submitted_at": a.review.submitted_at.isoformat(),
                "counted": a.counts,
                "why_not": a.why_not(),
            }
            for a in facts.approvals
        ],
        "results": [result_json(r) for r in results],
    }
    if fmt == "json":
        emit_json(data)
    else:
        c = data["change"]
        assert isinstance(c, dict)
        click.echo(f"{change.id}  ({c['type']} on {c['branch']}, merged {c['merged_at']})")
        click.echo(f"  title: {c['title']}")
        click.echo(f"  evidence sha256 {digest}  raw {change.provenance.raw_sha256}")
        click.echo(f"  settings version {settings.version}")
        click.echo(f"  participants: {', '.join(facts.participant_labels) or 'none known'}")
        click.echo(
            f"  approvals required: {facts.required}"
            + (f" (risk {facts.risk})" if facts.risk else "")
        )
        for a in facts.approvals:
            verdict = "counted" if a.counts else f"not counted — {a.why_not()}"
            click.echo(f"  approval by {a.name} on {(a.review.commit_sha or '?')[:12]}: {verdict}")
        for r in results:
            click.echo(f"  {r.control:<10} {MARK[r.outcome]:<13} {'; '.join(r.reasons)}")
            if r.remediation:
                click.echo(f"  {'':<10} {'Fix:':<13} {r.remediation}")
    return EXIT_OK if all(r.outcome.ok for r in results) else EXIT_FAIL
