"""Parsing in worker processes (changeproof.vuln.pool) stores exactly what parsing in-process
stores, and keeps all-or-nothing: a bad file in the middle leaves nothing written."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from changeproof.errors import InputFormatError
from changeproof.evidence import ScanFindings
from changeproof.locker import Locker, Signer
from changeproof.settings import Settings
from changeproof.store import Store
from changeproof.vuln.ingest import ingest_files
from tests.vuln.corpus import DD

NOW = datetime(2026, 5, 1, tzinfo=UTC)
FILES = [
    DD / "trivy" / "all_statuses.json",
    DD / "trivy" / "kubernetes.json",
    DD / "trivy" / "scheme_2_many_vulns.json",
    DD / "trivy" / "all_statuses.json",  # the same bytes again: a second scan of them
]


def _ingest(tmp: Path, files: list[Path], workers: int) -> Store:
    store = Store.open(f"sqlite:///{tmp / 'store.db'}")
    signer = Signer.generate(tmp / "keys")
    with store.writer(Locker(signer, clock_us=1)) as w:
        ingest_files(
            w, "trivy", files, repo="acme/app", now=NOW, settings=Settings(), workers=workers
        )
    return store


def _rows(store: Store) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    with store.connect() as c:
        ev = c.execute(sa.text("SELECT kind, key, digest FROM evidence ORDER BY kind, key")).all()
        lo = c.execute(sa.text("SELECT digest, size FROM locker_objects ORDER BY digest")).all()
    return [tuple(r) for r in ev], [tuple(r) for r in lo]


def test_pool_stores_what_in_process_parsing_stores(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    seq = _ingest(tmp_path / "a", FILES, workers=0)
    par = _ingest(tmp_path / "b", FILES, workers=2)
    try:
        assert _rows(seq) == _rows(par)
        assert _rows(par)[0], "something was stored"
        found = [f for _, b in par.iter_records(ScanFindings) for f in b.findings]
        assert found and all(f.repo == "acme/app" for f in found)
    finally:
        seq.close()
        par.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_file_in_the_middle_ingests_nothing(tmp_path: Path, workers: int) -> None:
    bad = tmp_path / "cut.json"
    bad.write_bytes(FILES[1].read_bytes()[:5000])
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    signer = Signer.generate(tmp_path / "keys")
    try:
        with (
            pytest.raises(InputFormatError, match=r"cut\.json: the JSON ends early") as err,
            store.writer(Locker(signer)) as w,
        ):
            ingest_files(
                w,
                "trivy",
                [FILES[0], FILES[2], bad, FILES[1], tmp_path / "missing.json"],
                repo="acme/app",
                now=NOW,
                settings=Settings(),
                workers=workers,
            )
        assert err.value.hint and "nothing from this file was ingested" in err.value.hint
        assert _rows(store) == ([], [])
    finally:
        store.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unreadable_file_fails_in_its_turn(tmp_path: Path, workers: int) -> None:
    bad = tmp_path / "cut.json"
    bad.write_bytes(b"{")
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    signer = Signer.generate(tmp_path / "keys")
    try:
        with (
            pytest.raises(InputFormatError, match=r"missing\.json: no such file"),
            store.writer(Locker(signer)) as w,
        ):
            ingest_files(
                w,
                "trivy",
                [FILES[0], tmp_path / "missing.json", bad],
                repo="acme/app",
                now=NOW,
                settings=Settings(),
                workers=workers,
            )
        assert _rows(store) == ([], [])
    finally:
        store.close()
