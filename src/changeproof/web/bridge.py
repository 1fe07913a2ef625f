"""Run a `changeproof record …` / `gate` command in-process for the API.

The API records through the very same command code as the CLI (validation, raw submission
into the locker, the record, one transaction), called with ``--format json`` and its output
captured. Commands print to the process's stdout, so calls are serialised by a lock.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
from typing import Any

import click

from changeproof.errors import ChangeproofError, StoreError
from changeproof.workspace import Workspace


class CommandFailed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def run(
    ws: Workspace, cmd: click.Command, args: list[str], lock: threading.Lock
) -> tuple[int, Any]:
    """(exit code, parsed JSON output). Bad input → CommandFailed(422, the CLI's message)."""
    from changeproof.cli import Options

    obj = Options(str(ws.home), ws.db_url, str(ws.config_path), False)
    buf = io.BytesIO()
    out = io.TextIOWrapper(buf, encoding="utf-8", write_through=True)
    with lock, contextlib.redirect_stdout(out):
        try:
            rc = cmd.main(
                args=[*args, "--format", "json"],
                prog_name=f"changeproof {cmd.name}",
                standalone_mode=False,
                obj=obj,
            )
        except ChangeproofError as exc:
            status = 503 if isinstance(exc, StoreError) else 422 if exc.exit_code == 2 else 409
            raise CommandFailed(status, exc.message) from None
        except click.exceptions.Exit as exc:
            rc = exc.exit_code
        except click.ClickException as exc:
            raise CommandFailed(422, exc.format_message()) from None
        out.flush()
    text = buf.getvalue().decode("utf-8").strip()
    try:
        data = json.loads(text) if text else None
    except ValueError:
        raise CommandFailed(500, "the command did not produce JSON") from None
    return (rc if isinstance(rc, int) else 0), data
