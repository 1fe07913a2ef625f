"""The check's shortcuts agree with what they stand for: the prepared settings' memoised
lookups with the direct functions, the per-change facts with a fresh evaluation, and the
parser's fast paths with the regular expressions they skip."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from changeproof.controls.documentation import _PLACEHOLDER, _UNTICKED, _real, parse_record
from changeproof.controls.evaluation import evaluate_change
from changeproof.controls.facts import RISK_RE, compute_facts, detect_risk, shared
from changeproof.controls.iac import InfrastructureReviewed, infrastructure_classes, path_classes
from changeproof.controls.prepared import Prepared, check_globs, prepared
from changeproof.controls.review import CurrentApprovals, IndependentApproval
from changeproof.controls.sensitive import matched_classes, sensitive_hits
from changeproof.evidence import FileChange
from changeproof.settings import (
    Infrastructure,
    SensitivePaths,
    Settings,
    StandardChange,
    Testing,
    path_matches,
)
from tests.controls.builders import MERGED, T0, change, ctx, digest_of, review

SETTINGS = Settings(
    sensitive_paths=(
        SensitivePaths(name="sec", patterns=("**/auth/**", "CODEOWNERS"), team="security"),
        SensitivePaths(name="pay", patterns=("payments/**",), team="security"),
    ),
    standard_changes=(
        StandardChange(name="deps", authors=("dependabot[bot]",), paths=("**/package.json",)),
    ),
    testing=Testing(dependency_scanning_checks=("dep*",), sast_checks=("CodeQL*", "semgrep")),
    infrastructure=Infrastructure(iam_paths=("**/iam/**",)),
)
segment = st.sampled_from(
    ["auth", "payments", "src", "iam", "k8s", "x.tf", "package.json", "CODEOWNERS", "a.py", ""]
)


@hsettings(max_examples=300, deadline=None)
@given(st.lists(segment, min_size=1, max_size=4))
def test_path_bits_agree_with_path_matches(parts: list[str]) -> None:
    path = "/".join(parts)
    p = prepared(SETTINGS)
    inf = SETTINGS.infrastructure
    classes = [
        *(sp.patterns for sp in SETTINGS.sensitive_paths),
        inf.iac_paths,
        inf.iam_paths,
        inf.migration_paths,
        *(sc.paths for sc in SETTINGS.standard_changes),
    ]
    want = sum(1 << i for i, pats in enumerate(classes) if path_matches(path, pats))
    assert p.path_bits(path) == want
    assert p.path_bits(path) == want  # and again, from the memo
    assert p.sensitive_mask == 0b11
    assert p.iac_mask == 0b111 << 2
    assert p.standard_shift == 5


@hsettings(max_examples=200, deadline=None)
@given(st.text(alphabet="CodeQLdepsmgrx-_ 12", max_size=12))
def test_security_bits_agree_with_the_globs(name: str) -> None:
    p = prepared(SETTINGS)
    want = sum(
        1 << i for i, (_, pats) in enumerate(p.security) if check_globs(pats)(name) is not None
    )
    assert p.security_bits(name) == want


def test_prepared_is_per_settings_object_and_lookups_repeat_settings() -> None:
    assert prepared(SETTINGS) is prepared(SETTINGS)
    other = Settings()
    assert prepared(other) is not prepared(SETTINGS)
    assert isinstance(prepared(other), Prepared)
    p = prepared(SETTINGS)
    for login, kind in [
        ("dependabot[bot]", "user"),
        ("alice", "user"),
        ("x", "bot"),
        (None, "user"),
    ]:
        assert p.not_human(login, kind) == SETTINGS.is_not_human(login, kind)
    assert p.team("security") is None  # configured empty: unknown, as the settings say
    teams = Settings(teams={"security": ("Alice", "BOB")})
    assert prepared(teams).team("security") == frozenset({"alice", "bob"})
    assert prepared(teams).team("nobody") is None


@hsettings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                *"tTnNxXfFdDaeo/ .-_*[]…\nK\u212a\u017f!0",
                *("tbd", "todo", "n/a", "none", "fill me in", "describe", "here", "- [ ] "),
            ]
        ),
        max_size=10,
    ).map("".join)
)
def test_real_content_fast_path_agrees_with_the_regexes(text: str) -> None:
    parts = [ln.strip() for ln in text.splitlines()]
    parts = [ln for ln in parts if ln and not (ln[0] in "-*" and _UNTICKED.match(ln))]
    body = " ".join(parts)
    assert _real(text) == (len(body.strip(" .-*_")) >= 2 and not _PLACEHOLDER.match(body))


@hsettings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["## Risk", "Risk: high", "risk = low", "- **Risk**: medium", "## Notes", "text", ""]
        ),
        max_size=6,
    )
)
def test_risk_and_record_parsing_agree_with_the_regexes(lines: list[str]) -> None:
    body = "\n".join(lines)
    m = RISK_RE.search(body)
    assert detect_risk(change(body=body)) == (m.group(1).lower() if m else None)
    assert parse_record(body) == parse_record(body)  # the line memo repeats itself


def test_facts_memo_is_per_context_and_review_verdicts_are_reused() -> None:
    c = change(files=(FileChange(path="infra/main.tf"),), files_total=1)
    context = ctx()
    d = digest_of(c)
    f = compute_facts(c, context.settings)
    memo = shared(f, context)
    memo["x"] = 1
    assert shared(f, context) is memo and memo["x"] == 1
    assert "x" not in shared(f, ctx())  # another context: nothing carried over
    # CM-IAC-1 alone (nothing to reuse) and after the review controls: the same result
    alone = evaluate_change(c, d, context, (InfrastructureReviewed(),))
    after = evaluate_change(
        c, d, context, (IndependentApproval(), CurrentApprovals(), InfrastructureReviewed())
    )
    assert alone[0] == after[2]


def test_approval_times_follow_the_independent_approvals() -> None:
    c = change(
        reviews=(
            review("carol", at=T0 + timedelta(hours=3)),
            review("bob", at=T0 + timedelta(hours=1)),
            review("dave", at=MERGED + timedelta(hours=1)),  # after the merge: not counted
        )
    )
    f = compute_facts(c, Settings())
    assert [a.name for a in f.independent] == ["bob", "carol"]
    assert f.independent_at == tuple(a.review.submitted_at.isoformat() for a in f.independent)
    assert f.cid == c.id


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.lists(segment, min_size=1, max_size=4).map("/".join), max_size=6))
def test_path_classes_from_bits_agree_with_the_glob_functions(paths: list[str]) -> None:
    c = change(files=tuple(FileChange(path=p) for p in paths), files_total=len(paths))
    f = compute_facts(c, SETTINGS)
    assert f.paths is not None
    assert sensitive_hits(f, SETTINGS) == matched_classes(f.paths, SETTINGS.sensitive_paths)
    assert infrastructure_classes(f, SETTINGS) == path_classes(f.paths, ctx(SETTINGS))
    # facts computed under other settings are re-derived, not reused
    other = Settings()
    assert sensitive_hits(f, other) == matched_classes(f.paths, other.sensitive_paths)
