"""`changeproof ingest batch MANIFEST`: a CSV manifest of scanner files across scanners,
repositories and scan times, ingested in one transaction — storing exactly what the
per-scanner commands store, checking the whole manifest first, and all or nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from changeproof.cli.ingest_batch import batch_workers
from changeproof.cli.timeparse import parse_instant
from changeproof.errors import InputFormatError
from changeproof.locker import Locker
from changeproof.settings import Settings
from changeproof.store import Store
from changeproof.vuln.ingest import FileResult, ingest_files, ingest_jobs
from changeproof.vuln.manifest import Manifest, ManifestError, ManifestStats
from changeproof.vuln.pool import AUTO_MIN_BYTES
from changeproof.workspace import Workspace
from tests.iac.helpers import Cli
from tests.vuln.corpus import DD, SAMPLES
from tests.vuln.test_pool_paths import NOW, _dump, _store

# a mixed manifest: every scanner, three repositories, scan times given (Z, an offset, a bare
# date) or not (the file's own, else now), targets and partial scans
LINES: list[tuple[str, Path, str, str, str, str]] = [
    ("trivy", DD / "trivy" / "all_statuses.json", "acme/api", "2026-03-01T02:00Z", "", ""),
    ("pip-audit", SAMPLES["pip-audit"], "acme/api", "2026-03-01T02:05+02:00", "", "yes"),
    ("grype", SAMPLES["grype"], "acme/web", "2026-03-02", "", "false"),
    ("osv-scanner", SAMPLES["osv-scanner"], "acme/web", "", "", ""),
    ("sarif", SAMPLES["sarif"], "acme/api", "2026-03-03T10:00Z", "", "0"),
    ("sarif", DD / "sarif" / "codeQL-output.sarif", "acme/ops", "2026-03-03T11:00Z", "", ""),
    ("snyk", SAMPLES["snyk"], "acme/ops", "2026-03-04T00:00Z", "", "TRUE"),
    ("semgrep", SAMPLES["semgrep"], "acme/api", "2026-03-05T00:00Z", "src/", ""),
    ("npm-audit", SAMPLES["npm-audit"], "acme/web", "2026-03-06T00:00Z", "", ""),
    ("dependabot", SAMPLES["dependabot"], "acme/web", "", "", ""),
    ("trivy", DD / "trivy" / "all_statuses.json", "acme/api", "2026-04-01T02:00Z", "img:2", ""),
    ("grype", SAMPLES["grype"], "acme/web", "2026-04-02T00:00Z", "", ""),  # a second scan
]
HEADER = "scanner,file,repo,scanned_at,target,partial"


def write_manifest(path: Path, lines: list[tuple[Any, ...]] = LINES, header: str = HEADER) -> Path:
    rows = [header] + [",".join(str(v) for v in line) for line in lines]
    path.write_text("\n".join(rows) + "\n")
    return path


def _same_rows(dump: dict[str, list[tuple[object, ...]]]) -> dict[str, list[tuple[object, ...]]]:
    """The dump with the evidence rows' surrogate ids left out (one transaction buffers and
    orders its rows by itself: the ids follow that order, the rows are the same): every
    column else, the raw payloads and the locker chain, byte for byte."""
    return {**dump, "evidence": sorted(r[1:] for r in dump["evidence"])}


def _when(text: str) -> datetime | None:
    return parse_instant(text) if text else None


# --- the manifest's jobs store what the per-scanner path stores, byte for byte ---


@pytest.mark.parametrize("workers", [0, 2])
def test_a_manifest_stores_exactly_what_the_per_scanner_ingests_store(
    tmp_path: Path, workers: int
) -> None:
    if workers and sys.platform != "linux":
        pytest.skip("the pool forks (Linux)")
    manifest = write_manifest(tmp_path / "m.csv")
    # the reference: `changeproof ingest SCANNER FILE --repo … [--scanned-at …]` line by line,
    # each in its own transaction
    store, signer = _store(tmp_path, "one-by-one")
    try:
        want_results = []
        for scanner, file, repo, when, target, partial in LINES:
            with store.writer(Locker(signer, clock_us=7)) as w:
                want_results += ingest_files(
                    w,
                    scanner,
                    [file],
                    repo=repo,
                    now=NOW,
                    settings=Settings(),
                    scanned_at=_when(when),
                    partial=partial.lower() in ("yes", "true", "1"),
                    target=target or None,
                    workers=0,
                )
        want = _dump(store)
    finally:
        store.close()
    store, signer = _store(tmp_path, "batch")
    got_results: list[FileResult] = []
    try:
        with Manifest.open(str(manifest)) as m:
            assert m.validate() == ManifestStats(
                len(LINES), sum(line[1].stat().st_size for line in LINES)
            )
            with store.writer(Locker(signer, clock_us=7)) as w:
                kept = ingest_jobs(
                    w,
                    (job for _line, job in m.jobs()),
                    now=NOW,
                    settings=Settings(),
                    on_file=got_results.append,
                    workers=workers,
                    keep=False,
                )
        assert kept == []  # keep=False: results go to on_file only
        assert _same_rows(_dump(store)) == _same_rows(want)
    finally:
        store.close()
    assert want["evidence"] and want["entries"]
    assert [(r.scan_id, r.findings, r.by_tier, r.partial) for r in got_results] == [
        (r.scan_id, r.findings, r.by_tier, r.partial) for r in want_results
    ]


def test_batch_workers_follow_the_per_scanner_rule() -> None:
    big = AUTO_MIN_BYTES
    assert batch_workers(ManifestStats(1, big), cpus=2) == 0  # one file
    assert batch_workers(ManifestStats(40, big - 1), cpus=2) == 0  # little input
    assert batch_workers(ManifestStats(40, big), cpus=1) == 0  # one CPU
    if sys.platform == "linux":
        assert batch_workers(ManifestStats(40, big), cpus=2) == 2
        assert batch_workers(ManifestStats(40, big), cpus=16) == 3


# --- the command, in-process, on SQLite and PostgreSQL ---


@pytest.fixture
def cli(workspace: Workspace, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(workspace, capsys)


@pytest.fixture
def other_db(db_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A second, empty store on this test's backend."""
    if db_url.startswith("sqlite"):
        (tmp_path / "ws2").mkdir()
        yield f"sqlite:///{tmp_path / 'ws2' / 'store.db'}"
        return
    server = request.getfixturevalue("pg_server")
    name, url = server.create()
    yield url
    server.drop(name)


