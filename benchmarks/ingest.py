"""Ingest the real scanner outputs of the shared corpus, repeated until N findings are stored.

Usage: python benchmarks/ingest.py [--findings N] [--keep DIR]                 (the CLI path)
       python benchmarks/ingest.py --library [--files-per-command K] [--workers W]
                                  [--in-flight F] [--no-overlap] [--findings N] [--keep DIR]

By default it measures what users run: it writes a CSV manifest of the corpus files repeated
to N findings (each with its own repository acme/repo-{i%20} and scan time, so every
repetition is a new scan) and runs the real `changeproof ingest batch MANIFEST` as a
subprocess against a fresh workspace (interpreter start-up, manifest checks, the parser
processes the command picks, SQLite and the locker all inside the time), then counts what the
store holds. Peak RSS is the largest single process's among the command and its parser
processes (getrusage RUSAGE_CHILDREN); the RSS of the command's whole process tree is also
sampled while it runs, to show memory stays flat as N grows.

`--library` measures the library path instead: each "command" ingests K files (default 50)
in one transaction, as `changeproof ingest SCANNER` does. W parser processes
(changeproof.vuln.pool; default: what `changeproof ingest` uses for a large input on this
machine — one per usable CPU, up to 3; 0: parse in this process) read and parse the files
while this process writes; one pool serves all commands, as in a process that ingests
continuously (`ParsePool.ingest_commands`: the parsers go on with the next command's files
while one commits; `--no-overlap` makes them wait for each commit, as before).

CPU time is reported summed over all processes, and (library path) the time the parsers
waited for work. Prints a table and, as the last line, one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from changeproof.locker import Locker, Signer
from changeproof.settings import Settings
from changeproof.store import Store
from changeproof.vuln.ingest import FileResult, ParseJob, ingest_jobs, parse_bytes
from changeproof.vuln.pool import ParsePool, default_workers

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "external"
DD = CORPUS / "DefectDojo-django-DefectDojo" / "unittests" / "scans"
FILES = [
    ("osv-scanner", DD / "osv_scanner" / "many_findings.json"),
    ("sarif", DD / "sarif" / "issue_10191.json"),
    ("sarif", DD / "sarif" / "codeQL-output.sarif"),
    ("grype", DD / "anchore_grype" / "many_vulns_with_epss_values.json"),
    ("grype", DD / "anchore_grype" / "check_all_fields.json"),
    ("trivy", DD / "trivy" / "kubernetes.json"),
    ("trivy", DD / "trivy" / "all_statuses.json"),
    ("trivy", DD / "trivy" / "scheme_2_many_vulns.json"),
    ("pip-audit", DD / "pip_audit" / "many_vulns_new.json"),
    ("npm-audit", DD / "npm_audit_7_plus" / "one_vuln.json"),
    ("snyk", DD / "snyk" / "single_project_one_vuln.json"),
    ("semgrep", DD / "semgrep" / "many_findings.json"),
    ("dependabot", DD / "github_vulnerability" / "github-5-vuln.json"),
]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def corpus_counts(now: datetime, settings: Settings) -> list[int]:
    """How many findings each corpus file holds (parsed once, before any clock starts)."""
    counts = []
    for scanner, path in FILES:
        _ctx, parsed = parse_bytes(
            scanner, path.read_bytes(), file=str(path), repo="acme/repo", now=now, settings=settings
        )
        counts.append(len(parsed.findings))
    return counts


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants (Linux /proc), in MB; 0 once gone."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += next(
                int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS:")
            )
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total / 1024


def host_cpu_s() -> tuple[float, float]:
    """(busy, iowait) CPU seconds of the whole host since boot (Linux /proc/stat): what
    other processes used during a run is the busy time less the run's own."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / tick, iowait / tick


