"""The ingest's read paths give what a plain read gives: files read in four system calls,
parser processes reading straight into the ring they share with the parent (the parsers then
see a memoryview, with the same findings and the same errors), raw files written while the
parent waits for a parser, and a payload written once per unit of work."""

from __future__ import annotations

import mmap
import os
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

from changeproof.errors import InputFormatError
from changeproof.locker import Locker, Signer
from changeproof.settings import Settings
from changeproof.store import Store
from changeproof.vuln.ingest import ParseJob, ingest_jobs, parse_bytes, read_file
from changeproof.vuln.pool import ParsePool, _Ring
from tests.vuln.corpus import DD, SAMPLES

NOW = datetime(2026, 5, 1, tzinfo=UTC)
WHEN = datetime(2026, 4, 1, 12, tzinfo=UTC)
FILES = [
    *SAMPLES.items(),
    ("sarif", DD / "sarif" / "codeQL-output.sarif"),
    ("trivy", DD / "trivy" / "kubernetes.json"),
    ("npm-audit", DD / "npm_audit_7_plus" / "one_vuln.json"),
]
_enc = msgspec.json.Encoder(order="sorted")


def _parse(scanner: str, data: bytes | memoryview, name: str = "f.json") -> bytes:
    _, parsed = parse_bytes(
        scanner, data, file=name, repo="acme/app", now=NOW, settings=Settings(), scanned_at=WHEN
    )
    return _enc.encode(
        [parsed.tool, parsed.format, parsed.targets, parsed.coverage, parsed.findings]
    )


def _error(scanner: str, data: bytes | memoryview) -> str:
    with pytest.raises(InputFormatError) as exc:
        _parse(scanner, data, "bad.json")
    return f"{exc.value.what} | {exc.value.expected} | {exc.value.hint}"