def _comparable(store: Store) -> dict[str, list[Any]]:
    """The store without the command's own clock (its `now`: collected_at, the locker's
    recorded_us and the digests and hashes over them): two runs then compare exactly."""
    d = _dump(store)

    def body(raw: Any) -> Any:
        doc = json.loads(raw)
        doc.get("provenance", {}).pop("collected_at", None)
        return json.dumps(doc, sort_keys=True)

    return {
        # kind, key, repo, subject, occurred_us, raw_sha256 and the body
        "evidence": sorted((r[1], r[2], r[3], r[4], r[5], r[8], body(r[9])) for r in d["evidence"]),
        "objects": d["objects"],  # the raw files, byte for byte
        "entries": [(r[0], r[1], r[2], r[3]) for r in d["entries"]],  # seq, digest, kind, source
    }


def _contents(url: str) -> dict[str, list[Any]]:
    store = Store.open(url)
    try:
        return _dump(store)
    finally:
        store.close()


# every scan time given: nothing but collected_at depends on the command's now
TIMED = [line for line in LINES if line[3]]


def _per_scanner_args(line: tuple[str, Path, str, str, str, str]) -> list[str]:
    scanner, file, repo, when, target, partial = line
    args = ["ingest", scanner, str(file), "--repo", repo]
    args += ["--scanned-at", when] if when else []
    args += ["--target", target] if target else []
    return args + (["--partial"] if partial.lower() in ("yes", "true", "1") else [])


