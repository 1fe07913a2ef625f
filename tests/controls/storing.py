"""Put evidence records into a real store and locker, each with its raw payload kept."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from changeproof.evaluate import Period, iter_results
from changeproof.evidence import Record, canonical_json
from changeproof.locker import Locker
from changeproof.outcomes import Result
from changeproof.settings import Settings
from changeproof.store import Store
from changeproof.workspace import Workspace


def put(workspace: Workspace, store: Store, *records: Record, keep_raw: bool = True) -> None:
    """One unit of work: each record's raw payload into the locker (so provenance.raw_sha256
    names a kept payload), then the record. ``keep_raw=False`` stores records whose raw payload
    the locker never received (evidence that cannot be re-derived)."""
    with store.writer(Locker(workspace.signer())) as w:
        for rec in records:
            if keep_raw:
                body = canonical_json(msgspec.to_builtins(rec))
                sha = w.put_raw(body, kind=f"test.{rec.kind}", source="test")
                prov = msgspec.structs.replace(rec.provenance, raw_sha256=sha)  # type: ignore[attr-defined]
                rec = msgspec.structs.replace(rec, provenance=prov)
            w.put(rec)


def results(
    store: Store,
    settings: Settings,
    now: datetime,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    extra: dict[str, Any] | None = None,
) -> list[Result]:
    return list(iter_results(store, settings, now, period=Period(start, end), extra=extra))


def pick(rs: list[Result], control: str, subject: str | None = None) -> list[Result]:
    return [r for r in rs if r.control == control and (subject is None or r.subject == subject)]
