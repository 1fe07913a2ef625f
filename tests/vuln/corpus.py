"""Paths into the shared real-world corpus (../shared/corpus next to the repository; CI has
it at the same relative place)."""

from __future__ import annotations

from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "external"
DD = CORPUS / "DefectDojo-django-DefectDojo" / "unittests" / "scans"
GRYPE = CORPUS / "anchore-grype" / "grype" / "presenter"
OSV = CORPUS / "google-osv-scanner"
HOOKS = CORPUS / "octokit-webhooks" / "payload-examples" / "api.github.com"
OPENAPI = CORPUS / "octokit-openapi" / "components" / "examples"

# one real file of each format, for the bad-input tables and the benchmark
SAMPLES: dict[str, Path] = {
    "pip-audit": DD / "pip_audit" / "many_vulns_new.json",
    "npm-audit": DD / "npm_audit_7_plus" / "one_vuln.json",
    "trivy": DD / "trivy" / "scheme_2_many_vulns.json",
    "grype": DD / "anchore_grype" / "many_vulns_with_epss_values.json",
    "osv-scanner": DD / "osv_scanner" / "many_findings.json",
    "snyk": DD / "snyk" / "all-projects_one_vuln.json",
    "sarif": DD / "sarif" / "issue_10191.json",
    "semgrep": DD / "semgrep" / "many_findings.json",
    "dependabot": HOOKS / "dependabot_alert" / "created.payload.json",
}
