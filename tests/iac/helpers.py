"""Running the CLI in-process for the infrastructure tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from changeproof.workspace import Workspace


@dataclass
class Cli:
    ws: Workspace
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *args: str) -> tuple[int, str, str]:
        from changeproof.cli import main

        self.capsys.readouterr()
        base = ["--home", str(self.ws.home), "--config", str(self.ws.config_path)]
        with pytest.raises(SystemExit) as ei:
            main([*base, *args])
        out = self.capsys.readouterr()
        code = ei.value.code
        return (code if isinstance(code, int) else 0), out.out, out.err

    def ok(self, *args: str) -> str:
        rc, out, err = self(*args)
        assert rc == 0, f"{args}: rc={rc} {err}"
        return out

    def json(self, *args: str) -> Any:
        rc, out, err = self(*args, "--format", "json")
        assert rc in (0, 1), f"{args}: rc={rc} {err}"
        return json.loads(out)

    def results(self, control: str, *extra: str) -> dict[str, dict[str, Any]]:
        rc, out, err = self("check", "--format", "json", *extra)
        assert rc in (0, 1), err
        return {r["subject"]: r for r in json.loads(out)["results"] if r["control"] == control}