def test_the_command_stores_what_the_per_scanner_commands_store(
    cli: Cli, workspace: Workspace, other_db: str, tmp_path: Path
) -> None:
    for line in TIMED:
        cli.ok(*_per_scanner_args(line))
    store = Store.open(workspace.db_url)
    try:
        want = _comparable(store)
    finally:
        store.close()
    assert want["evidence"] and want["objects"] and want["entries"]
    manifest = write_manifest(tmp_path / "m.csv", TIMED)
    out = cli.ok("--db", other_db, "ingest", "batch", str(manifest), "--format", "json")
    store = Store.open(other_db)
    try:
        assert _comparable(store) == want
    finally:
        store.close()
    doc = json.loads(out)
    assert doc["files"] == len(TIMED)
    assert [r["line"] for r in doc["results"]] == list(range(2, len(TIMED) + 2))
    assert doc["findings"] == sum(r["findings"] for r in doc["results"]) > 0
    assert doc["by_scanner"]["sarif"]["files"] == 2
    assert doc["repositories"] == 3
    assert doc["partial_files"] == 2
    assert sum(doc["by_tier"].values()) == doc["findings"]


def test_text_summary_and_list(cli: Cli, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.csv")
    out = cli.ok("ingest", "batch", str(manifest))
    lines = out.splitlines()
    assert lines[0].startswith(f"{manifest}: {len(LINES)} file(s), ")
    assert "for 3 repositories" in lines[0]
    assert any(ln.split()[0] == "sarif" and "2 file(s)" in ln for ln in lines[1:])
    assert len(lines) < 20  # a summary, not a line per file
    listed = cli.ok("ingest", "batch", str(manifest), "--list").splitlines()
    per_file = [ln for ln in listed if ln.startswith("line ")]
    assert len(per_file) == len(LINES)
    assert per_file[1].startswith(f"line 3: {SAMPLES['pip-audit']} (acme/api): ")
    assert "(partial: absence proves nothing)" in per_file[1]


def test_relative_files_are_relative_to_the_manifest(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans = tmp_path / "artifacts" / "2026-03"
    scans.mkdir(parents=True)
    (scans / "t.json").write_bytes(SAMPLES["trivy"].read_bytes())
    (scans / "g.json").write_bytes(SAMPLES["grype"].read_bytes())
    manifest = tmp_path / "artifacts" / "backfill.csv"
    manifest.write_text(
        "repo,file,scanner,scanned_at\n"  # (any column order)
        "acme/a,2026-03/t.json,trivy,2026-03-01\n"
        "acme/a,2026-03/g.json,grype,2026-03-02\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    doc = cli.json("ingest", "batch", str(manifest))
    assert [Path(r["file"]).resolve() for r in doc["results"]] == [
        (scans / "t.json").resolve(),
        (scans / "g.json").resolve(),
    ]
    assert [r["findings"] for r in doc["results"]] == [5, 15]


def test_standard_input(tmp_path: Path) -> None:
    """`-` reads the manifest from standard input; relative files from the current folder
    (a real subprocess: the command reads its own standard input)."""
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "p.json").write_bytes(SAMPLES["pip-audit"].read_bytes())
    text = f"scanner,file,repo\npip-audit,scans/p.json,acme/a\ngrype,{SAMPLES['grype']},acme/b\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEPROOF_")}
    r = subprocess.run([sys.executable, "-m", "changeproof", "ingest", "batch", "-", "--format",
                        "json"], input=text, cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=120, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["manifest"] == "standard input"
    assert [(x["scanner"], x["findings"], x["repo"]) for x in doc["results"]] == [
        ("pip-audit", 7, "acme/a"),
        ("grype", 15, "acme/b"),
    ]
    # the same input again, bad: nothing more ingested
    bad = text + "grype,scans/missing.json,acme/b\n"
    r = subprocess.run([sys.executable, "-m", "changeproof", "ingest", "batch", "-"], input=bad,
                       cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120,
                       check=False)  # fmt: skip
    assert r.returncode == 2
    assert "standard input line 4, column file: scans/missing.json: no such file" in r.stderr


# --- a bad manifest: one clear message naming the line (and column), nothing ingested ---

GOOD = f"trivy,{SAMPLES['trivy']},acme/a,2026-03-01,,"
BAD_MANIFESTS = [
    ("unknown-scanner", [GOOD, f"trivvy,{SAMPLES['trivy']},acme/a,,,"], HEADER,
     "line 3, column scanner: unknown scanner 'trivvy'"),
    ("no-repo-column", [f"trivy,{SAMPLES['trivy']}"], "scanner,file",
     "line 1: the header has no repo column"),
    ("no-repo-value", [GOOD, f"trivy,{SAMPLES['trivy']},,,,"], HEADER,
     "line 3, column repo: no value"),
    ("bad-time", [GOOD, GOOD, f"trivy,{SAMPLES['trivy']},acme/a,2026-13-01,,"], HEADER,
     "line 4, column scanned_at: malformed scan time '2026-13-01'"),
    ("bad-partial", [f"trivy,{SAMPLES['trivy']},acme/a,,,maybe"], HEADER,
     "line 2, column partial: 'maybe' is not a yes or no"),
    ("unknown-column", [f"trivy,{SAMPLES['trivy']},acme/a,x"], "scanner,file,repo,branch",
     "line 1: unknown column 'branch' in the header"),
    ("twice", [f"trivy,{SAMPLES['trivy']},acme/a,x"], "scanner,file,repo,repo",
     "line 1: column 'repo' named twice"),
    ("values", [GOOD, "trivy,a.json"], HEADER,
     "line 3: 2 value(s), but the header names 6 column(s)"),
    ("missing-file", [GOOD, "trivy,nowhere.json,acme/a,,,"], HEADER,
     "line 3, column file: {dir}/nowhere.json: no such file"),
    ("directory", [GOOD, "trivy,.,acme/a,,,"], HEADER,
     "line 3, column file: {dir}/.: is a directory"),
    ("empty", [], "", ": empty (no header row)"),
    ("quote", [GOOD, 'trivy,"a.json'], HEADER, "line 3: not valid CSV"),
]  # fmt: skip


@pytest.mark.parametrize(("lines", "header", "message"),
                         [pytest.param(*c[1:], id=c[0]) for c in BAD_MANIFESTS])  # fmt: skip
def test_a_bad_manifest_ingests_nothing(
    cli: Cli, workspace: Workspace, tmp_path: Path, lines: list[str], header: str, message: str
) -> None:
    cli.ok("ingest", "grype", str(SAMPLES["grype"]), "--repo", "acme/before")
    before = _contents(workspace.db_url)
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(([header] if header else []) + lines) + ("\n" if header else ""))
    rc, out, err = cli("ingest", "batch", str(manifest))
    assert rc == 2, (out, err)
    assert (
        f"{manifest}{'' if message.startswith(':') else ' '}{message.format(dir=tmp_path)}" in err
    )
    assert "nothing was ingested" in err
    assert _contents(workspace.db_url) == before


