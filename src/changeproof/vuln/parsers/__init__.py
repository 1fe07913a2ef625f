"""Scanner output parsers: one module per scanner, registered by the name used on the CLI."""

from __future__ import annotations

import functools
import importlib

from changeproof.vuln.parsers.base import ParseContext, ParsedScan, Parser

# scanner name (as typed after `changeproof ingest`) → module with a ``parse`` function
SCANNERS: dict[str, str] = {
    "pip-audit": "changeproof.vuln.parsers.pip_audit",
    "npm-audit": "changeproof.vuln.parsers.npm_audit",
    "trivy": "changeproof.vuln.parsers.trivy",
    "grype": "changeproof.vuln.parsers.grype",
    "osv-scanner": "changeproof.vuln.parsers.osv",
    "snyk": "changeproof.vuln.parsers.snyk",
    "sarif": "changeproof.vuln.parsers.sarif",
    "semgrep": "changeproof.vuln.parsers.semgrep",
    "dependabot": "changeproof.vuln.parsers.dependabot",
}


@functools.cache
def parser_for(scanner: str) -> Parser:
    module = importlib.import_module(SCANNERS[scanner])
    fn: Parser = module.parse
    return fn


__all__ = ["SCANNERS", "ParseContext", "ParsedScan", "Parser", "parser_for"]
