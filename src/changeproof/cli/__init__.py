"""The command line: parse → call → render → exit code. Thin by design.

Commands are registered in ``COMMANDS`` (name → "module:attribute") and imported only when
called, so ``changeproof gate`` starts without loading the audit, the web server or rich.

Exit codes (docs/cli.md): 0 success / allow / intact; 1 failing results / deny / tampered;
2 usage, configuration, input or environment error (never an allow).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

import click

from changeproof import __version__
from changeproof.errors import EXIT_ERROR, ChangeproofError

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("changeproof.cli.demo", "demo"),
    "findings": ("changeproof.cli.findings", "findings"),
    "init": ("changeproof.cli.core", "init_cmd"),
    "collect": ("changeproof.cli.collect", "collect"),
    "check": ("changeproof.cli.check", "check"),
    "verify": ("changeproof.cli.core", "verify_cmd"),
    "controls": ("changeproof.cli.core", "controls_cmd"),
    "db": ("changeproof.cli.core", "db"),
    "key": ("changeproof.cli.core", "key"),
    "record": ("changeproof.cli.record", "record"),
    "ingest": ("changeproof.cli.ingest", "ingest"),
    "gate": ("changeproof.cli.gate", "gate"),
    "emergencies": ("changeproof.cli.gate", "emergencies"),
    "audit": ("changeproof.cli.audit", "audit"),
    "policy": ("changeproof.cli.policy", "policy"),
    "serve": ("changeproof.cli.serve", "serve"),
    "token": ("changeproof.cli.token", "token"),
}


@dataclass
class Options:
    home: str | None
    db: str | None
    config: str | None
    verbose: bool

    def workspace(self) -> Any:
        from changeproof.workspace import Workspace

        return Workspace.resolve(self.home, self.db, self.config)


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when called (fast start-up)."""

    def __init__(self, *args: Any, registry: dict[str, tuple[str, str]] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.registry = COMMANDS if registry is None else registry

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.registry)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.registry.get(cmd_name)
        if target is None:
            return None
        module = importlib.import_module(target[0])
        cmd = getattr(module, target[1])
        assert isinstance(cmd, click.Command)
        return cmd


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  changeproof init                      write a commented changeproof.toml
  changeproof collect git .             collect this repository's history
  changeproof check --format json       evaluate the controls
  changeproof verify                    check the evidence locker for tampering

Exit codes: 0 ok, 1 failing results / deny / tampered, 2 usage or input error.
Docs: docs/README.md""",
)
@click.option(
    "--home",
    metavar="DIR",
    help="Workspace folder (default ./.changeproof; env CHANGEPROOF_HOME).",
)
@click.option(
    "--db",
    metavar="URL",
    help="Database URL (default SQLite in the workspace; env CHANGEPROOF_DB).",
)
@click.option(
    "--config",
    metavar="FILE",
    help="Settings file (default ./changeproof.toml; env CHANGEPROOF_CONFIG).",
)
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(__version__, prog_name="changeproof")
@click.pass_context
def main_group(
    ctx: click.Context, home: str | None, db: str | None, config: str | None, verbose: bool
) -> None:
    """changeproof — prove every change that reached production was authorised, reviewed,
    tested and deployed per policy, and stop the ones that weren't."""
    ctx.obj = Options(home, db, config, verbose)


def main(argv: list[str] | None = None) -> None:
    verbose = "--verbose" in (argv or sys.argv) or "-v" in (argv or sys.argv[1:2])
    try:
        rc = main_group.main(args=argv, prog_name="changeproof", standalone_mode=False)
    except ChangeproofError as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_ERROR)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        click.echo("interrupted: nothing from the unfinished step was kept", err=True)
        sys.exit(130)
    except BrokenPipeError:
        os._exit(0)
    except Exception as exc:
        if verbose:
            raise
        click.echo(
            f"error: changeproof hit an unexpected problem ({type(exc).__name__}: {exc}). "
            "Nothing half-done was kept. Try: run again with --verbose for the details, "
            "and report it if it persists.",
            err=True,
        )
        sys.exit(EXIT_ERROR)
    sys.exit(rc if isinstance(rc, int) else 0)


def opts(ctx: click.Context) -> Options:
    o = ctx.find_object(Options)
    assert o is not None
    return o


def emit_json(data: Any) -> None:
    import msgspec

    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(data), indent=2) + b"\n")
    sys.stdout.flush()
