"""`changeproof audit`: population, reconciliation, sample and the signed evidence package."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

import click

from changeproof.cli import emit_json, opts
from changeproof.cli.timeparse import parse_instant, parse_period, zone
from changeproof.errors import EXIT_OK, UsageError


@click.command("audit")
@click.option(
    "--period",
    required=True,
    metavar="A..B",
    help="The audit period (ISO dates; end date inclusive).",
)
@click.option(
    "--tz",
    "tz_name",
    default="UTC",
    show_default=True,
    metavar="ZONE",
    help="Time zone of the period's dates (IANA name).",
)
@click.option(
    "--repos",
    "repos",
    multiple=True,
    metavar="R[,R…]",
    help="Only these repositories (repeat or comma-separate; default all).",
)
@click.option(
    "--sample",
    "sample",
    type=click.IntRange(min=1),
    metavar="N",
    help="A fixed sample size per population instead of the statistical one.",
)
@click.option(
    "--risk",
    default="5%",
    show_default=True,
    metavar="R",
    help="Risk of overreliance (e.g. 5% or 0.05).",
)
@click.option(
    "--tolerable-rate",
    "tolerable_rate",
    default="10%",
    show_default=True,
    metavar="T",
    help="Tolerable deviation rate (e.g. 10% or 0.1).",
)
@click.option(
    "--seed",
    metavar="S",
    help="The auditor's seed for the selection (default: a random one, recorded).",
)
@click.option(
    "--select",
    "select_file",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Test exactly these changes: one change id per line.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="New folder for the package.",
)
@click.option("--zip", "make_zip", is_flag=True, help="Also write DIR.zip.")
@click.option("--no-pdf", "no_pdf", is_flag=True, help="Skip the PDF summary.")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    metavar="N",
    help="Processes judging changes (default: one per CPU; 1 = in this process).",
)
@click.option("--operator", metavar="NAME", help="Who runs the audit (default user@host).")
@click.option("--as-of", "as_of", metavar="TIME", help="Judge as of this instant (default now).")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_context
def audit(
    ctx: click.Context,
    period: str,
    tz_name: str,
    repos: tuple[str, ...],
    sample: int | None,
    risk: str,
    tolerable_rate: str,
    seed: str | None,
    select_file: Path | None,
    out: Path,
    make_zip: bool,
    no_pdf: bool,
    operator: str | None,
    as_of: str | None,
    fmt: str,
    jobs: int | None,
) -> None:
    """Build the audit package for a period: the population of changes on controlled
    branches with its completeness reconciliation, a reproducible sample (statistical size,
    fixed size, or the auditor's own list), one evidence page per sampled change, the
    attribute worksheet, OSCAL assessment plan and results, a PDF summary, and a manifest
    of every file's SHA-256 signed with the workspace's ed25519 key.

    \b
    Exit codes: 0 package written, 2 usage or input error (nothing written).
    \b
    Examples:
      changeproof audit --period 2026-01-01..2026-06-30 --tz Europe/Berlin --seed 8123 --out audit-h1
      changeproof audit --period 2026-01-01..2026-12-31 --risk 10% --tolerable-rate 5% --seed S --out pkg --zip
      changeproof audit --period 2026-01-01..2026-03-31 --sample 25 --seed S --out q1
      changeproof audit --period 2026-01-01..2026-03-31 --select auditor-ids.txt --out q1
      changeproof verify audit-h1
    """
    from changeproof.audit import AuditRequest, run_audit
    from changeproof.audit.package import default_operator, read_select_file
    from changeproof.audit.sampling import parse_rate
    from changeproof.cli.progress import progress
    from changeproof.evaluate import default_jobs

    if select_file is not None and (seed is not None or sample is not None):
        raise UsageError(
            "--select cannot be combined with --seed or --sample",
            expected="either the auditor's own list (--select FILE) or a seeded selection",
        )
    tz = zone(tz_name)
    start, end = parse_period(period, tz)
    if start is None or end is None:
        raise UsageError(
            f"the audit period {period!r} is open-ended",
            expected="both a start and an end, e.g. 2026-01-01..2026-06-30",
        )
    r = parse_rate(risk, "risk of overreliance")
    t = parse_rate(tolerable_rate, "tolerable deviation rate")
    select = read_select_file(select_file) if select_file is not None else None
    if select is None and seed is None:
        seed = secrets.token_hex(8)
    ws = opts(ctx).workspace()
    settings = ws.settings()
    now = parse_instant(as_of, tz, what="--as-of time") if as_of else datetime.now(UTC)
    req = AuditRequest(
        start=start,
        end=end,
        period_text=period,
        tz=tz_name,
        out=out,
        operator=operator or default_operator(),
        now=now,
        repos=tuple(x.strip() for r_ in repos for x in r_.split(",") if x.strip()),
        sample=sample,
        risk=r,
        tolerable_rate=t,
        seed=seed,
        select=select,
        select_source=str(select_file) if select_file else None,
        zip=make_zip,
        pdf=not no_pdf,
        jobs=jobs or default_jobs(),
    )
    store = ws.open_store(write=False)
    try:
        signer = ws.signer()
        text = ws.config_path.read_bytes() if ws.config_path.exists() else None
        # one counter over both passes: reading the population, then evaluating it
        with progress("audit") as advance:
            result = run_audit(store, settings, signer, req, settings_text=text, advance=advance)
    finally:
        store.close()
    if fmt == "json":
        emit_json(result.to_dict())
        ctx.exit(EXIT_OK)
    pc = result.population
    click.echo(
        f"population: {pc['changes']} change(s) ({pc['standard']} standard, {pc['emergency']} emergency); "
        f"sha256 {result.population_sha256}"
    )
    for k, v in pc.items():
        if k.startswith("unmatched: "):
            click.echo(f"  {k[len('unmatched: ') :]}: {v}")
    for name, p in result.plans.items():
        seed_txt = f", seed {p['seed']}" if p.get("seed") is not None else ""
        click.echo(f"sample ({name}): {p['size']} of {p['population']} — {p['method']}{seed_txt}")
    click.echo(f"deviations in the sample: {len(result.deviations)}")
    for d in result.deviations:
        click.echo(f"  {d}")
    click.echo(
        f"package: {result.out} ({result.files} files; manifest sha256 {result.manifest_sha256})"
    )
    if result.zip_path:
        click.echo(f"zip: {result.zip_path}")
    click.echo(f"verify with: changeproof verify {result.zip_path or result.out}")
