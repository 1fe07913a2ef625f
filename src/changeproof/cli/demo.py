"""`changeproof demo`"""

from __future__ import annotations

from pathlib import Path

import click

from changeproof.errors import ChangeproofError


def run_in_process(argv: list[str]) -> int:
    """Run one changeproof command line through the real CLI, returning its exit code."""
    from changeproof.cli import main_group

    try:
        rc = main_group.main(args=argv, prog_name="changeproof", standalone_mode=False)
    except ChangeproofError as exc:
        click.echo(f"error: {exc.message}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return rc if isinstance(rc, int) else 0


@click.command("demo")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("changeproof-demo"),
    show_default=True,
    help="Folder for the demo workspace and its audit package.",
)
@click.option(
    "--scale",
    type=click.IntRange(5, 5000),
    default=60,
    show_default=True,
    help="Merged PRs per repository (three repositories).",
)
@click.option(
    "--seed",
    type=int,
    default=7,
    show_default=True,
    help="Seed of the generated organisation (same seed, same organisation).",
)
def demo(out: Path, scale: int, seed: int) -> None:
    """Run the whole pipeline offline on a generated organisation, through the real
    connectors: a GitHub organisation is generated and served on a loopback HTTP replay, the
    real GitHub source collects it, emergencies and their retroactive reviews are recorded, a
    scanner report is ingested, the controls are checked and an audit package is built and
    verified. Prints the package path at the end.

    \b
    Examples:
      changeproof demo
      changeproof demo --out /tmp/demo --scale 200 --seed 42
    """
    from changeproof.demo import run_demo

    if (out / ".changeproof").exists():
        raise click.UsageError(
            f"{out} already holds a demo workspace; choose another --out or remove it"
        )
    pkg = run_demo(out, scale=scale, seed=seed, run=run_in_process, echo=click.echo)
    click.echo(f"\nAudit package: {pkg.resolve()}")
    click.echo(
        f"Open {(pkg / 'index.html').resolve()} in a browser; verify it with "
        f"`changeproof verify {pkg}`."
    )
