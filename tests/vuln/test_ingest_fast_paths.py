"""The ingest's fast paths give exactly what the plain ones give: findings copied from a
per-scan template, typed SARIF/Grype property bags, and the lean parser pool with several
files in flight."""

from __future__ import annotations

import gc
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

from changeproof.errors import InputFormatError
from changeproof.locker import Locker, Signer
from changeproof.settings import Settings
from changeproof.store import Store
from changeproof.vuln.ingest import ParseJob, ingest_jobs, parse_bytes
from changeproof.vuln.parsers.base import first_byte
from changeproof.vuln.pool import ParsePool
from tests.vuln.corpus import DD

NOW = datetime(2026, 5, 1, tzinfo=UTC)
WHEN = datetime(2026, 4, 1, 12, tzinfo=UTC)
LARGE = [
    ("osv-scanner", DD / "osv_scanner" / "many_findings.json"),
    ("sarif", DD / "sarif" / "codeQL-output.sarif"),
    ("grype", DD / "anchore_grype" / "many_vulns_with_epss_values.json"),
]
_enc = msgspec.json.Encoder(order="sorted")


@pytest.mark.parametrize(("scanner", "path"), LARGE, ids=[p.name for _, p in LARGE])
def test_a_digest_computed_or_given_gives_the_same_scan(scanner: str, path: Path) -> None:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    kw = {"file": path.name, "repo": "acme/app", "now": NOW, "settings": Settings()}
    ctx_a, a = parse_bytes(scanner, data, scanned_at=WHEN, **kw)  # type: ignore[arg-type]
    ctx_b, b = parse_bytes(scanner, data, scanned_at=WHEN, raw_sha256=digest, **kw)  # type: ignore[arg-type]
    assert (ctx_a.raw_sha256, ctx_a.scan_id) == (digest, ctx_b.scan_id)
    assert a.findings and _enc.encode(a.findings) == _enc.encode(b.findings)
    assert all(f.scan_id == ctx_a.scan_id for f in a.findings)
    assert [f.id for f in a.findings] == [
        f"{ctx_a.scan_id}/{i}" for i in range(1, len(a.findings) + 1)
    ]


def test_a_truncated_large_file_names_its_json_path() -> None:
    data = (DD / "osv_scanner" / "many_findings.json").read_bytes()[:200_000]
    with pytest.raises(
        InputFormatError, match=r"cut\.json: the JSON ends early .* at JSON path \$\.results\[\d+\]"
    ):
        parse_bytes(
            "osv-scanner", data, file="cut.json", repo="acme/app", now=NOW, settings=Settings()
        )


def test_first_byte_skips_whitespace_without_copying() -> None:
    assert first_byte(b"") == b""
    assert first_byte(b" \t\r\n\x0b\x0c") == b""
    assert first_byte(b"\n  [1]") == b"["
    assert first_byte(b"{}") == b"{"


def _sarif(results: list[dict[str, object]], rules: list[dict[str, object]]) -> bytes:
    run = {"tool": {"driver": {"name": "CodeQL", "rules": rules}}, "results": results}
    return json.dumps({"version": "2.1.0", "runs": [run]}).encode()


def test_sarif_severity_from_rule_and_result_property_bags() -> None:
    rules: list[dict[str, object]] = [
        {"id": "r-scored", "properties": {"security-severity": "8.1", "precision": "high"}},
        {"id": "r-tagged", "properties": {"tags": ["security", "cwe-79"]}},
        {"id": "r-quality", "properties": {"tags": ["maintainability"]}},
    ]

    def at(rule: int, line: int, **extra: object) -> dict[str, object]:
        loc = {
            "physicalLocation": {"artifactLocation": {"uri": "a.py"}, "region": {"startLine": line}}
        }
        return {"ruleIndex": rule, "ruleId": rules[rule]["id"], "locations": [loc], **extra}

    results = [
        at(0, 1),
        at(0, 2, properties={"unrelated": [1, 2]}),  # a property bag without a severity
        at(0, 3, properties={"severity": "low"}),  # a result-level severity label
        at(1, 4, level="error"),
        at(1, 5, properties={"severity": 3}),  # not a label: the rule's severity stands
        at(2, 6, suppressions=[{"kind": "inSource"}]),
    ]
    _, p = parse_bytes(
        "sarif", _sarif(results, rules), file="x.sarif", repo="acme/app", now=NOW,
        settings=Settings(),
    )  # fmt: skip
    got = [
        (f.package, [(s.source, s.score, s.label) for s in f.severities], f.tier, f.status)
        for f in p.findings
    ]
    assert got == [
        ("a.py#L1", [("security-severity", 8.1, None)], "high", "open"),
        ("a.py#L2", [("security-severity", 8.1, None)], "high", "open"),
        (
            "a.py#L3",
            [("security-severity", 8.1, None), ("result-severity", None, "low")],
            "high",
            "open",
        ),
        ("a.py#L4", [("sarif-level", None, "error")], "high", "open"),
        ("a.py#L5", [("sarif-level", None, "warning")], "medium", "open"),
        ("a.py#L6", [("sarif-level:warning:non-security", None, "info")], "none", "suppressed"),
    ]