@pytest.mark.parametrize(("scanner", "path"), FILES, ids=[f"{s}-{p.name}" for s, p in FILES])
def test_a_memoryview_parses_as_the_bytes_do(scanner: str, path: Path) -> None:
    data = path.read_bytes()
    assert _parse(scanner, memoryview(data)) == _parse(scanner, data)
    # the bad-input paths name the same file, JSON path and hint
    cut = data[: len(data) // 2]
    assert _error(scanner, memoryview(cut)) == _error(scanner, cut)
    other = "trivy" if scanner != "trivy" else "grype"
    assert _error(other, memoryview(data)) == _error(other, data)
    for blank in (b"", b"  \n\t "):
        assert _error(scanner, memoryview(blank)) == _error(scanner, blank)


def test_read_file_reads_whole_files_and_explains_what_it_cannot(tmp_path: Path) -> None:
    for _, path in FILES:
        assert read_file(path) == path.read_bytes()
        assert read_file(str(path)) == path.read_bytes()
    (tmp_path / "empty.json").write_bytes(b"")
    assert read_file(tmp_path / "empty.json") == b""
    with pytest.raises(InputFormatError, match="no such file"):
        read_file(tmp_path / "missing.json")
    with pytest.raises(InputFormatError, match="is a directory"):
        read_file(tmp_path)


def _fed_fifo(tmp_path: Path, payload: bytes) -> tuple[Path, threading.Thread]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("wb") as fh:
            fh.write(payload)

    t = threading.Thread(target=feed)
    t.start()
    return fifo, t


@pytest.mark.skipif(sys.platform != "linux", reason="FIFOs and the pool are Linux paths here")
def test_read_file_and_the_ring_read_a_pipe_to_its_end(tmp_path: Path) -> None:
    # (its size says 0: the first read finds more, and the rest is read to the end)
    payload = b"[" + b"1," * 300_000 + b"1]"
    fifo, t = _fed_fifo(tmp_path, payload)
    try:
        assert read_file(fifo) == payload
    finally:
        t.join()
    fifo.unlink()
    # the ring reads a pipe the usual way, from the one open end (nothing read is lost)
    ring = _Ring(mmap.mmap(-1, 1 << 22))
    fifo, t = _fed_fifo(tmp_path, payload)
    try:
        assert ring.read_file(0, str(fifo)) == (payload, -1)
    finally:
        t.join()
    assert not ring.regions


def test_the_ring_reads_files_into_itself_when_they_fit(tmp_path: Path) -> None:
    small, large = FILES[0][1], DD / "sarif" / "codeQL-output.sarif"
    ring = _Ring(mmap.mmap(-1, large.stat().st_size - 1))
    data, at = ring.read_file(0, str(small))
    assert isinstance(data, memoryview) and at == 0 and bytes(data) == small.read_bytes()
    assert ring.regions[-1] == (0, 0, len(data)) and ring.head == len(data)
    # larger than the ring: read the usual way, sent by pipe; the ring is left as it was
    data2, at2 = ring.read_file(1, str(large))
    assert at2 == -1 and data2 == large.read_bytes()
    assert list(ring.regions) == [(0, 0, len(data))] and ring.head == len(data)
    # an empty file takes no region; a missing one fails as a plain read does
    (tmp_path / "empty.json").write_bytes(b"")
    assert ring.read_file(2, str(tmp_path / "empty.json")) == (b"", -1)
    with pytest.raises(InputFormatError, match="no such file"):
        ring.read_file(3, str(tmp_path / "missing.json"))
    with pytest.raises(InputFormatError, match="is a directory"):
        ring.read_file(3, str(tmp_path))
    assert list(ring.regions) == [(0, 0, len(data))]
    # once released, the next file goes to the start again
    ring.release(1)
    assert ring.read_file(4, str(small))[1] == 0


def test_a_payload_is_written_once_per_unit_of_work(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 's.db'}")
    signer = Signer.generate(tmp_path / "keys")
    try:
        with store.writer(Locker(signer, clock_us=5)) as w:
            d1 = w.put_raw(b"one", kind="k", source="s")
            w.write_raw()
            assert w.locker is not None and not w.locker._pending
            assert w.put_raw(b"one", kind="k2", source="s2") == d1  # written already
            assert not w.locker._pending
            w.put_raw(b"two", kind="k", source="s")
        with store.connect() as c:
            objects = c.execute(sa.text("SELECT digest FROM locker_objects")).all()
            entries = c.execute(
                sa.text("SELECT seq, digest, kind, source FROM locker_entries ORDER BY seq")
            ).all()
        assert len(objects) == 2
        # one chain entry per payload, named as first put (as when nothing is written early)
        assert [tuple(e)[2:] for e in entries] == [("k", "s"), ("k", "s")]
        assert entries[0][1] == d1
    finally:
        store.close()


@pytest.mark.skipif(sys.platform != "linux", reason="the pool forks (Linux)")
@pytest.mark.parametrize("write_ahead", [1, 3, 10_000])
def test_raw_files_written_while_waiting_store_the_same(tmp_path: Path, write_ahead: int) -> None:
    jobs = [
        ParseJob(s, str(p), None, f"acme/r{i % 2}", WHEN if i % 3 else None)
        for i, (s, p) in enumerate(FILES * 3)
    ]
    dumps = []
    for name in ("seq", "pool"):
        store = Store.open(f"sqlite:///{tmp_path / name}.db")
        keys = tmp_path / "keys"
        signer = Signer.load(keys) if keys.exists() else Signer.generate(keys)
        try:
            with store.writer(Locker(signer, clock_us=9)) as w:
                if name == "seq":
                    ingest_jobs(w, jobs, now=NOW, settings=Settings())
                else:
                    with ParsePool(2, in_flight=2, write_ahead_files=write_ahead) as pool:
                        list(pool.ingest_jobs(w, jobs, now=NOW, settings=Settings()))
            with store.connect() as c:
                dumps.append(
                    [
                        c.execute(sa.text(q)).all()
                        for q in (
                            "SELECT id, kind, key, digest, body FROM evidence ORDER BY id",
                            "SELECT digest, size, body FROM locker_objects ORDER BY digest",
                            "SELECT * FROM locker_entries ORDER BY seq",
                            "SELECT seq, head_hash FROM locker_checkpoints ORDER BY seq",
                        )
                    ]
                )
        finally:
            store.close()
    assert dumps[0] == dumps[1]
    assert all(dumps[0])


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"category": "code", "target": "img:1", "title": "t", "manifest": "a/b.py", "url": "u"},
        {"aliases": ["CVE-1", "GHSA-1", "CVE-1"], "version": "1.0", "fixed_versions": ("2.0",)},
        {"fix_state": "fixed", "status": "dismissed", "status_reason": "tolerable"},
        {"status_at": WHEN, "alert_created_at": WHEN, "known_exploited": True},
        {"fixed_versions": [], "aliases": ["X-1"], "title": "", "target": ""},  # defaults given
    ],
)
def test_a_finding_passes_only_what_differs_and_equals_the_constructors(
    extra: dict[str, object],
) -> None:
    from changeproof.evidence import FindingObservation, SeverityInput
    from changeproof.vuln.parsers.base import ParseContext
    from changeproof.vuln.severity import choose_cached

    ctx = ParseContext(file="f", repo="acme/app", scan_id="S-1", raw_sha256="0" * 64, now=NOW)
    when, _ = ctx.settle_time(WHEN)
    sev = (SeverityInput(source="nvd", vector="CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),)
    got = ctx.finding("trivy", advisory_id="X-1", severities=sev, package="P", **extra)  # type: ignore[arg-type]
    chosen = choose_cached(sev, False, "medium")
    aliases = tuple(sorted({a for a in extra.pop("aliases", ()) if a != "X-1"}))  # type: ignore[attr-defined]
    want = FindingObservation(
        id="S-1/1",
        repo="acme/app",
        scan_id="S-1",
        scanner="trivy",
        scanned_at=when,
        advisory_id="X-1",
        aliases=aliases,
        package="P" if extra.get("category", "dependency") != "dependency" else "p",
        severities=sev,
        score=chosen.score,
        score_version=chosen.version,
        severity_source=chosen.source,
        tier=chosen.tier,
        needs_triage=chosen.needs_triage,
        **extra,  # type: ignore[arg-type]
    )
    assert repr(got) == repr(want)


@pytest.mark.parametrize(
    "doc",
    [
        b'{"SchemaVersion": 2, "ArtifactName": "a", "Results": []}',
        b'{"ClusterName": "c", "Vulnerabilities": []}',
        b'{"ClusterName": "c", "SchemaVersion": 2}',  # a report that names its cluster
        b'{"ClusterName": "c", "Results": 7}',  # a cluster scan with an odd extra key
        b'{"SchemaVersion": null}',
        b'{"ClusterName": 5}',
        b"[]",
        b'{"SchemaVersion": 2, "Results": [',
    ],
)
def test_trivy_decodes_once_what_probing_then_decoding_gave(doc: bytes) -> None:
    from changeproof.vuln.parsers import trivy
    from changeproof.vuln.parsers.base import ParseContext, decode, probe_keys
    from changeproof.vuln.parsers.sniff import sniff

    def probed() -> object:
        keys = probe_keys(doc, file="t.json", scanner="trivy", sniff=sniff)
        typ = trivy._K8s if "ClusterName" in keys and "SchemaVersion" not in keys else trivy._Report
        return decode(doc, typ, file="t.json", scanner="trivy", sniff=sniff)

    ctx = ParseContext(file="t.json", repo="acme/app", scan_id="S-1", raw_sha256="0" * 64, now=NOW)
    try:
        want: object = probed()
    except InputFormatError as exc:
        with pytest.raises(InputFormatError) as got:
            trivy._decoded(doc, ctx)
        assert (got.value.what, got.value.hint) == (exc.what, exc.hint)
    else:
        assert trivy._decoded(doc, ctx) == want
