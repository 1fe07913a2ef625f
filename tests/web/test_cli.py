"""The serve and token commands: registered, documented, loopback by default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from changeproof.cli import COMMANDS, main_group


def test_commands_are_registered_with_examples() -> None:
    assert COMMANDS["serve"] == ("changeproof.cli.serve", "serve")
    assert COMMANDS["token"] == ("changeproof.cli.token", "token")
    runner = CliRunner()
    serve = runner.invoke(main_group, ["serve", "--help"])
    assert serve.exit_code == 0
    text = " ".join(serve.output.split())
    assert "Examples" in text and "[default: 127.0.0.1]" in text
    assert "docs/server.md" in serve.output
    for sub in ("create", "list", "revoke"):
        r = runner.invoke(main_group, ["token", sub, "--help"])
        assert r.exit_code == 0 and "Examples" in r.output
    bad = runner.invoke(main_group, ["token", "create", "--scope", "root"])
    assert bad.exit_code == 2


def test_token_create_prints_the_token_once(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "changeproof", "--home", str(tmp_path / "ws"),
            "--config", str(tmp_path / "none.toml")]  # fmt: skip
    made = subprocess.run([*args, "token", "create", "--scope", "read", "--name", "ci"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    token = made.stdout.strip()
    assert token.startswith("cpt_") and len(token) > 40
    assert "not shown again" in made.stderr
    listed = subprocess.run([*args, "token", "list"], capture_output=True, text=True, check=True)
    assert "read" in listed.stdout and "ci" in listed.stdout and token not in listed.stdout
    missing = subprocess.run(
        [*args, "token", "revoke", "42"], check=False, capture_output=True, text=True
    )
    assert missing.returncode == 2 and "no API token with id 42" in missing.stderr


def test_the_gate_does_not_import_the_web_stack() -> None:
    code = (
        "import sys, changeproof.cli, changeproof.cli.gate, changeproof.cli.token; "
        "print(any(m.split('.')[0] in ('fastapi', 'uvicorn', 'starlette') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
