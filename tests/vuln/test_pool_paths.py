"""Parser processes that read the files themselves (changeproof.vuln.pool) store exactly what
parsing in-process stores — evidence rows, raw payloads and the locker chain, byte for byte —
keep all or nothing, fail cleanly when a worker dies, and leave no process behind."""

from __future__ import annotations

import json
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from changeproof.errors import InputFormatError, SourceError
from changeproof.locker import Locker, Signer
from changeproof.settings import Settings
from changeproof.store import Store
from changeproof.vuln.ingest import ParseJob, ingest_files, ingest_jobs
from changeproof.vuln.pool import AUTO_MIN_BYTES, RING_BYTES, ParsePool, _Ring, auto_workers
from tests.vuln.corpus import DD, SAMPLES

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the pool forks (Linux)")

NOW = datetime(2026, 5, 1, tzinfo=UTC)
# the benchmark's mix and one file of every format
FILES = [
    ("osv-scanner", DD / "osv_scanner" / "many_findings.json"),
    ("sarif", DD / "sarif" / "issue_10191.json"),
    ("sarif", DD / "sarif" / "codeQL-output.sarif"),
    ("grype", DD / "anchore_grype" / "many_vulns_with_epss_values.json"),
    ("grype", DD / "anchore_grype" / "check_all_fields.json"),
    ("trivy", DD / "trivy" / "kubernetes.json"),
    ("trivy", DD / "trivy" / "all_statuses.json"),
    ("pip-audit", DD / "pip_audit" / "many_vulns_new.json"),
    ("npm-audit", DD / "npm_audit_7_plus" / "one_vuln.json"),
    ("snyk", DD / "snyk" / "single_project_one_vuln.json"),
    ("semgrep", DD / "semgrep" / "many_findings.json"),
    ("dependabot", DD / "github_vulnerability" / "github-5-vuln.json"),
    *SAMPLES.items(),
]
PLUS2 = timezone(timedelta(hours=2))


def _jobs(*, with_bytes: bool = False) -> list[ParseJob]:
    out = []
    for i, (scanner, path) in enumerate(FILES):
        when = [None, datetime(2026, 4, 1, i, tzinfo=UTC), datetime(2026, 4, 2, i, tzinfo=PLUS2)][
            i % 3
        ]
        data = path.read_bytes() if with_bytes and i % 2 else None
        out.append(
            ParseJob(
                scanner,
                str(path),
                data,
                f"acme/r{i % 3}",
                when,
                "img:1" if i % 4 else None,
                partial=i % 5 == 0,
            )
        )
    return out


def _dump(store: Store) -> dict[str, list[tuple[object, ...]]]:
    with store.connect() as c:
        return {
            t: [tuple(r) for r in c.execute(sa.text(q))]
            for t, q in {
                "evidence": "SELECT id, kind, key, repo, subject, occurred_us, collected_us, "
                "digest, raw_sha256, body FROM evidence ORDER BY id",
                "objects": "SELECT digest, size, media_type, body FROM locker_objects "
                "ORDER BY digest",
                "entries": "SELECT seq, digest, kind, source, recorded_us, prev_hash, entry_hash "
                "FROM locker_entries ORDER BY seq",
            }.items()
        }


def _store(tmp: Path, name: str) -> tuple[Store, Signer]:
    keys = tmp / "keys"
    signer = Signer.load(keys) if keys.exists() else Signer.generate(keys)
    return Store.open(f"sqlite:///{tmp / name}.db"), signer


@pytest.mark.parametrize(
    ("workers", "in_flight", "window", "with_bytes", "held", "ring"),
    [
        (1, 1, None, False, None, RING_BYTES),
        (2, 2, 3, False, None, RING_BYTES),
        (2, 4, None, True, None, RING_BYTES),
        (3, 1, 4, True, None, RING_BYTES),
        (2, 8, None, False, 1, RING_BYTES),  # no answer waits while another is written
        (2, 4, None, False, None, 300_000),  # large files by pipe, the ring wrapping around
    ],
)
def test_workers_store_exactly_what_in_process_parsing_stores(
    tmp_path: Path,
    workers: int,
    in_flight: int,
    window: int | None,
    with_bytes: bool,
    held: int | None,
    ring: int,
) -> None:
    jobs = _jobs(with_bytes=with_bytes) * 2  # the same bytes again: second scans of them
    dumps = []
    for name in ("seq", "pool"):
        store, signer = _store(tmp_path, name)
        try:
            with store.writer(Locker(signer, clock_us=7)) as w:
                if name == "seq":
                    seq = ingest_jobs(w, jobs, now=NOW, settings=Settings())
                else:
                    pool = ParsePool(workers, in_flight=in_flight, window=window, ring_bytes=ring)
                    with pool:
                        if held is not None:
                            pool.max_held_bytes = held
                        par = list(pool.ingest_jobs(w, jobs, now=NOW, settings=Settings()))
                    assert pool.worker_cpu_s > 0
            dumps.append(_dump(store))
        finally:
            store.close()
    assert dumps[0] == dumps[1]
    assert dumps[0]["evidence"] and dumps[0]["entries"]
    # the same results, down to the offsets of the scan times
    assert [repr(vars(r)) for r in seq] == [repr(vars(r)) for r in par]


