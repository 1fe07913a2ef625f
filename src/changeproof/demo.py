"""`changeproof demo`: the whole pipeline, offline, on a generated organisation.

The organisation is built with :mod:`changeproof.demo_github` and served by a real HTTP
server on loopback; the **real** GitHub source collects it (GraphQL and REST over HTTP, the
same code as against github.com). Then the real commands run in order — record emergencies and
their retroactive reviews, ingest a scanner report, check, audit — and the audit package's
path is printed. Nothing leaves the machine.

Failure modes are injected at realistic rates so the package shows what auditors look for:
self-merged PRs without review, stale approvals, direct pushes, failing required checks,
production deployments that skipped staging, emergency changes with on-time and late
retroactive reviews, a ruleset bypass, a vulnerability past its deadline, and IaC changes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from changeproof.demo_github import T0, Org, RepoBuilder

PEOPLE = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
SECURITY = ("sam", "sue")
REPOS = ("payments-api", "web", "infra")
TOKEN = "demo-token"  # the replay only answers requests that carry it


@dataclass
class DemoFacts:
    """What the generator injected, so the demo (and its tests) can say what to expect."""

    prs: int = 0
    self_merged: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    direct_pushes: list[str] = field(default_factory=list)
    failing_checks: list[str] = field(default_factory=list)
    skipped_staging: list[str] = field(default_factory=list)
    emergencies: list[tuple[str, str, str, datetime, str]] = field(default_factory=list)
    iac: list[str] = field(default_factory=list)
    bypasses: list[str] = field(default_factory=list)
    end: datetime = T0


def build_org(scale: int, seed: int) -> tuple[Org, DemoFacts]:
    """Three repositories with ``scale`` merged PRs each (plus direct pushes and deployments)."""
    rng = random.Random(seed)
    org = Org(login="acme", teams={"security": list(SECURITY)})
    facts = DemoFacts()
    for r, name in enumerate(REPOS):
        b = RepoBuilder(org, name, start=T0 + timedelta(minutes=r))
        b.protect(approvals=1, checks=("test",))
        b.ruleset(rid=100 + r, approvals=1, bypass=(("Team", 234, "always"),))
        b.environment("staging")
        b.environment("production", reviewers=("release-manager",))
        for i in range(scale):
            author = rng.choice(PEOPLE)
            others = [p for p in PEOPLE if p != author]
            roll = rng.random()
            reviews: list[tuple[str, str, str]] = []
            risk = "low"
            merged_by: str | None = None
            tag = ""
            if roll < 0.04:
                tag = "self-merged"
                merged_by = author
            elif roll < 0.10:
                tag = "stale"
                reviews = [(rng.choice(others), "APPROVED", "old")]
            risk = rng.choice(("low", "low", "low", "medium", "medium", "high"))
            if not tag:
                # high-risk changes need two approvals; most get them
                two = risk == "high" and rng.random() < 0.85
                reviews = [
                    (p, "APPROVED", "head")
                    for p in rng.sample(others, 2 if two else rng.choice((1, 1, 2)))
                ]
                if rng.random() < 0.12:
                    reviews.insert(0, (rng.choice(others), "CHANGES_REQUESTED", "old"))
            files: list[tuple[str, str, str | None]] = [
                (f"src/{name.replace('-', '_')}/mod_{i % 7}.py", "MODIFIED", None)
            ]
            if name == "infra" and rng.random() < 0.5:
                files = [
                    (f"terraform/{rng.choice(('network', 'iam', 'db'))}/main.tf", "MODIFIED", None)
                ]
            if name == "payments-api" and rng.random() < 0.15:
                files.append(("src/payments/charge.py", "MODIFIED", None))
                if rng.random() < 0.7:
                    reviews.append((rng.choice(SECURITY), "APPROVED", "head"))
            checks = [("test", "check", "SUCCESS"), ("CodeQL", "check", "SUCCESS")]
            if rng.random() < 0.04:
                checks[0] = ("test", "check", "FAILURE")
            method = rng.choice(("squash", "squash", "squash", "merge", "rebase"))
            pr = b.merge_pr(
                author=author,
                method=method,
                reviews=reviews,
                merged_by=merged_by,
                files=files,
                checks=checks,
                title=f"{rng.choice(('Improve', 'Fix', 'Add', 'Refactor'))} {name} area {i} (ENG-{1000 + i})",
                body=(
                    f"Description: change {i} to {name}.\nJustification: ENG-{1000 + i}.\n"
                    f"Affected systems: {name}.\nRisk: {risk}\nTesting: unit tests in CI\n"
                    "Rollback: revert the PR and redeploy"
                ),
            )
            ident = f"acme/{name}#{pr['number']}"
            facts.prs += 1
            if tag == "self-merged":
                facts.self_merged.append(ident)
            elif tag == "stale":
                facts.stale.append(ident)
            if checks[0][2] == "FAILURE":
                facts.failing_checks.append(ident)
            if any(f[0].endswith(".tf") for f in files):
                facts.iac.append(ident)
            if rng.random() < 0.03:
                sha = b.direct_push(author=rng.choice(PEOPLE), message="quick fix straight to main")
                facts.direct_pushes.append(f"acme/{name}@{sha[:12]}")
            if i % 5 == 4:
                if rng.random() < 0.06:
                    facts.skipped_staging.append(f"acme/{name}@{b.tip[:12]}")
                else:
                    b.deploy("staging")
                b.deploy("production", approver="release-manager")
            if i == scale // 2:
                # an incident: fixed straight away under the emergency procedure
                sha = b.direct_push(
                    author="oncall-olga", message="emergency: disable failing payout job"
                )
                declared = b.tick(1)
                facts.emergencies.append(
                    (
                        f"acme/{name}",
                        sha,
                        f"INC-{4000 + r}",
                        declared,
                        "late" if r == 1 else "on-time",
                    )
                )
        if r == 2:
            facts.bypasses.append(f"acme/{name}@{b.bypass_push('admin-ann')[:12]}")
        facts.end = max(facts.end, b.tick())
    return org, facts


def settings_text(api_url: str) -> str:
    """The demo organisation's changeproof.toml (the same keys `changeproof init` documents)."""
    repos = ", ".join(f'"acme/{r}"' for r in REPOS)
    return f'''# changeproof.toml for the generated demo organisation "Acme Payments Ltd".
controlled_branches = ["main"]

[organisation]
name = "Acme Payments Ltd"
policy_owner = "Head of Security"
policy_version = "2.1"
effective_date = 2026-01-01

[review]
approvals = 1

[[sensitive_paths]]
name = "payments and auth"
patterns = ["**/payments/**", "**/auth/**", ".github/workflows/**", "CODEOWNERS"]
team = "security"
approvals = 1

[teams]
security = ["sam", "sue"]

[environments]
pre_production = ["staging"]
production = ["production"]

[deployment]
model = "release_manager"
release_managers = ["release-manager"]
allowed_production_identities = ["github-actions[bot]", "github-actions"]

[emergency]
approvers = ["cto-chris", "oncall-lead-lee"]
retro_review_hours = 48

[testing]
required_checks = ["test"]
sast_checks = ["CodeQL"]

[github]
repos = [{repos}]
api_url = "{api_url}"
token_env = "CHANGEPROOF_DEMO_TOKEN"
workers = 3
'''


