"""Every scanner format from real outputs in the shared corpus, and bad input of each kind."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from changeproof.errors import InputFormatError
from changeproof.evidence import FindingObservation
from changeproof.settings import Settings
from changeproof.vuln.ingest import parse_bytes
from changeproof.vuln.parsers import SCANNERS, ParsedScan
from tests.vuln.corpus import DD, GRYPE, HOOKS, OPENAPI, OSV, SAMPLES

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def parse(scanner: str, path: Path, **kw: object) -> ParsedScan:
    _, p = parse_bytes(
        scanner, path.read_bytes(), file=str(path), repo="acme/app", now=NOW, settings=Settings(),
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    return p


def by_id(p: ParsedScan) -> dict[str, FindingObservation]:
    return {f.advisory_id: f for f in p.findings}


def test_corpus_is_present() -> None:
    assert DD.is_dir(), f"shared corpus missing at {DD}"


# --- pip-audit ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["many_vulns.json", "many_vulns_new.json"])
def test_pip_audit_current_and_legacy(name: str) -> None:
    p = parse("pip-audit", DD / "pip_audit" / name)
    assert len(p.findings) == 7
    f = by_id(p)["PYSEC-2021-76"]
    assert (f.package, f.ecosystem, f.version) == ("aiohttp", "pypi", "3.6.2")
    assert f.fixed_versions == ("3.7.4",) and f.fix_state == "fixed"
    # no severity at all: provisional tier, flagged
    assert {(x.tier, x.severity_source, x.needs_triage) for x in p.findings} == {
        ("medium", "unscored", True)
    }
    assert p.skipped == ("azure-devops",)  # its absence proves nothing
    assert p.scanned_at == NOW and p.scanned_at_source == "ingest"


def test_pip_audit_empty() -> None:
    assert parse("pip-audit", DD / "pip_audit" / "empty_new.json").findings == []
    assert parse("pip-audit", DD / "pip_audit" / "zero_vulns_new.json").findings == []


def test_unscored_tier_comes_from_settings() -> None:
    path = DD / "pip_audit" / "many_vulns_new.json"
    import msgspec

    strict = msgspec.convert({"patching": {"unscored_tier": "high"}}, Settings)
    _, p = parse_bytes("pip-audit", path.read_bytes(), file="x", repo="r", now=NOW, settings=strict)
    assert {f.tier for f in p.findings} == {"high"}


# --- npm audit ----------------------------------------------------------------------------


def test_npm7_keys_per_advisory_not_per_row() -> None:
    p = parse("npm-audit", DD / "npm_audit_7_plus" / "one_vuln.json")
    assert p.format == "npm-audit/2"
    ids = by_id(p)
    assert set(ids) == {"GHSA-gxpj-cx7g-858c", "GHSA-9vvw-cc9w-f27h"}  # the "ms" string is skipped
    assert ids["GHSA-9vvw-cc9w-f27h"].tier == "high" and ids["GHSA-9vvw-cc9w-f27h"].score == 7.5
    assert ids["GHSA-gxpj-cx7g-858c"].severity_source == "cvss:ghsa"
    issue = parse("npm-audit", DD / "npm_audit_7_plus" / "issue_10801.json")
    assert [(f.advisory_id, f.score) for f in issue.findings] == [("GHSA-pfrx-2q88-qq97", 5.3)]
    assert parse("npm-audit", DD / "npm_audit_7_plus" / "no_vuln.json").findings == []


def test_npm6_advisories() -> None:
    p = parse("npm-audit", DD / "npm_audit" / "one_vuln.json")
    assert p.format == "npm-audit/1"
    (f,) = p.findings
    assert (f.package, f.version, f.tier) == ("growl", "1.9.2", "critical")
    assert f.aliases == ("CVE-2017-16042",) and f.severity_source == "label:npm"
    assert parse("npm-audit", DD / "npm_audit" / "no_vuln.json").findings == []


# --- Trivy --------------------------------------------------------------------------------


def test_trivy_statuses_and_scanner_time() -> None:
    p = parse("trivy", DD / "trivy" / "all_statuses.json")
    assert p.scanned_at == datetime(2024, 1, 15, 8, 58, 29, 827537, tzinfo=UTC)
    assert p.scanned_at_source == "scanner"
    assert len(p.findings) == 7  # the not_affected entry is not a finding
    assert Counter(f.fix_state for f in p.findings) == Counter(
        {"wont_fix": 2, "not_fixed": 2, "unknown": 2, "fixed": 1}
    )


def test_trivy_takes_the_max_vector_across_sources() -> None:
    p = parse("trivy", DD / "trivy" / "cvss_severity_source.json")
    f = by_id(p)["CVE-2023-46218"]
    # nvd 6.5 beside redhat 5.3 and Trivy's MEDIUM label: the maximum vector wins
    assert (f.score, f.tier, f.severity_source) == (6.5, "medium", "cvss:nvd")


def test_trivy_image_target_drops_the_tag() -> None:
    p = parse("trivy", DD / "trivy" / "scheme_2_many_vulns.json")
    assert p.targets == ("teamdojo",)
    assert parse("trivy", DD / "trivy" / "scheme_2_no_vuln.json").findings == []


def test_trivy_misconfigurations_and_secrets() -> None:
    p = parse("trivy", DD / "trivy" / "misconfigurations_and_secrets.json")
    cats = Counter(f.category for f in p.findings)
    assert cats["config"] >= 1 and cats["secret"] >= 1
    # located by file path, whose case is kept
    assert {f.package for f in p.findings if f.category == "config"} == {"Dockerfile"}
    assert ("secret", "", "*") in p.coverage


def test_trivy_kubernetes_report() -> None:
    p = parse("trivy", DD / "trivy" / "kubernetes.json")
    assert p.format == "trivy-k8s"
    assert "gcr.io/google_samples/gb-redis-follower" in p.targets
    f = next(f for f in p.findings if f.advisory_id == "CVE-2020-27350")
    assert f.aliases == ("DSA-4808-1",) and f.score == 5.7  # v3 beats the v2 4.6


# --- Grype --------------------------------------------------------------------------------


def test_grype_vector_beats_a_disagreeing_label() -> None:
    p = parse("grype", GRYPE / "json" / "testdata" / "snapshot" / "TestJsonImgsPresenter.golden")
    f = by_id(p)["CVE-1999-0001"]
    assert f.score == 8.2 and f.tier == "high"  # labelled "Low" by Grype
    assert by_id(p)["CVE-1999-0002"].known_exploited
    assert (
        parse(
            "grype", GRYPE / "json" / "testdata" / "snapshot" / "TestEmptyJsonPresenter.golden"
        ).findings
        == []
    )


def test_grype_fields_fix_states_and_related() -> None:
    p = parse("grype", DD / "anchore_grype" / "check_all_fields.json")
    assert p.tool_version == "0.28.0" and p.targets == ("vulnerable-image",)
    states = Counter(f.fix_state for f in p.findings)
    assert states["wont_fix"] >= 1 and states["fixed"] >= 1
    neg = by_id(p)["CVE-2004-0971"]
    # Grype "Negligible", NVD v2 2.1: the label wins over a v2 score, negligible → low
    assert neg.tier == "low" and neg.severity_source.startswith("label")
    epss = parse("grype", DD / "anchore_grype" / "many_vulns_with_epss_values.json")
    assert len(epss.findings) == 15
    assert epss.scanned_at_source == "scanner"
    assert parse("grype", DD / "anchore_grype" / "no_vuln.json").findings == []
    assert (
        parse("grype", DD / "anchore_grype" / "fix_available.json").findings[0].fix_state == "fixed"
    )
    assert (
        parse("grype", DD / "anchore_grype" / "fix_not_available.json").findings[0].fix_state
        == "unknown"
    )


# --- OSV-Scanner --------------------------------------------------------------------------


def test_osv_groups_vectors_and_malicious_packages() -> None:
    p = parse("osv-scanner", DD / "osv_scanner" / "many_findings.json")
    assert len(p.findings) == 37
    mal = parse("osv-scanner", DD / "osv_scanner" / "some_findings.json").findings[0]
    assert (mal.advisory_id, mal.tier, mal.severity_source) == (
        "MAL-2023-1035",
        "critical",
        "malicious",
    )
    psr7 = [f for f in p.findings if f.package == "guzzlehttp/psr7"]
    # one group of two GHSA ids is one finding with both as aliases
    assert len(psr7) == 1 and "GHSA-wxmh-65f7-jcvw" in (psr7[0].advisory_id, *psr7[0].aliases)


def test_osv_upstream_outputs() -> None:
    want = parse(
        "osv-scanner", OSV / "pkg" / "osvscanner" / "testdata" / "filter" / "some" / "want.json"
    )
    chromium = next(f for f in want.findings if f.package == "chromium")
    assert chromium.needs_triage  # max_severity "" and no vector
    multi = parse(
        "osv-scanner",
        OSV / "internal" / "scalibrextract" / "language" / "osv" / "osvscannerjson" / "testdata"
        / "multiple-packages-with-vulns.json",
    )  # fmt: skip
    assert {f.ecosystem for f in multi.findings} == {"cargo"}


# --- Snyk ---------------------------------------------------------------------------------


def test_snyk_single_all_projects_and_null_cvss() -> None:
    one = parse("snyk", DD / "snyk" / "single_project_one_vuln.json").findings
    assert [(f.advisory_id, f.score, f.aliases) for f in one] == [
        ("SNYK-JAVA-ORGAPACHESANTUARIO-460281", 6.5, ("CVE-2019-12400",))
    ]
    allp = parse("snyk", DD / "snyk" / "all-projects_one_vuln.json")
    assert len(allp.findings) == 1
    null = parse("snyk", DD / "snyk" / "single_project_None_cvss.json")
    (f,) = null.findings
    assert (f.tier, f.severity_source) == ("low", "label:snyk")
    assert null.targets == ("a_container-engine-tls",)
    assert parse("snyk", DD / "snyk" / "single_project_no_vulns.json").findings == []


# --- SARIF --------------------------------------------------------------------------------


def test_sarif_semgrep_label_security_severity() -> None:
    p = parse("sarif", DD / "sarif" / "issue_10191.json")
    assert p.tool == "Semgrep OSS" and len(p.findings) == 77
    assert Counter(f.tier for f in p.findings)["critical"] > 0  # "CRITICAL" labels honoured
    assert all(f.category == "code" for f in p.findings)


def test_sarif_codeql_quality_results_have_no_deadline() -> None:
    p = parse("sarif", DD / "sarif" / "codeQL-output.sarif")
    assert p.tool_version == "2.5.4" and len(p.findings) == 72
    tiers = Counter(f.tier for f in p.findings)
    assert tiers["none"] > 0  # non-security queries: reported, no patch deadline
    assert tiers["high"] > 0  # security-tagged queries with level error


def test_sarif_numeric_security_severity_and_suppressions() -> None:
    g = parse(
        "sarif", GRYPE / "sarif" / "testdata" / "snapshot" / "TestSarifPresenter_image.golden"
    )
    assert sorted(f.score or 0 for f in g.findings) == [8.2, 8.5]
    s = parse("sarif", DD / "sarif" / "suppression_test.sarif")
    assert Counter(f.status for f in s.findings)["suppressed"] == 3
    assert parse("sarif", DD / "sarif" / "appendix_k1.sarif").findings == []
    empty = parse("sarif", DD / "sarif" / "no_runs.sarif")
    assert empty.findings == [] and empty.coverage == ()  # covers nothing
    dc = parse("sarif", DD / "sarif" / "dependency_check.sarif")
    assert len(dc.findings) == 13


# --- Semgrep native -----------------------------------------------------------------------


def test_semgrep_native() -> None:
    p = parse("semgrep", DD / "semgrep" / "many_findings.json")
    assert Counter(f.tier for f in p.findings) == Counter({"medium": 2, "low": 1})
    assert parse("semgrep", DD / "semgrep" / "one_finding.json").findings[0].tier == "medium"
    assert parse("semgrep", DD / "semgrep" / "empty.json").findings == []


# --- Dependabot ---------------------------------------------------------------------------


def test_dependabot_rest_list_with_cvss_v4(tmp_path: Path) -> None:
    example = json.loads((OPENAPI / "dependabot-alerts-for-repository.json").read_text())
    path = tmp_path / "alerts.json"
    path.write_text(json.dumps(example["value"]))  # the REST response body
    p = parse("dependabot", path)
    assert p.partial and p.coverage == ()
    a = {f.package: f for f in p.findings}
    assert a["django"].score == 8.7 and a["django"].score_version == "4.0"  # v4 8.7 > v3 7.5
    assert a["ansible"].score == 8.5 and a["ansible"].tier == "high"  # v4 8.5 > v3 5.5
    assert a["django"].status == "dismissed" and a["django"].status_reason == "tolerable_risk"
    assert a["ansible"].alert_created_at == datetime(2022, 6, 14, 15, 21, 52, tzinfo=UTC)


def test_dependabot_webhooks() -> None:
    created = parse("dependabot", HOOKS / "dependabot_alert" / "created.payload.json")
    (f,) = created.findings
    assert (f.advisory_id, f.aliases, f.score) == ("GHSA-c2qf-rxjj-qqgw", ("CVE-2022-25883",), 5.3)
    assert f.manifest == "package-lock.json" and f.fixed_versions == ("7.5.2",)
    fixed = parse("dependabot", HOOKS / "dependabot_alert" / "fixed.payload.json").findings[0]
    assert fixed.status == "fixed" and fixed.status_at is not None


def test_dependabot_graphql() -> None:
    d = DD / "github_vulnerability"
    assert parse("dependabot", d / "github-0-vuln.json").findings == []
    five = parse("dependabot", d / "github-5-vuln.json").findings
    assert Counter(f.tier for f in five) == Counter(
        {"critical": 1, "high": 1, "medium": 2, "low": 1}
    )
    null = parse("dependabot", d / "github_search4_null_cvss_vector.json").findings
    assert [f.severity_source for f in null] == ["label:ghsa", "cvss:ghsa"]
    nofix = parse("dependabot", d / "github-1-vuln-no-fix.json").findings[0]
    assert nofix.fix_state == "not_fixed" and nofix.manifest == "app/package.json"
    assert (
        parse("dependabot", d / "github-vuln-version.json").findings[0].alert_created_at is not None
    )
    assert len(parse("dependabot", d / "github-1-vuln.json").findings) == 1


# --- bad input: truncated and wrong-format files of each kind ---------------------------


@pytest.mark.parametrize("scanner", sorted(SCANNERS))
def test_truncated_file_names_file_and_json_path(scanner: str, tmp_path: Path) -> None:
    data = SAMPLES[scanner].read_bytes()
    cut = tmp_path / f"{scanner}-truncated.json"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputFormatError) as err:
        parse(scanner, cut)
    msg = err.value.message
    assert str(cut) in msg and "JSON path $" in msg and "truncated" in msg
    assert "nothing from this file was ingested" in msg


@pytest.mark.parametrize("scanner", sorted(SCANNERS))
def test_wrong_scanner_is_named(scanner: str) -> None:
    other = "grype" if scanner != "grype" else "trivy"
    with pytest.raises(InputFormatError) as err:
        parse(scanner, SAMPLES[other])
    msg = err.value.message
    assert str(SAMPLES[other]) in msg and "JSON path $" in msg
    assert f"changeproof ingest {other}" in msg  # says which scanner it looks like


@pytest.mark.parametrize(
    ("scanner", "text", "path"),
    [
        ("trivy", '{"SchemaVersion": 3, "Results": []}', "$.SchemaVersion"),
        ("npm-audit", '{"auditReportVersion": 3, "vulnerabilities": {}}', "$.auditReportVersion"),
        ("sarif", '{"version": "2.0.0", "runs": []}', "$.version"),
        ("grype", '{"matches": [{"vulnerability": {"id": 5}}], "descriptor": {"name": "grype"}}', "$.matches[0].vulnerability.id"),
    ],
)  # fmt: skip
def test_unknown_schema_versions(scanner: str, text: str, path: str, tmp_path: Path) -> None:
    f = tmp_path / "x.json"
    f.write_text(text)
    with pytest.raises(InputFormatError) as err:
        parse(scanner, f)
    assert f"JSON path {path}" in err.value.message and str(f) in err.value.message


def test_empty_output_is_refused() -> None:
    with pytest.raises(InputFormatError) as err:
        parse("osv-scanner", DD / "osv_scanner" / "no_findings.json")
    assert "empty" in err.value.message


def test_osv_takes_the_ghsa_label_when_there_is_no_score(tmp_path: Path) -> None:
    record = {
        "results": [
            {
                "source": {"path": "/app/package-lock.json", "type": "lockfile"},
                "packages": [
                    {
                        "package": {"name": "lodash", "version": "4.17.20", "ecosystem": "npm"},
                        "vulnerabilities": [
                            {
                                "id": "GHSA-35jh-r3h4-6jhm",
                                "aliases": ["CVE-2021-23337"],
                                "summary": "Command injection in lodash",
                                "database_specific": {"severity": "HIGH", "cwe_ids": ["CWE-94"]},
                            }
                        ],
                        "groups": [{"ids": ["GHSA-35jh-r3h4-6jhm"], "max_severity": ""}],
                    }
                ],
            }
        ]
    }
    path = tmp_path / "osv.json"
    path.write_text(json.dumps(record))
    (f,) = parse("osv-scanner", path).findings
    assert (f.tier, f.needs_triage) == ("high", False)
    assert any(s.label == "HIGH" for s in f.severities)
    # other databases put other things under database_specific: ignored, never an error
    record["results"][0]["packages"][0]["vulnerabilities"][0]["database_specific"] = {  # type: ignore[index]
        "severity": 7, "source": "x"
    }  # fmt: skip
    path.write_text(json.dumps(record))
    (g,) = parse("osv-scanner", path).findings
    assert g.needs_triage