def test_the_ring_reuses_regions_in_order_once_released() -> None:
    ring = _Ring(mmap.mmap(-1, 10))
    assert ring.put(0, b"aaaa") == 0
    assert ring.put(1, b"bbbb") == 4
    assert ring.put(2, b"cccc") == -1  # 2 bytes left at the end, none at the start
    ring.release(1)  # the parent has read answer 0
    assert ring.put(3, b"dd") == 8  # still fits at the end
    assert ring.put(4, b"eeee") == 0  # wraps to the start, before answer 1's region
    assert ring.put(5, b"f") == -1  # full: [4, 10) still in use
    assert ring.buf[:10] == b"eeeebbbbdd"
    ring.release(6)
    assert ring.put(6, b"g" * 10) == 0
    assert ring.put(7, b"") == -1  # nothing to copy
    assert ring.put(8, b"h" * 11) == -1  # larger than the ring


def test_a_bad_file_reports_the_first_failure_in_file_order(tmp_path: Path) -> None:
    cut = tmp_path / "cut.json"
    cut.write_bytes(FILES[2][1].read_bytes()[:4000])
    good = [ParseJob(s, str(p), None, "acme/app") for s, p in FILES[:6]]
    jobs = [
        *good,
        ParseJob("sarif", str(cut), None, "acme/app"),
        *good,
        ParseJob("trivy", str(tmp_path / "missing.json"), None, "acme/app"),
    ]
    store, signer = _store(tmp_path, "s")
    try:
        with (
            pytest.raises(InputFormatError, match=r"cut\.json: the JSON ends early"),
            store.writer(Locker(signer)) as w,
            ParsePool(2, in_flight=8) as pool,
        ):
            list(pool.ingest_jobs(w, jobs, now=NOW, settings=Settings()))
        assert pool._procs == []  # stopped: answers in flight belong to no one
        assert {k: v for k, v in _dump(store).items() if v} == {}
    finally:
        store.close()


def test_a_missing_file_read_by_a_worker_fails_in_its_turn(tmp_path: Path) -> None:
    store, signer = _store(tmp_path, "s")
    sarif = [p for _, p in FILES[1:3]]
    files = [*sarif, tmp_path / "missing.json", *sarif]
    try:
        with (
            pytest.raises(InputFormatError, match=r"missing\.json: no such file"),
            store.writer(Locker(signer)) as w,
        ):
            ingest_files(w, "sarif", files, repo="acme/app", now=NOW, settings=Settings(),
                         workers=2)  # fmt: skip
        assert {k: v for k, v in _dump(store).items() if v} == {}
    finally:
        store.close()


def test_a_worker_that_dies_fails_the_command_cleanly(tmp_path: Path) -> None:
    store, signer = _store(tmp_path, "s")
    jobs = [ParseJob(s, str(p), None, "acme/app") for s, p in FILES] * 3
    pool = ParsePool(2, in_flight=1)
    try:
        with (
            pytest.raises(SourceError, match="parser process stopped unexpectedly") as err,
            store.writer(Locker(signer)) as w,
        ):
            for i, _res in enumerate(pool.ingest_jobs(w, jobs, now=NOW, settings=Settings())):
                if i == 2:
                    os.kill(pool._procs[1].process.pid, signal.SIGKILL)
        assert err.value.hint and "nothing was ingested" in err.value.hint
        assert pool._procs == []
        assert {k: v for k, v in _dump(store).items() if v} == {}
    finally:
        pool.close()
        store.close()


_ORPHAN_SCRIPT = """
import json, os, sys
from changeproof.vuln.pool import ParsePool
pool = ParsePool(3)
procs = pool._pool()
print(json.dumps([p.process.pid for p in procs]), flush=True)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), 9)
os._exit(0)  # no clean-up at all: the workers must notice by themselves
"""


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # exited, waiting to be reaped


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_workers_do_not_outlive_their_parent(how: str) -> None:
    r = subprocess.run([sys.executable, "-c", _ORPHAN_SCRIPT, how], capture_output=True,
                       text=True, timeout=60, check=False)  # fmt: skip
    pids = json.loads(r.stdout.splitlines()[0])
    assert len(pids) == 3
    deadline = time.monotonic() + 10
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(p) for p in pids)


def test_auto_workers_only_for_large_inputs_on_several_cpus(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b" " * AUTO_MIN_BYTES)
    small = FILES[0][1]
    assert auto_workers([big], cpus=2) == 0  # one file: nothing to overlap
    assert auto_workers([small, small], cpus=2) == 0  # a pool would not pay its start-up
    assert auto_workers([big, small], cpus=1) == 0  # one CPU
    assert auto_workers([big, small, tmp_path / "missing"], cpus=2) == 2
    assert auto_workers([big, small], cpus=16) == 3


