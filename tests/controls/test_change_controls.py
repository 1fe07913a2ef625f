"""Evidence tables for CM-REV-4 (sensitive paths), CM-TST-1/2 (testing) and CM-DOC-1."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from changeproof.controls.documentation import ChangeRecord, parse_record
from changeproof.controls.sensitive import SensitivePathApproval
from changeproof.controls.testing import RequiredChecks, SecurityTesting
from changeproof.evidence import FileChange
from changeproof.outcomes import Outcome
from changeproof.settings import Documentation, SensitivePaths, Settings, Testing
from tests.controls.builders import (
    HEAD,
    MERGED,
    OLD,
    QUEUE,
    T0,
    change,
    check,
    commit,
    ctx,
    judge,
    layer,
    review,
    snapshot,
    team,
)

P, F, N, U = Outcome.PASS, Outcome.FAIL, Outcome.NOT_APPLICABLE, Outcome.INDETERMINATE
BEFORE = T0 - timedelta(days=1)
AFTER = MERGED + timedelta(days=1)
SEC = Settings(teams={"security": ()})  # members come from snapshots only
AUTH = (FileChange(path="src/auth/login.py"),)

# (case, change overrides, team snapshots, settings, expected)
REV4: list[tuple[str, dict[str, Any], tuple[Any, ...], Settings, Outcome]] = [
    ("no sensitive path", {}, (), SEC, N),
    (
        "team member approved (membership before merge)",
        {"files": AUTH, "reviews": (review("sam"),)},
        (team("security", ("sam",), BEFORE),),
        SEC,
        P,
    ),
    (
        "approver is not in the team",
        {"files": AUTH, "reviews": (review("bob"),)},
        (team("security", ("sam",), BEFORE),),
        SEC,
        F,
    ),
    (
        "team membership changed after the merge (member then, gone now)",
        {"files": AUTH, "reviews": (review("sam"),)},
        (team("security", ("sam",), BEFORE), team("security", ("tom",), AFTER)),
        SEC,
        P,
    ),
    (
        "team membership changed after the merge (joined later: does not count)",
        {"files": AUTH, "reviews": (review("tom"),)},
        (team("security", ("sam",), BEFORE), team("security", ("sam", "tom"), AFTER)),
        SEC,
        F,
    ),
    (
        "only a snapshot after the merge: membership at merge unknown",
        {"files": AUTH, "reviews": (review("sam"),)},
        (team("security", ("sam",), AFTER),),
        SEC,
        U,
    ),
    (
        "membership from the settings when no snapshot exists",
        {"files": AUTH, "reviews": (review("sam"),)},
        (),
        Settings(teams={"security": ("sam",)}),
        P,
    ),
    (
        "rename into a sensitive path",
        {
            "files": (
                FileChange(path="src/auth/util.py", previous_path="src/util.py", status="renamed"),
            ),
            "reviews": (review("bob"),),
        },
        (team("security", ("sam",), BEFORE),),
        SEC,
        F,
    ),
    (
        "rename out of a sensitive path",
        {
            "files": (
                FileChange(path="src/util.py", previous_path="src/auth/util.py", status="renamed"),
            ),
            "reviews": (review("sam"),),
        },
        (team("security", ("sam",), BEFORE),),
        SEC,
        P,
    ),
    (
        "CI workflow change",
        {"files": (FileChange(path=".github/workflows/ci.yml"),), "reviews": (review("bob"),)},
        (team("security", ("sam",), BEFORE),),
        SEC,
        F,
    ),
    (
        "team member is the author (not independent)",
        {
            "files": AUTH,
            "author": None,
            "commits": (commit(author="sam"),),
            "reviews": (review("sam"),),
        },
        (team("security", ("sam",), BEFORE),),
        SEC,
        F,
    ),
    (
        "team member approved a stale commit",
        {"files": AUTH, "reviews": (review("sam", sha=OLD),)},
        (team("security", ("sam",), BEFORE),),
        SEC,
        F,
    ),
    (
        "more than 3,000 files",
        {"files": AUTH, "files_total": 3500, "reviews": (review("sam"),)},
        (team("security", ("sam",), BEFORE),),
        SEC,
        U,
    ),
    (
        "file list truncated, nothing sensitive listed",
        {"files_total": 250},
        (),
        SEC,
        U,
    ),
    ("files not collected", {"files": None, "files_total": None}, (), SEC, U),
    (
        "direct push touching a sensitive path",
        {"files": AUTH, "change_type": "direct_push", "number": None, "reviews": None},
        (team("security", ("sam",), BEFORE),),
        SEC,
        F,
    ),
    (
        "two approvals required (M=2), one given",
        {"files": AUTH, "reviews": (review("sam"),)},
        (team("security", ("sam", "sue"), BEFORE),),
        Settings(
            teams={"security": ()},
            sensitive_paths=(
                SensitivePaths(name="auth", patterns=("**/auth/**",), team="security", approvals=2),
            ),
        ),
        F,
    ),
]


@pytest.mark.parametrize(
    ("case", "kw", "teams", "settings", "want"), REV4, ids=[r[0] for r in REV4]
)
def test_sensitive_paths_table(
    case: str, kw: dict[str, Any], teams: tuple[Any, ...], settings: Settings, want: Outcome
) -> None:
    r = judge(SensitivePathApproval(), change(**kw), ctx(settings, teams=teams))
    assert r.outcome is want, (case, r.reasons)


def test_sensitive_result_cites_the_team_snapshot_it_used() -> None:
    snap = team("security", ("sam",), BEFORE)
    r = judge(
        SensitivePathApproval(),
        change(files=AUTH, reviews=(review("sam"),)),
        ctx(SEC, teams=(snap, team("security", (), AFTER))),
    )
    from tests.controls.builders import digest_of

    assert digest_of(snap) in r.evidence
    assert "as observed" in r.reasons[0]


PROT = (snapshot(BEFORE),)  # requires build + test from github-actions
LATE = MERGED + timedelta(minutes=1)

# (case, change overrides, protections, settings, expected)
TST1: list[tuple[str, dict[str, Any], tuple[Any, ...], Settings, Outcome]] = [
    ("required checks passed before merge", {}, PROT, Settings(), P),
    (
        "one required check failed",
        {"checks": (check("build"), check("test", "failure"))},
        PROT,
        Settings(),
        F,
    ),
    ("one required check missing", {"checks": (check("build"),)}, PROT, Settings(), F),
    (
        "pending at merge",
        {"checks": (check("build"), check("test", "pending", at=None))},
        PROT,
        Settings(),
        F,
    ),
    (
        "completed only after the merge",
        {"checks": (check("build"), check("test", at=LATE))},
        PROT,
        Settings(),
        F,
    ),
    (
        "failed, then re-run green before merge",
        {
            "checks": (
                check("build"),
                check("test", "failure"),
                check("test", at=T0 + timedelta(hours=2)),
            )
        },
        PROT,
        Settings(),
        P,
    ),
    (
        "green, then re-run red after merge (latest before merge counts)",
        {"checks": (check("build"), check("test"), check("test", "failure", at=LATE))},
        PROT,
        Settings(),
        P,
    ),
    (
        "run on an older commit only",
        {"checks": (check("build"), check("test", sha=OLD))},
        PROT,
        Settings(),
        F,
    ),
    (
        "run on the merge-group commit",
        {"merge_queue_sha": QUEUE, "checks": (check("build", sha=QUEUE), check("test", sha=QUEUE))},
        PROT,
        Settings(),
        P,
    ),
    (
        "allowed skipped",
        {"checks": (check("build"), check("test", "skipped"))},
        PROT,
        Settings(),
        P,
    ),
    (
        "neutral not allowed by default",
        {"checks": (check("build"), check("test", "neutral"))},
        PROT,
        Settings(),
        F,
    ),
    (
        "neutral allowed when configured",
        {"checks": (check("build"), check("test", "neutral"))},
        PROT,
        Settings(testing=Testing(allowed_conclusions=("success", "neutral"))),
        P,
    ),
    (
        "status from the wrong app (spoofable)",
        {"checks": (check("build"), check("test", app="someone-else"))},
        PROT,
        Settings(),
        F,
    ),
    (
        "protection in force at merge, not the later one",
        {"checks": (check("build"),)},
        (
            snapshot(BEFORE, layer(required_checks=(("build", "github-actions"),))),
            snapshot(AFTER),
        ),
        Settings(),
        P,
    ),
    ("no protection snapshot, no configured checks", {}, (), Settings(), U),
    (
        "no protection snapshot: settings testing.required_checks",
        {"checks": (check("build"),)},
        (),
        Settings(testing=Testing(required_checks=("build", "lint"))),
        F,
    ),
    (
        "protection required no checks",
        {},
        (snapshot(BEFORE, layer(required_checks=())),),
        Settings(),
        F,
    ),
    ("unreadable protection", {}, (snapshot(BEFORE, readable=False),), Settings(), U),
    ("no check evidence", {"checks": None}, PROT, Settings(), U),
    (
        "direct push: checks finish after the push",
        {
            "change_type": "direct_push",
            "number": None,
            "head_sha": None,
            "checks": (check("build", sha="c" * 40, at=LATE), check("test", sha="c" * 40, at=LATE)),
        },
        PROT,
        Settings(),
        F,
    ),
]


@pytest.mark.parametrize(("case", "kw", "prot", "settings", "want"), TST1, ids=[r[0] for r in TST1])
def test_required_checks_table(
    case: str, kw: dict[str, Any], prot: tuple[Any, ...], settings: Settings, want: Outcome
) -> None:
    r = judge(RequiredChecks(), change(**kw), ctx(settings, protections=prot))
    assert r.outcome is want, (case, r.reasons)


SECURITY_TESTING = Settings(
    testing=Testing(dependency_scanning_checks=("dependency-review",), sast_checks=("CodeQL*",))
)
TST2: list[tuple[str, dict[str, Any], Settings, Outcome]] = [
    (
        "both classes ran",
        {"checks": (check("dependency-review"), check("CodeQL / analyze"))},
        SECURITY_TESTING,
        P,
    ),
    (
        "SAST found problems (it still ran)",
        {"checks": (check("dependency-review"), check("codeql / analyze", "failure"))},
        SECURITY_TESTING,
        P,
    ),
    ("SAST missing", {"checks": (check("dependency-review"),)}, SECURITY_TESTING, F),
    (
        "SAST skipped",
        {"checks": (check("dependency-review"), check("CodeQL", "skipped"))},
        SECURITY_TESTING,
        F,
    ),
    (
        "SAST only after the merge",
        {"checks": (check("dependency-review"), check("CodeQL", at=MERGED + timedelta(hours=1)))},
        SECURITY_TESTING,
        F,
    ),
    ("nothing configured", {}, Settings(), U),
    ("no check evidence", {"checks": None}, SECURITY_TESTING, U),
    (
        "only one class configured",
        {"checks": (check("dependency-review"),)},
        Settings(testing=Testing(dependency_scanning_checks=("dependency-review",))),
        P,
    ),
]


@pytest.mark.parametrize(("case", "kw", "settings", "want"), TST2, ids=[r[0] for r in TST2])
def test_security_testing_table(
    case: str, kw: dict[str, Any], settings: Settings, want: Outcome
) -> None:
    r = judge(SecurityTesting(), change(**kw), ctx(settings))
    assert r.outcome is want, (case, r.reasons)


FULL = (
    "## Summary\nAdd rate limiting.\n\n## Why\nCredential stuffing, see SEC-12.\n\n"
    "## Affected systems\nlogin API\n\n## Risk\nhigh\n\n## Test plan\nLoad test attached.\n\n"
    "## Rollback plan\nFeature flag off.\n"
)
DOC: list[tuple[str, dict[str, Any], Settings, Outcome]] = [
    ("template filled in", {}, Settings(), P),
    ("empty body", {"body": ""}, Settings(), F),
    (
        "sections left empty or TBD",
        {
            "body": "## Description\nFix it properly please.\n\n## Risk\nlow\n\n## Testing\nTBD\n\n## Rollback\n<!-- how to undo -->\n"
        },
        Settings(),
        F,
    ),
    (
        "key lines instead of headings",
        {
            "body": "Fixes the login timeout for mobile users.\n\nRisk: medium\nTesting: added unit tests\nRollback: revert\n"
        },
        Settings(),
        P,
    ),
    (
        "risk from a label",
        {
            "body": "## Description\nUpgrade the HTTP client library.\n## Testing\nCI\n## Rollback\nrevert\n",
            "labels": ("risk:low",),
        },
        Settings(),
        P,
    ),
    (
        "risk section without a level",
        {
            "body": "## Description\nUpgrade the HTTP client.\n## Risk\nsome\n## Testing\nCI\n## Rollback\nrevert\n"
        },
        Settings(),
        F,
    ),
    (
        "high risk needs justification and affected systems too",
        {
            "body": "## Description\nRotate the signing keys for tokens.\n## Risk\nhigh\n## Testing\nstaging\n## Rollback\nrestore old key\n"
        },
        Settings(),
        F,
    ),
    ("high risk, complete record", {"body": FULL}, Settings(), P),
    (
        "high risk: justification from a linked ticket, systems from a label",
        {
            "body": "## Description\nRotate the signing keys for tokens.\n## Risk\nhigh\n## Testing\nstaging\n## Rollback\nrestore old key\n",
            "tickets": ("SEC-44",),
            "labels": ("service:auth",),
        },
        Settings(),
        P,
    ),
    (
        "required fields configurable",
        {"body": "Some words describing this change here."},
        Settings(documentation=Documentation(required_fields=("description",))),
        P,
    ),
]


@pytest.mark.parametrize(("case", "kw", "settings", "want"), DOC, ids=[r[0] for r in DOC])
def test_change_record_table(
    case: str, kw: dict[str, Any], settings: Settings, want: Outcome
) -> None:
    r = judge(ChangeRecord(), change(**kw), ctx(settings))
    assert r.outcome is want, (case, r.reasons)


def test_change_record_names_missing_fields_and_the_approver_from_reviews() -> None:
    r = judge(ChangeRecord(), change(body="## Description\nA real description here.\n"), ctx())
    assert (
        r.reasons[0]
        == "the change record lacks: risk level (low/medium/high), test evidence, rollback plan"
    )
    assert any(x.startswith("approved by bob at ") for x in r.reasons)


def test_parse_record_sections() -> None:
    fields, free = parse_record(FULL + "\n## Notes\nirrelevant\n")
    assert set(fields) == {
        "description",
        "justification",
        "affected_systems",
        "risk",
        "testing",
        "rollback",
    }
    assert fields["rollback"] == "Feature flag off."
    assert free == "irrelevant"  # unknown sections are free text (a description fallback)
    assert HEAD  # builders share one head sha across tables
