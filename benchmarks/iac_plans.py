"""Terraform plan parsing and CM-IAC-2 throughput.

Builds plans of growing size from the resource changes of a real corpus plan (checkov's
for_each plan, Terraform 1.9, format 1.2), parses each (canonical digest, masking, summary),
then judges many applies against many reviewed plans with CM-IAC-2 as the evaluator would.
Prints a table, then one JSON line with the figures.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from changeproof.controls.base import Context  # noqa: E402
from changeproof.controls.iac import APPROVALS_KEY, PlanBeforeApply  # noqa: E402
from changeproof.evidence import ApplyRecord, PlanRecord, Provenance  # noqa: E402
from changeproof.iac.terraform import parse_plan  # noqa: E402
from changeproof.settings import Settings  # noqa: E402

SRC = ROOT / "tests" / "fixtures" / "iac" / "checkov_for_each.json"
SHA = "0" * 64


def big_plan(n: int) -> bytes:
    doc = json.loads(SRC.read_bytes())
    base = doc["resource_changes"]
    out = []
    for i in range(n):
        rc = copy.deepcopy(base[i % len(base)])
        rc["address"] = f"module.m{i // len(base)}.{rc['address']}"
        out.append(rc)
    doc["resource_changes"] = out
    return json.dumps(doc).encode()


def main() -> None:
    settings = Settings()
    iam = settings.infrastructure.iam_resource_types
    rows = []
    for n in (100, 1000, 5000):
        data = big_plan(n)
        t = time.perf_counter()
        p = parse_plan(data, "bench", iam)
        dt = time.perf_counter() - t
        rows.append((n, len(data), dt, n / dt))
        assert p.counts == {"create": n}
    print(f"{'resources':>10} {'bytes':>10} {'parse s':>9} {'resources/s':>12}")
    for n, size, dt, rate in rows:
        print(f"{n:>10} {size:>10} {dt:>9.3f} {rate:>12.0f}")

    # CM-IAC-2 over many applies: P reviewed plans, A applies (half match, half differ)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    small = parse_plan(SRC.read_bytes(), "src", iam)
    prov = Provenance(source="bench", occurred_at=t0, collected_at=t0, raw_sha256=SHA)
    plans = []
    approvals = {}
    n_plans = 2000
    for i in range(n_plans):
        dig = f"{i:064x}"
        plans.append(
            (
                dig,
                PlanRecord(
                    id=f"acme/infra|w{i}|{dig}",
                    repo="acme/infra",
                    workspace=f"w{i % 50}",
                    subject=f"acme/infra#{i}",
                    digest=dig,
                    changes_digest=dig,
                    file_sha256=SHA,
                    format_version="1.2",
                    planned_at=t0,
                    counts=small.counts,
                    resources=small.resources,
                    provenance=prov,
                ),
            )
        )
        approvals[f"acme/infra#{i}"] = {
            "approvals_required": "1",
            "approval_times": (t0 + timedelta(hours=1)).isoformat(),
        }
    ctx = Context(
        settings=settings,
        now=t0 + timedelta(days=1),
        tables={"plan": tuple(plans)},
        extra={APPROVALS_KEY: approvals},
    )
    control = PlanBeforeApply()
    applies = []
    for i in range(500):
        dig = f"{i * 4:064x}" if i % 2 == 0 else f"{10**9 + i:064x}"
        applies.append(
            ApplyRecord(
                id=f"a{i}",
                repo="acme/infra",
                workspace=f"w{(i * 4) % 50}",
                environment="production",
                plan_digest=dig,
                changes_digest=dig,
                resources=small.resources,
                applied_at=t0 + timedelta(hours=2),
                provenance=prov,
            )
        )
    t = time.perf_counter()
    outcomes: dict[str, int] = {}
    for a in applies:
        r = control.evaluate(a, ctx, SHA)
        outcomes[r.outcome.value] = outcomes.get(r.outcome.value, 0) + 1
    dt = time.perf_counter() - t
    print(
        f"\nCM-IAC-2: {len(applies)} applies against {n_plans} plans in {dt:.3f} s "
        f"({len(applies) / dt:.0f} applies/s); outcomes {outcomes}"
    )
    print(
        json.dumps(
            {
                "parse_resources_per_s_5000": round(rows[-1][3]),
                "parse_seconds_5000": round(rows[-1][2], 4),
                "cm_iac_2_applies_per_s": round(len(applies) / dt),
                "cm_iac_2_plans": n_plans,
                "outcomes": outcomes,
            }
        )
    )


if __name__ == "__main__":
    main()