def test_grype_image_target_is_read_from_the_typed_source() -> None:
    doc = {
        "matches": [],
        "descriptor": {"name": "grype", "version": "0.1"},
        "source": {
            "type": "image",
            "target": {"userInput": "ghcr.io/acme/app:1.2", "layers": [{"digest": "x"}]},
        },
    }
    _, p = parse_bytes(
        "grype", json.dumps(doc).encode(), file="g.json", repo="acme/app", now=NOW,
        settings=Settings(),
    )  # fmt: skip
    assert p.targets == ("ghcr.io/acme/app",) and p.notes == ["image scan"]
    for target in ("/src", 3, [1, {}], None, True):
        doc["source"] = {"type": "directory", "target": target}
        _, p = parse_bytes(
            "grype", json.dumps(doc).encode(), file="g.json", repo="acme/app", now=NOW,
            settings=Settings(),
        )  # fmt: skip
        assert p.targets == ("",)


def _stored(store: Store) -> list[tuple[object, ...]]:
    with store.connect() as c:
        ev = c.execute(sa.text("SELECT kind, key, digest, body FROM evidence ORDER BY kind, key"))
        lo = c.execute(sa.text("SELECT digest, kind, source FROM locker_entries ORDER BY seq"))
        return [tuple(r) for r in ev] + [tuple(r) for r in lo]


@pytest.mark.parametrize(("workers", "in_flight"), [(1, 3), (2, 1)])
def test_the_parser_pool_stores_what_in_process_parsing_stores(
    tmp_path: Path, workers: int, in_flight: int
) -> None:
    files = [*LARGE, ("trivy", DD / "trivy" / "kubernetes.json"), *LARGE]
    jobs = [
        ParseJob(s, p.name, p.read_bytes(), "acme/app", datetime(2026, 4, 1, i, tzinfo=UTC))
        for i, (s, p) in enumerate(files)
    ]
    stores = []
    for name, pool in (("seq", None), ("par", ParsePool(workers, in_flight=in_flight))):
        store = Store.open(f"sqlite:///{tmp_path / name}.db")
        stores.append(store)
        with store.writer(Locker(Signer.generate(tmp_path / f"keys-{name}"), clock_us=7)) as w:
            if pool is None:
                ingest_jobs(w, jobs, now=NOW, settings=Settings())
            else:
                with pool:
                    assert len(list(pool.ingest_jobs(w, jobs, now=NOW, settings=Settings()))) == 7
                assert pool.worker_cpu_s > 0
    try:
        assert _stored(stores[0]) == _stored(stores[1]) != []
    finally:
        for s in stores:
            s.close()


def test_ingest_restores_the_gc_thresholds_even_when_a_file_is_bad(tmp_path: Path) -> None:
    before = gc.get_threshold()
    good = DD / "trivy" / "all_statuses.json"
    jobs = [
        ParseJob("trivy", good.name, good.read_bytes(), "acme/app", WHEN),
        ParseJob("trivy", "cut.json", good.read_bytes()[:300], "acme/app", WHEN),
    ]
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        with (
            pytest.raises(InputFormatError, match=r"cut\.json: the JSON ends early"),
            store.writer(Locker(Signer.generate(tmp_path / "keys"))) as w,
        ):
            ingest_jobs(w, jobs, now=NOW, settings=Settings())
        assert gc.get_threshold() == before
        assert _stored(store) == []  # all or nothing
    finally:
        store.close()
