"""`audit` and `verify` over a population of 100,000 changes with a sample of 60.

Builds a SQLite store through the real writer and locker (every change and deployment has
its raw payload in the hash chain): 100,000 PR changes over a year with a review and a CI
check each, a staging and a production deployment every 10 changes, a protection snapshot
and a few emergencies. Then times the whole audit (population, reconciliation, evaluation of
every registered control over the population, sample of 60, evidence pages, PDF, OSCAL,
signed manifest, zip) and `verify` of the zip.

    python benchmarks/audit.py                  # 100,000 changes, sample 60
    python benchmarks/audit.py --changes 20000  # quicker

Targets: audit <= 20 s, verify <= 5 s. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from changeproof.audit import AuditRequest, run_audit, verify_package
from changeproof.evidence import (
    Actor,
    Change,
    CheckResult,
    CommitInfo,
    Deployment,
    Emergency,
    ProtectionRule,
    ProtectionSnapshot,
    Provenance,
    Review,
)
from changeproof.locker import Locker, Signer
from changeproof.settings import Settings
from changeproof.store import Store

START = datetime(2025, 1, 1, tzinfo=UTC)
PEOPLE = [f"dev{i}" for i in range(200)]
BODY = "## Description\nWork on {n}.\n\n## Risk\nlow\n\n## Testing\nCI green.\n\n## Rollback\nRevert.\n"


def sha(*parts: object) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()


def actor(login: str) -> Actor:
    return Actor(login=login, email=f"{login}@example.com")


def build(store: Store, signer: Signer, n: int) -> None:
    step = timedelta(days=365) / n
    with store.writer(Locker(signer)) as w:
        praw = w.put_raw(b"protection", kind="github.protection", source="github")
        w.put(
            ProtectionSnapshot(
                repo="acme/api",
                branch="main",
                layers=(
                    ProtectionRule(
                        layer="classic",
                        requires_pr=True,
                        required_approvals=1,
                        dismiss_stale=True,
                        required_checks=(("ci", "github-actions"),),
                        allow_force_push=False,
                        allow_deletion=False,
                    ),
                ),
                provenance=Provenance(
                    source="github",
                    occurred_at=START - timedelta(days=1),
                    collected_at=START,
                    raw_sha256=praw,
                ),
            )
        )
        for i in range(1, n + 1):
            at = START + step * i
            author, reviewer = PEOPLE[i % 200], PEOPLE[(i * 7 + 1) % 200]
            head, merge = sha("head", i), sha("merge", i)
            raw = w.put_raw(f'{{"pull": {i}}}'.encode(), kind="github.pull", source="github")
            change = Change(
                repo="acme/api",
                branch="main",
                number=i,
                change_type="merge",
                platform="github",
                merged_at=at,
                merge_sha=merge,
                landed_shas=(merge,),
                head_sha=head,
                title=f"Change {i} (API-{i})",
                body=BODY.format(n=i),
                author=actor(author),
                merged_by=actor(author),
                commits=(
                    CommitInfo(
                        sha=head,
                        parents=(sha("base", i),),
                        author=actor(author),
                        committer=actor(author),
                        authored_at=at - timedelta(hours=2),
                        committed_at=at - timedelta(hours=2),
                        message=f"change {i}",
                    ),
                ),
                reviews=(
                    Review(
                        reviewer=actor(reviewer),
                        state="APPROVED",
                        submitted_at=at - timedelta(hours=1),
                        commit_sha=head,
                    ),
                ),
                checks=(
                    CheckResult(
                        name="ci",
                        conclusion="success",
                        commit_sha=head,
                        app="github-actions",
                        started_at=at - timedelta(minutes=90),
                        completed_at=at - timedelta(minutes=80),
                    ),
                ),
                files=(),
                tickets=(f"API-{i}",),
                provenance=Provenance(
                    source="github", occurred_at=at, collected_at=at, raw_sha256=raw
                ),
            )
            w.put(change, seq=i * 1000)
            if i % 10 == 0:
                for env, minutes in (("staging", 10), ("production", 40)):
                    dat = at + timedelta(minutes=minutes)
                    draw = w.put_raw(f"deploy {i} {env}".encode(), kind="deployment", source="ci")
                    w.put(
                        Deployment(
                            id=f"dep-{i}-{env}",
                            repo="acme/api",
                            environment=env,
                            commit_sha=merge,
                            status="success",
                            started_at=dat,
                            finished_at=dat + timedelta(minutes=2),
                            artifact="sha256:" + sha("artifact", i).ljust(64, "0"),
                            actor=actor("github-actions[bot]"),
                            provenance=Provenance(
                                source="ci", occurred_at=dat, collected_at=dat, raw_sha256=draw
                            ),
                        )
                    )
            if i % 5000 == 0:
                eraw = w.put_raw(f"emergency {i}".encode(), kind="emergency", source="record")
                w.put(
                    Emergency(
                        id=f"EMG-{i}",
                        repo="acme/api",
                        subject=change.id,
                        incident=f"INC-{i}",
                        approver=actor("oncall"),
                        declared_at=at - timedelta(minutes=5),
                        provenance=Provenance(
                            source="record", occurred_at=at, collected_at=at, raw_sha256=eraw
                        ),
                    )
                )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=100_000)
    ap.add_argument("--sample", type=int, default=60)
    ap.add_argument(
        "--jobs", type=int, default=0, help="processes judging changes (default: one per CPU)"
    )
    args = ap.parse_args()
    if args.jobs <= 0:
        from changeproof.evaluate import default_jobs

        args.jobs = default_jobs()
    with tempfile.TemporaryDirectory(prefix="cp-audit-bench-") as d:
        root = Path(d)
        signer = Signer.generate(root / "keys")
        store = Store.open(f"sqlite:///{root / 'store.db'}")
        t0 = time.perf_counter()
        build(store, signer, args.changes)
        build_s = time.perf_counter() - t0
        req = AuditRequest(
            start=START,
            end=START + timedelta(days=366),
            period_text="2025-01-01..2026-01-01",
            tz="UTC",
            out=root / "package",
            operator="bench@localhost",
            now=START + timedelta(days=400),
            sample=args.sample,
            seed="benchmark-seed",
            zip=True,
            jobs=args.jobs,
        )
        t1 = time.perf_counter()
        result = run_audit(store, Settings(), signer, req)
        audit_s = time.perf_counter() - t1
        store.close()
        assert result.zip_path is not None
        t2 = time.perf_counter()
        rep = verify_package(result.zip_path, trusted_key=signer.public_pem)
        verify_s = time.perf_counter() - t2
        t3 = time.perf_counter()
        rep_dir = verify_package(result.out, trusted_key=signer.public_pem)
        verify_dir_s = time.perf_counter() - t3
        assert rep.ok and rep_dir.ok, rep.problems + rep_dir.problems
        size_mb = result.zip_path.stat().st_size / 1e6
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {
        "changes": args.changes,
        "sampled": len(result.sample),
        "files": result.files,
        "zip_mb": round(size_mb, 1),
        "build_s": round(build_s, 2),
        "audit_s": round(audit_s, 2),
        "verify_s": round(verify_s, 2),
        "verify_folder_s": round(verify_dir_s, 2),
        "peak_rss_mb": round(rss_mb),
        "jobs": args.jobs,
        "phases_s": result.timings,
    }
    print(f"{'population':<28} {args.changes:>10,} changes (built in {build_s:.1f} s)")
    print(f"{'sample':<28} {len(result.sample):>10} changes ({args.sample} per population)")
    print(f"{'package':<28} {result.files:>10} files, zip {size_mb:.1f} MB")
    print(f"{'audit (target <= 20 s)':<28} {audit_s:>10.2f} s")
    for phase, secs in result.timings.items():
        print(f"{'  ' + phase:<28} {secs:>10.2f} s")
    print(f"{'verify zip (target <= 5 s)':<28} {verify_s:>10.2f} s")
    print(f"{'verify folder':<28} {verify_dir_s:>10.2f} s")
    print(f"{'peak RSS':<28} {rss_mb:>10.0f} MB (main process)")
    print(f"{'processes judging changes':<28} {args.jobs:>10}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