def test_cli_ingest_of_a_large_input_uses_the_pool_and_stores_it_all(tmp_path: Path) -> None:
    src = DD / "sarif" / "codeQL-output.sarif"
    n = AUTO_MIN_BYTES // src.stat().st_size + 2
    files = []
    for i in range(n):  # distinct scans: one byte of whitespace more each
        f = tmp_path / f"scan-{i}.sarif"
        f.write_bytes(src.read_bytes() + b" " * i)
        files.append(str(f))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEPROOF_")}
    r = subprocess.run([sys.executable, "-m", "changeproof", "ingest", "sarif", *files, "--repo",
                        "acme/app", "--format", "json"], cwd=tmp_path, capture_output=True,
                       text=True, env=env, timeout=300, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [x["file"] for x in out] == files
    assert {x["findings"] for x in out} == {72}
    store = Store.open(f"sqlite:///{tmp_path / '.changeproof' / 'store.db'}")
    try:
        assert store.count("scan") == n
        with store.connect() as c:
            assert c.execute(sa.text("SELECT count(*) FROM locker_entries")).scalar() == n
    finally:
        store.close()
    bad = tmp_path / "cut.sarif"
    bad.write_bytes(src.read_bytes()[:9000])
    r = subprocess.run([sys.executable, "-m", "changeproof", "ingest", "sarif", *files[:-1],
                        str(bad), files[-1], "--repo", "acme/other"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=300, check=False)  # fmt: skip
    assert r.returncode == 2 and "cut.sarif" in r.stderr and "Traceback" not in r.stderr
    store = Store.open(f"sqlite:///{tmp_path / '.changeproof' / 'store.db'}")
    try:
        assert store.count("scan") == n  # nothing of the failed command
    finally:
        store.close()


def _thread_names() -> set[str]:
    return {t.name for t in threading.enumerate()}


def test_a_checkpoint_thread_copies_the_wal_while_the_pool_is_open(tmp_path: Path) -> None:
    store, signer = _store(tmp_path, "s")
    jobs = [ParseJob(s, str(p), None, "acme/app") for s, p in FILES[:6]]
    try:
        with ParsePool(2) as pool:
            for _ in range(3):  # back-to-back commands, as the benchmark runs them
                with store.writer(Locker(signer)) as w:
                    assert len(list(pool.ingest_jobs(w, jobs, now=NOW, settings=Settings()))) == 6
                assert "wal-checkpoint" in _thread_names()
            wal = tmp_path / "s.db-wal"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # every committed frame copied into the db
                with store.connect() as c:
                    busy, frames, done = c.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
                if frames == done and not busy:
                    break
            assert wal.exists() and frames == done
        assert "wal-checkpoint" not in _thread_names()
        assert store.count("scan") == 6
    finally:
        store.close()


def _portable_dump(store: Store) -> dict[str, list[tuple[object, ...]]]:
    with store.connect() as c:
        return {
            t: [
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                for r in c.execute(sa.text(q))
            ]
            for t, q in {
                "evidence": "SELECT kind, key, repo, subject, occurred_us, collected_us, digest, "
                "raw_sha256, body FROM evidence ORDER BY kind, key",
                "objects": "SELECT digest, size, media_type, body FROM locker_objects "
                "ORDER BY digest",
                "entries": "SELECT seq, digest, kind, source, recorded_us, prev_hash, entry_hash "
                "FROM locker_entries ORDER BY seq",
            }.items()
        }


def both_backends(
    tmp_path: Path, db_url: str, ingest: Callable[[Store, Signer, int], None]
) -> list[dict[str, Any]]:
    """``ingest(store, signer, workers)`` in-process into a SQLite store, then with two
    parser processes into the test's backend: the two stores' portable dumps."""
    signer = Signer.generate(tmp_path / "keys")
    (tmp_path / "ws").mkdir()  # (the SQLite variant's folder)
    dumps = []
    for url, workers in ((f"sqlite:///{tmp_path / 'seq.db'}", 0), (db_url, 2)):
        store = Store.open(url)
        try:
            ingest(store, signer, workers)
            dumps.append(_portable_dump(store))
        finally:
            store.close()
    return dumps


def test_workers_store_the_same_on_either_backend(tmp_path: Path, db_url: str) -> None:
    jobs = _jobs() * 2

    def ingest(store: Store, signer: Signer, workers: int) -> None:
        with store.writer(Locker(signer, clock_us=7)) as w:
            ingest_jobs(w, jobs, now=NOW, settings=Settings(), workers=workers)

    dumps = both_backends(tmp_path, db_url, ingest)
    assert dumps[0] == dumps[1] and dumps[0]["evidence"]