def _pip_audit_report() -> dict[str, Any]:
    """A pip-audit JSON report (the tool's real output shape) with one old, high finding."""
    return {
        "dependencies": [
            {
                "name": "requests",
                "version": "2.25.0",
                "vulns": [
                    {
                        "id": "GHSA-j8r2-6x86-q33q",
                        "fix_versions": ["2.31.0"],
                        "aliases": ["CVE-2023-32681"],
                        "description": "Unintended leak of Proxy-Authorization header in requests",
                    }
                ],
            },
            {"name": "flask", "version": "3.0.3", "vulns": []},
        ],
        "fixes": [],
    }


Runner = Callable[[list[str]], int]


def run_demo(
    out: Path,
    *,
    scale: int,
    seed: int,
    run: Runner,
    echo: Callable[[str], None],
) -> Path:
    """Build, serve, collect, record, check and audit; returns the audit package folder.

    ``run`` executes one changeproof command line in-process (argv without the program name)
    and returns its exit code, so every step goes through the real commands.
    """
    import os

    from changeproof.demo_github import GitHubReplay, ReplayServer

    out.mkdir(parents=True, exist_ok=True)
    org, facts = build_org(scale, seed)
    echo(
        f"Generated organisation acme: {len(REPOS)} repositories, {facts.prs} merged PRs, "
        f"{len(facts.direct_pushes)} direct pushes, {len(facts.emergencies)} emergency changes."
    )
    replay = GitHubReplay(org, token=TOKEN)
    os.environ["CHANGEPROOF_DEMO_TOKEN"] = TOKEN
    with ReplayServer(replay) as url:
        echo(f"Serving it as GitHub on {url} (loopback only, offline).")
        (out / "changeproof.toml").write_text(settings_text(url), encoding="utf-8")
        base = ["--home", str(out / ".changeproof"), "--config", str(out / "changeproof.toml")]
        steps: list[tuple[str, list[str]]] = [
            ("init", ["init"]),
            ("collect github", ["collect", "github"]),
        ]
        for label, argv in steps:
            echo(f"\n$ changeproof {' '.join(argv)}")
            rc = run([*base, *argv])
            if rc != 0:
                raise RuntimeError(f"demo step `{label}` failed with exit code {rc}")
    for repo, sha, incident, declared, review in facts.emergencies:
        approver = "cto-chris"
        echo(
            f"\n$ changeproof record emergency --repo {repo} --commit {sha[:12]} --incident {incident} …"
        )
        rc = run([
            *base, "record", "emergency", "--repo", repo, "--commit", sha, "--incident", incident,
            "--approver", approver, "--by", "oncall-olga", "--env", "production",
            "--reason", "payouts failing for all customers", "--at", declared.isoformat(),
        ])  # fmt: skip
        if rc not in (0, 1):
            raise RuntimeError(f"recording emergency {incident} failed with exit code {rc}")
        hours = 20 if review == "on-time" else 70
        echo(
            f"$ changeproof record review --subject {repo}@{sha[:12]} --by oncall-lead-lee  ({hours} h later)"
        )
        run([
            *base, "record", "review", "--subject", f"{repo}@{sha[:12]}", "--by", "oncall-lead-lee",
            "--notes", "root cause: expired payout credentials; fix appropriate",
            "--at", (declared + timedelta(hours=hours)).isoformat(),
        ])  # fmt: skip
    approved = (T0 - timedelta(days=3)).isoformat()
    echo(
        f'\n$ changeproof policy approve --version 2.1 --by "Hana Head of Security" --at {approved}'
    )
    run([
        *base, "policy", "approve", "--version", "2.1",
        "--by", "Hana Head <hana@acme.example>", "--note", "Change Advisory Board", "--at", approved,
    ])  # fmt: skip
    scan = out / "pip-audit-payments-api.json"
    scan.write_text(json.dumps(_pip_audit_report(), indent=2), encoding="utf-8")
    scanned = (T0 + timedelta(hours=20)).isoformat()
    echo(
        f"\n$ changeproof ingest pip-audit {scan.name} --repo acme/payments-api --scanned-at {scanned}"
    )
    run(
        [
            *base,
            "ingest",
            "pip-audit",
            str(scan),
            "--repo",
            "acme/payments-api",
            "--scanned-at",
            scanned,
        ]
    )
    period = f"{(T0 - timedelta(days=4)).date()}..{(facts.end + timedelta(days=1)).date()}"
    echo(f"\n$ changeproof check --period {period}   (exit 1 expected: the demo has failures)")
    run([*base, "check", "--period", period])
    pkg = out / "audit"
    echo(f"\n$ changeproof audit --period {period} --sample 25 --seed demo --out {pkg}")
    rc = run(
        [
            *base,
            "audit",
            "--period",
            period,
            "--sample",
            "25",
            "--seed",
            "demo",
            "--out",
            str(pkg),
            "--zip",
        ]
    )
    if rc not in (0, 1):
        raise RuntimeError(f"the audit failed with exit code {rc}")
    echo(f"\n$ changeproof verify {pkg}")
    rc = run([*base, "verify", str(pkg)])
    if rc != 0:
        raise RuntimeError("the demo's own audit package did not verify")
    return pkg