def cli_main(args: argparse.Namespace) -> None:
    """The CLI path: `changeproof ingest batch MANIFEST` in a subprocess, fresh workspace."""
    settings = Settings()
    home = args.keep or Path(tempfile.mkdtemp(prefix="cp-bench-ingest-cli-"))
    home.mkdir(parents=True, exist_ok=True)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    counts = corpus_counts(datetime.now(UTC), settings)
    # the manifest: the same jobs as the library path's plan (written before the clock
    # starts, as a backfill's CI artifacts and their list exist before it runs)
    manifest = home / "manifest.csv"
    planned = files = 0
    with manifest.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["scanner", "file", "repo", "scanned_at"])
        while planned < args.findings:
            scanner, path = FILES[files % len(FILES)]
            when = t0 + timedelta(minutes=files)
            out.writerow([scanner, str(path), f"acme/repo-{files % 20}", when.isoformat()])
            planned += counts[files % len(FILES)]
            files += 1
    ws = home / "ws"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEPROOF_")}
    cmd = [sys.executable, "-m", "changeproof", "--home", str(ws), "ingest", "batch", str(manifest)]
    samples: list[tuple[float, float]] = []  # (seconds since start, tree RSS MB)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    host0 = host_cpu_s()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            samples.append((time.perf_counter() - start, tree_rss_mb(proc.pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    elapsed = time.perf_counter() - start
    host1 = host_cpu_s()
    stop.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"changeproof ingest batch failed ({proc.returncode}):\n{stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak = after.ru_maxrss / 1024  # the largest single child's (the command or a parser)
    # what the rest of the host used meanwhile (this script's sampler included: ≈ 0)
    others = max(0.0, host1[0] - host0[0] - cpu)
    iowait = host1[1] - host0[1]

    from changeproof.evidence import Scan

    store = Store.open(f"sqlite:///{ws / 'store.db'}")
    try:
        scans = 0
        total = 0
        for _key, scan in store.iter_records(Scan):
            scans += 1
            total += scan.findings
        stored = store.count("scan_findings")
    finally:
        store.close()
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)
    assert (total, scans) == (planned, files), (total, planned, scans, files)

    rate = total / elapsed
    load = os.getloadavg()[0]
    print(stdout.decode().rstrip())
    print()
    print(f"{'path':<28}{'CLI: changeproof ingest batch (subprocess)':>14}")
    print(f"{'findings stored':<28}{total:>14,}")
    print(f"{'finding batches stored':<28}{stored:>14,}")
    print(f"{'scanner files (scans)':<28}{files:>14,}")
    print(f"{'transactions':<28}{1:>14,}")
    print(f"{'elapsed (s), start-up in':<28}{elapsed:>14.1f}")
    print(f"{'findings/s':<28}{rate:>14,.0f}")
    print(f"{'CPU s (command + parsers)':<28}{cpu:>14.1f}")
    print(f"{'findings per CPU-second':<28}{total / cpu:>14,.0f}")
    print(f"{'CPU s of other processes':<28}{others:>14.1f}  (host busy less ours)")
    print(f"{'CPU s waiting for the disk':<28}{iowait:>14.1f}  (host iowait)")
    print(f"{'peak RSS, one process (MB)':<28}{peak:>14.1f}")
    tree_peak = max((r for _t, r in samples), default=0.0)
    print(f"{'peak RSS, process tree (MB)':<28}{tree_peak:>14.1f}  (sampled every 0.5 s)")
    if len(samples) >= 4:
        # (the parsers stop before the commit: the last samples are the command alone)
        early, late = samples[len(samples) // 4], samples[3 * len(samples) // 4]
        print(
            f"{'tree RSS at 1/4 → 3/4':<28}{early[1]:>7.1f} MB @ {early[0]:.0f} s → "
            f"{late[1]:.1f} MB @ {late[0]:.0f} s"
        )
    print(f"{'load average (1 min)':<28}{load:>14.1f}  on {os.cpu_count()} CPU(s)")
    print(
        json.dumps(
            {
                "path": "cli",
                "findings": total,
                "findings_per_s": round(rate),
                "peak_rss_mb": round(peak, 1),
                "peak_tree_rss_mb": round(tree_peak, 1),
                "findings_per_cpu_s": round(total / cpu),
                "cpu_s": round(cpu, 1),
                "cpu_s_others": round(others, 1),
                "iowait_s": round(iowait, 1),
                "files": files,
                "elapsed_s": round(elapsed, 1),
                "load_avg": round(load, 1),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--findings", type=int, default=1_000_000)
    ap.add_argument("--files-per-command", type=int, default=50)
    ap.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="Parser processes (0: in-process; default: one per usable CPU, up to 3).",
    )
    ap.add_argument("--in-flight", type=int, default=None, help="Files queued per parser process.")
    ap.add_argument(
        "--no-overlap",
        dest="overlap",
        action="store_false",
        help="Parsers wait for each command's commit (as the pool did before ingest_commands).",
    )
    ap.add_argument("--keep", type=Path, help="Keep the workspace here.")
    ap.add_argument(
        "--library",
        action="store_true",
        help="Measure the library path (ParsePool in this process) instead of the CLI.",
    )
    args = ap.parse_args()
    if not args.library:
        cli_main(args)
        return

    # with workers, jobs name the files (the workers read them, as `changeproof ingest`'s
    # do); in-process, the bytes are read once here and handed over (as before)
    blobs = [(s, str(p), None if args.workers > 0 else p.read_bytes()) for s, p in FILES]
    settings = Settings()
    home = args.keep or Path(tempfile.mkdtemp(prefix="cp-bench-ingest-"))
    home.mkdir(parents=True, exist_ok=True)
    store = Store.open(f"sqlite:///{home / 'store.db'}")
    signer = Signer.generate(home / "keys")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    now = datetime.now(UTC)

    # how many findings each corpus file holds (parsed once here, before the clock starts):
    # the commands are made up front of the files that reach N findings, so with parser
    # processes the next command's files can be sent while this one commits
    counts = corpus_counts(now, settings)
    planned = 0

    def plan() -> Iterator[list[ParseJob]]:
        # the commands, made as they are asked for (memory stays flat in N)
        nonlocal planned
        i = 0
        while planned < args.findings:
            command: list[ParseJob] = []
            while len(command) < args.files_per_command and planned < args.findings:
                scanner, name, data = blobs[i % len(blobs)]
                when = t0 + timedelta(minutes=i)
                command.append(ParseJob(scanner, name, data, f"acme/repo-{i % 20}", when))
                planned += counts[i % len(blobs)]
                i += 1
            yield command

    total = files = commands = 0
    rss_samples: list[tuple[int, float]] = []
    start = time.perf_counter()
    cpu0 = time.process_time()
    pool = ParsePool(args.workers, in_flight=args.in_flight) if args.workers > 0 else None

    def done(res: FileResult) -> None:
        nonlocal total, files
        total += res.findings
        files += 1

    def committed() -> None:
        nonlocal commands
        commands += 1
        if commands % 20 == 0:
            rss_samples.append((total, rss_mb()))

    if pool is not None and args.overlap and hasattr(pool, "ingest_commands"):
        # one `changeproof ingest` command per transaction, as the CLI does; the parsers go on
        # with the next command's files while one commits (a process that ingests continuously)
        for results in pool.ingest_commands(
            lambda: store.writer(Locker(signer)), plan(), now=now, settings=settings
        ):
            for res in results:
                done(res)
            committed()
    else:
        for command in plan():
            with store.writer(Locker(signer)) as w:
                if pool is not None:
                    for res in pool.ingest_jobs(w, command, now=now, settings=settings):
                        done(res)
                else:
                    ingest_jobs(w, command, now=now, settings=settings, on_file=done)
            committed()
    if pool is not None:
        pool.close()
    assert total == planned, (total, planned)
    elapsed = time.perf_counter() - start
    main_cpu = time.process_time() - cpu0
    # the parsers report their own CPU time (they are the fork server's children, not ours)
    worker_cpu = pool.worker_cpu_s if pool is not None else 0.0
    cpu = main_cpu + worker_cpu
    stored = store.count("scan_findings")
    store.close()
    peak = rss_mb()
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)

    rate = total / elapsed
    print(f"{'path':<28}{'library: ParsePool in-process':>14}")
    print(f"{'findings ingested':<28}{total:>14,}")
    print(f"{'finding batches stored':<28}{stored:>14,}")
    print(f"{'scanner files':<28}{files:>14,}")
    print(f"{'transactions':<28}{commands:>14,}")
    print(f"{'elapsed (s)':<28}{elapsed:>14.1f}")
    print(f"{'findings/s':<28}{rate:>14,.0f}")
    # CPU time summed over this process and the parsers: what the host pays per finding
    print(f"{'parser processes':<28}{args.workers:>14}")
    print(f"{'CPU s (writer + parsers)':<28}{main_cpu:>8.1f} + {worker_cpu:.1f}")
    if pool is not None:
        print(f"{'writer waited for parsers':<28}{pool.wait_s:>12.1f} s")
        print(f"{'parsers waited for files':<28}{pool.worker_idle_s:>12.1f} s (summed)")
    print(f"{'findings per CPU-second':<28}{total / cpu:>14,.0f}")
    print(f"{'peak RSS (MB)':<28}{peak:>14.1f}")
    load = os.getloadavg()[0]
    print(f"{'load average (1 min)':<28}{load:>14.1f}  on {os.cpu_count()} CPU(s)")
    if rss_samples:
        first, last = rss_samples[0], rss_samples[-1]
        print(
            f"{'RSS at first/last sample':<28}{first[1]:>7.1f} MB @ {first[0]:,} → {last[1]:.1f} MB @ {last[0]:,}"
        )
    print(
        json.dumps(
            {
                "path": "library",
                "findings": total,
                "findings_per_s": round(rate),
                "peak_rss_mb": round(peak, 1),
                "findings_per_cpu_s": round(total / cpu),
                "workers": args.workers,
                "cpu_s_writer": round(main_cpu, 1),
                "cpu_s_parsers": round(worker_cpu, 1),
                "idle_s_parsers": round(pool.worker_idle_s, 1) if pool is not None else 0.0,
                "elapsed_s": round(elapsed, 1),
                "load_avg": round(load, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