def test_a_bad_manifest_is_found_before_anything_is_parsed(tmp_path: Path) -> None:
    """The check reads the whole manifest: a fault on its last line stops the batch before
    its first file (a truncated one here) is parsed."""
    cut = tmp_path / "cut.json"
    cut.write_bytes(SAMPLES["grype"].read_bytes()[:500])
    manifest = write_manifest(
        tmp_path / "m.csv",
        [("grype", cut, "acme/a", "", "", ""), *LINES, ("nope", cut, "r", "", "", "")],
    )
    with (
        Manifest.open(str(manifest)) as m,
        pytest.raises(ManifestError, match=r"line 15, column scanner"),
    ):
        m.validate()


# --- a bad scanner file in the middle: its message, its line, and nothing from the batch ---


def test_a_truncated_file_in_the_middle_ingests_nothing(
    cli: Cli, workspace: Workspace, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.json"
    cut.write_bytes(SAMPLES["grype"].read_bytes()[:5000])
    lines = [*LINES[:5], ("grype", cut, "acme/web", "2026-03-09", "", ""), *LINES[5:]]
    manifest = write_manifest(tmp_path / "m.csv", lines)
    cli.ok("ingest", "trivy", str(SAMPLES["trivy"]), "--repo", "acme/before")
    before = _contents(workspace.db_url)
    rc, _out, err = cli("ingest", "batch", str(manifest))
    assert rc == 2
    # the per-scanner command's message for this file, prefixed with the manifest line
    _rc, _o, alone = cli("ingest", "grype", str(cut), "--repo", "acme/web")
    what = alone.removeprefix("error: ").split(". Expected")[0].split(". Try")[0]
    assert f"error: {manifest} line 7: {what}" in err
    assert "nothing from the manifest was ingested" in err
    assert _contents(workspace.db_url) == before


@pytest.mark.skipif(sys.platform != "linux", reason="the pool forks (Linux)")
def test_a_large_batch_uses_parser_processes_and_a_bad_file_still_ingests_nothing(
    cli: Cli, workspace: Workspace, tmp_path: Path
) -> None:
    """Enough bytes for parser processes (as `changeproof ingest SCANNER` would use): the
    failing file's line is still named, and nothing is kept."""
    src = DD / "sarif" / "codeQL-output.sarif"
    n = AUTO_MIN_BYTES // src.stat().st_size + 4
    cut = tmp_path / "cut.sarif"
    cut.write_bytes(src.read_bytes()[:100_000])
    lines = [("sarif", src, f"acme/r{i % 3}", f"2026-01-01T00:{i:02d}Z", "", "") for i in range(n)]
    bad = [*lines[: n // 2], ("sarif", cut, "acme/r9", "", "", ""), *lines[n // 2 :]]
    before = _contents(workspace.db_url)
    rc, _out, err = cli("ingest", "batch", str(write_manifest(tmp_path / "bad.csv", bad)))
    assert rc == 2
    assert f"bad.csv line {n // 2 + 2}: {cut}: the JSON ends early" in err
    assert _contents(workspace.db_url) == before
    doc = cli.json("ingest", "batch", str(write_manifest(tmp_path / "good.csv", lines)))
    assert doc["files"] == n and doc["findings"] == 72 * n
    store = Store.open(workspace.db_url)
    try:
        assert store.count("scan") == n
    finally:
        store.close()


def test_an_unreadable_manifest(cli: Cli, tmp_path: Path) -> None:
    rc, _out, err = cli("ingest", "batch", str(tmp_path / "none.csv"))
    assert rc == 2 and f"manifest {tmp_path / 'none.csv'}: no such file" in err
    (tmp_path / "latin1.csv").write_bytes(HEADER.encode() + b"\ntrivy,caf\xe9.json,a,,,\n")
    rc, _out, err = cli("ingest", "batch", str(tmp_path / "latin1.csv"))
    assert rc == 2 and "not UTF-8 text" in err


def test_a_header_only_manifest_ingests_nothing_and_says_so(cli: Cli, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("\ufeff" + HEADER + "\n\n,,,,,\n")  # (a byte-order mark, blank rows)
    assert "no files listed; nothing ingested" in cli.ok("ingest", "batch", str(manifest))
    doc = cli.json("ingest", "batch", str(manifest))
    assert doc["files"] == 0 and doc["results"] == []


def test_help_has_examples(cli: Cli) -> None:
    out = cli.ok("ingest", "batch", "--help")
    assert "Examples:" in out and "changeproof ingest batch - < backfill.csv" in out
    assert "batch" in cli.ok("ingest", "--help")


def test_errors_from_the_jobs_keep_their_own_line(tmp_path: Path) -> None:
    """A file that disappears between the check and its turn fails in its turn, naming its
    line (and nothing is kept: the caller's transaction rolls back)."""
    gone = tmp_path / "gone.json"
    gone.write_bytes(SAMPLES["trivy"].read_bytes())
    manifest = write_manifest(
        tmp_path / "m.csv", [*LINES[:2], ("trivy", gone, "acme/a", "", "", "")]
    )
    with Manifest.open(str(manifest)) as m:
        m.validate()
        gone.unlink()
        jobs = m.jobs()
        assert [line for line, _job in jobs] == [2, 3, 4]  # (the check is the validate pass)
    store, signer = _store(tmp_path, "s")
    try:
        with (
            Manifest.open(str(manifest)) as m,
            pytest.raises(InputFormatError, match=r"gone\.json: no such file"),
            store.writer(Locker(signer)) as w,
        ):
            ingest_jobs(w, (j for _l, j in m.jobs()), now=NOW, settings=Settings())
        assert store.count("scan") == 0
    finally:
        store.close()
