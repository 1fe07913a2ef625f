"""Audit packages started from the API: built in a background thread into the workspace."""

from __future__ import annotations

import json
import re
import secrets
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from changeproof.workspace import Workspace

_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}")


class Audits:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.root = ws.home / "audits"
        self._lock = threading.Lock()

    def _status(self, aid: str, data: dict[str, Any]) -> None:
        p = self.root / aid / "status.json"
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
        tmp.replace(p)

    def start(self, params: dict[str, Any]) -> dict[str, Any]:
        """Validate cheaply, then build in the background; returns the job's status."""
        from changeproof.audit.sampling import parse_rate
        from changeproof.cli.timeparse import parse_period, zone

        tz = zone(params.get("tz") or "UTC")
        start, end = parse_period(params["period"], tz)
        if start is None or end is None:
            from changeproof.errors import UsageError

            raise UsageError(f"the audit period {params['period']!r} is open-ended")
        risk = parse_rate(params.get("risk") or "5%", "risk of overreliance")
        rate = parse_rate(params.get("tolerable_rate") or "10%", "tolerable deviation rate")
        aid = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(4)
        (self.root / aid).mkdir(parents=True)
        status = {"id": aid, "status": "running", "params": params,
                  "started_at": datetime.now(UTC).isoformat()}  # fmt: skip
        self._status(aid, status)
        threading.Thread(
            target=self._run, args=(aid, status, start, end, tz, risk, rate), daemon=True,
            name=f"audit-{aid}",
        ).start()  # fmt: skip
        return status

    def _run(self, aid: str, status: dict[str, Any], start: datetime, end: datetime, tz: Any,
             risk: float, rate: float) -> None:  # fmt: skip
        from changeproof.audit import AuditRequest, run_audit

        p = status["params"]
        try:
            settings = self.ws.settings()
            req = AuditRequest(
                start=start, end=end, period_text=p["period"], tz=p.get("tz") or "UTC",
                out=self.root / aid / "package", operator=p.get("operator") or "changeproof serve",
                now=datetime.now(UTC), repos=tuple(p.get("repos") or ()), sample=p.get("sample"),
                risk=risk, tolerable_rate=rate, seed=p.get("seed") or secrets.token_hex(8),
                select=None, select_source=None, zip=True, pdf=bool(p.get("pdf", False)),
            )  # fmt: skip
            store = self.ws.open_store(write=False)
            try:
                text = self.ws.config_path.read_bytes() if self.ws.config_path.exists() else None
                result = run_audit(store, settings, self.ws.signer(), req, settings_text=text)
            finally:
                store.close()
            status.update(status="done", finished_at=datetime.now(UTC).isoformat(),
                          summary=result.to_dict())  # fmt: skip
        except Exception as exc:
            status.update(status="failed", finished_at=datetime.now(UTC).isoformat(),
                          error=f"{type(exc).__name__}: {getattr(exc, 'message', exc)}")  # fmt: skip
        with self._lock:
            self._status(aid, status)

    def list(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        out = [s for p in self.root.iterdir() if (s := self.get(p.name)) is not None]
        return sorted(out, key=lambda s: s["id"], reverse=True)

    def get(self, aid: str) -> dict[str, Any] | None:
        if not _ID.fullmatch(aid):
            return None
        p = self.root / aid / "status.json"
        try:
            data: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data

    def zip_path(self, aid: str) -> Path | None:
        s = self.get(aid)
        if s is None or s.get("status") != "done":
            return None
        z = Path(str(s["summary"].get("zip") or ""))
        return z if z.is_file() else None
