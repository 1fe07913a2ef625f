"""Render the Change Management Policy in every format and time it; time `policy status`.

Renders the policy from the default settings and the live control registry: Markdown, HTML,
PDF (WeasyPrint) and DOCX (python-docx), each several times (the median is reported). Then it
records approvals and check runs in a SQLite store through the real writer and locker, and
times `policy_status` over a year of runs.

    python benchmarks/policy_render.py              # 5 rounds, 10,000 check runs
    python benchmarks/policy_render.py --rounds 2

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from changeproof.controls import ALL_CONTROLS
from changeproof.locker import Signer
from changeproof.policy import (
    Window,
    approve,
    policy_status,
    render_docx,
    render_html,
    render_markdown,
    render_pdf,
)
from changeproof.settings import Settings
from changeproof.store import Store, schema, to_us


def timed(fn: object, rounds: int) -> tuple[float, int]:
    assert callable(fn)
    times, size = [], 0
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        size = len(out)
    return statistics.median(times), size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10_000)
    args = ap.parse_args()
    s = Settings()
    now = datetime(2026, 6, 1, tzinfo=UTC)
    figures: dict[str, float | int] = {"controls": len(ALL_CONTROLS)}
    rows = []
    for name, fn in (
        ("md", lambda: render_markdown(s).encode()),
        ("html", lambda: render_html(s, now=now).encode()),
        ("pdf", lambda: render_pdf(s, now=now)),
        ("docx", lambda: render_docx(s, now=now)),
    ):
        secs, size = timed(fn, args.rounds)
        rows.append((name, secs, size))
        figures[f"{name}_s"] = round(secs, 3)
        figures[f"{name}_bytes"] = size
    from io import BytesIO

    from pypdf import PdfReader

    figures["pdf_pages"] = len(PdfReader(BytesIO(render_pdf(s, now=now))).pages)

    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(f"sqlite:///{Path(tmp) / 'store.db'}")
        signer = Signer.generate(Path(tmp) / "keys")
        start = datetime(2025, 6, 1, tzinfo=UTC)
        approve(store, signer, s, version="1.0", by="Dana Lee", now=start)
        step = timedelta(days=365) / args.runs
        with store.engine.begin() as conn:
            conn.execute(
                sa.insert(schema.runs),
                [
                    {
                        "started_us": to_us(start + i * step),
                        "finished_us": to_us(start + i * step),
                        "settings_digest": s.version if i % 3 else "f" * 64,
                        "scope": "{}",
                        "tool_version": "bench",
                        "result_count": 0,
                    }
                    for i in range(args.runs)
                ],
            )
        t = time.perf_counter()
        st = policy_status(store, s, Window(start, start + timedelta(days=365)))
        figures["status_s"] = round(time.perf_counter() - t, 3)
        figures["status_runs"] = args.runs
        figures["status_findings"] = len(st.findings)
        store.close()

    print(f"{'format':<8}{'median s':>10}{'bytes':>12}")
    for name, secs, size in rows:
        print(f"{name:<8}{secs:>10.3f}{size:>12,}")
    print(f"pdf pages: {figures['pdf_pages']}; controls: {figures['controls']}")
    print(
        f"policy status over {args.runs:,} check runs: {figures['status_s']:.3f} s "
        f"({figures['status_findings']} finding(s))"
    )
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
