"""The change controls' shortcuts (session 4) agree with what they stand for: approval times
through msgspec's encoder with isoformat, participant keys without labels with
:func:`participants`, the per-risk approval count with ``Settings.required_approvals``,
CM-DOC-1's memoised verdicts with fresh ones (and never across linked tickets), and the
memoised snapshot times with the snapshots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from changeproof.controls.base import Context
from changeproof.controls.documentation import ChangeRecord
from changeproof.controls.evaluation import evaluate_change
from changeproof.controls.facts import compute_facts, participants
from changeproof.controls.prepared import Prepared, iso, occurred_times, prepared
from changeproof.controls.review import ChangeControl
from changeproof.controls.testing import RequiredChecks
from changeproof.evidence import Actor, Change, CommitInfo, TimelineEvent
from changeproof.outcomes import FAIL, PASS, Result
from changeproof.settings import Documentation, Review, Rule, Settings
from tests.controls.builders import (
    HEAD,
    MERGED,
    T0,
    change,
    commit,
    ctx,
    digest_of,
    judge,
    layer,
    push,
    review,
    snapshot,
    user,
)


@hsettings(max_examples=300, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.just(UTC),
    )
)
def test_iso_is_isoformat_for_utc(value: datetime) -> None:
    assert iso(value) == value.isoformat()


def test_iso_is_isoformat_in_other_zones() -> None:
    for tz in (timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))):
        value = datetime(2026, 3, 2, 12, 0, 0, 5, tzinfo=tz)
        assert iso(value) == value.isoformat()


WEB_FLOW = Actor(login="web-flow", email="noreply@github.com")
actors = st.sampled_from(
    [
        user("alice"),
        user("bob"),
        Actor(name="Carol", email="carol@example.com"),
        Actor(email="12345+dave@users.noreply.github.com"),
        user("dependabot[bot]", "bot"),
        WEB_FLOW,
    ]
)


def _commit(author: Actor, committer: Actor, co: list[Actor], suggestion: bool) -> CommitInfo:
    return CommitInfo(
        sha=HEAD,
        parents=("0" * 40,),
        author=author,
        committer=committer,
        authored_at=T0,
        committed_at=T0,
        message="Apply suggestions from code review" if suggestion else "work",
        co_authors=tuple(co),
    )


@hsettings(max_examples=300, deadline=None)
@given(
    author=st.none() | actors,
    commits=st.lists(
        st.tuples(actors, actors, st.lists(actors, max_size=2), st.booleans()), max_size=4
    ),
    pushers=st.lists(actors, max_size=2),
    direct=st.booleans(),
    allow=st.booleans(),
)
def test_participant_keys_agree_with_participants(
    author: Actor | None,
    commits: list[tuple[Actor, Actor, list[Actor], bool]],
    pushers: list[Actor],
    direct: bool,
    allow: bool,
) -> None:
    settings = Settings(review=Review(allow_suggestion_commits=allow))
    c = change(
        author=author,
        commits=tuple(_commit(*x) for x in commits),
        timeline=tuple(TimelineEvent(type="push", at=T0, actor=a) for a in pushers),
        change_type="direct_push" if direct else "merge",
        number=None if direct else 7,
        merged_by=user("erin"),
    )
    keys, labels = participants(c, settings)
    f = compute_facts(c, settings)
    assert f.participant_keys == keys
    assert f.participant_labels == tuple(labels)


def test_participant_labels_are_those_explain_shows() -> None:
    c = change(commits=(commit(author="alice", co_authors=("bob",)),), timeline=(push("carol"),))
    f = compute_facts(c, Settings())
    assert f.participant_labels == ("alice (author)", "bob (co-author)", "carol (pusher)")


@given(
    risk=st.sampled_from([None, "low", "medium", "high"]),
    paths=st.lists(st.sampled_from(["src/a.py", "auth/x.py", "docs/r.md"]), max_size=3),
    repo=st.sampled_from(["acme/api", "acme/web"]),
)
def test_required_approvals_per_risk_agree_with_the_settings(
    risk: str | None, paths: list[str], repo: str
) -> None:
    plain = Settings()
    ruled = Settings(
        rules=(
            Rule(repos=("acme/api",), approvals=3),
            Rule(paths=("auth/**",), approvals=4),
            Rule(risk="medium", approvals=5),
        )
    )
    for s in (plain, ruled):
        want = s.required_approvals(repo, paths, risk)
        assert prepared(s).required_approvals(repo, tuple(paths) or None, risk) == want
        assert prepared(s).required_approvals(repo, tuple(paths), risk) == want


def _results(c: Change, context: Context) -> Result:
    return evaluate_change(c, digest_of(c), context, (ChangeRecord(),))[0]


bodies = st.lists(
    st.sampled_from(
        [
            "## Description",
            "Rewrite the cache layer for clarity.",
            "## Risk",
            "high",
            "Risk: low",
            "## Testing",
            "TBD",
            "## Rollback plan",
            "Revert the merge.",
            "Justification: PROJ-12 asks for it",
            "## Affected systems",
            "billing",
            "",
        ]
    ),
    max_size=10,
).map("\n".join)


@hsettings(max_examples=200, deadline=None)
@given(
    body=bodies,
    labels=st.lists(st.sampled_from(["risk:high", "system: billing", "bug"]), max_size=2),
    tickets=st.lists(st.sampled_from(["PROJ-1", "OPS-7"]), max_size=1),
)
def test_doc_verdicts_from_the_memo_agree_with_fresh_ones(
    body: str, labels: list[str], tickets: list[str]
) -> None:
    c = change(body=body, labels=tuple(labels), tickets=tuple(tickets))
    settings = Settings()
    warm = _results(c, ctx(settings))
    again = _results(c, ctx(settings))  # the memo's answer, when it kept one
    fresh = _results(c, ctx(Settings()))  # another settings object: an empty memo
    assert warm == again == fresh


def test_doc_memo_never_reuses_a_verdict_that_read_linked_tickets() -> None:
    settings = Settings(
        documentation=Documentation(required_fields=("description", "justification"))
    )
    context = ctx(settings)
    body = "## Description\nRewrite the cache layer for clarity.\n"
    with_ticket = _results(change(body=body, tickets=("PROJ-1",)), context)
    without = _results(change(body=body, number=8), context)
    again = _results(change(body=body, tickets=("OPS-7",), number=9), context)
    assert with_ticket.outcome is PASS
    assert without.outcome is FAIL and "business justification" in without.reasons[0]
    assert again.outcome is PASS
    assert "has business justification (linked ticket OPS-7)" not in again.reasons
    assert again.reasons == (
        "the change record holds all 2 required field(s): description, business justification",
        "approved by bob at 2026-03-02T14:00:00+00:00 (from the review evidence)",
    )


def test_doc_trail_is_per_change_when_the_verdict_is_memoised() -> None:
    context = ctx()
    a = _results(change(), context)
    b = _results(change(number=8, reviews=(review("carol"),)), context)
    assert a.reasons[0] == b.reasons[0]
    assert a.reasons[-1].startswith("approved by bob at ")
    assert b.reasons[-1].startswith("approved by carol at ")


def test_snapshot_times_are_memoised_only_for_tuples() -> None:
    snaps = [("d1", snapshot(T0)), ("d2", snapshot(T0 + timedelta(hours=1)))]
    as_tuple = tuple(snaps)
    assert occurred_times(as_tuple) == [T0, T0 + timedelta(hours=1)]
    assert occurred_times(as_tuple) is occurred_times(as_tuple)
    assert occurred_times(snaps) == [T0, T0 + timedelta(hours=1)]
    snaps.append(("d3", snapshot(MERGED)))  # a list can change: its times are not kept
    assert occurred_times(snaps) == [T0, T0 + timedelta(hours=1), MERGED]


def test_required_checks_follow_the_snapshot_in_force_per_change() -> None:
    old = snapshot(T0 - timedelta(days=2))
    # a later protection requires "lint" too: a change merged before it is judged on the
    # older protection, one merged after on the newer (the memo is per snapshot, not branch)
    strict = snapshot(
        MERGED + timedelta(hours=1),
        layer(required_checks=(("build", "github-actions"), ("lint", "github-actions"))),
    )
    context = ctx(protections=(old, strict))
    before = judge(RequiredChecks(), change(), context)
    after = judge(RequiredChecks(), change(merged_at=MERGED + timedelta(hours=2)), context)
    again = judge(RequiredChecks(), change(number=8), context)
    assert before.outcome is PASS and again.outcome is PASS
    assert after.outcome is FAIL and "lint: no run on the merged commit" in after.reasons


class _Evaluating(ChangeControl):
    """A change control overriding evaluate (not judge): the evaluator calls evaluate."""

    id = "CM-REV-1"

    def evaluate(self, subject: object, ctx: Context, digest: str) -> Result:
        return Result(control=self.id, subject="x", outcome=PASS, reasons=("evaluate ran",))


def test_a_control_overriding_evaluate_is_called_through_it() -> None:
    (r,) = evaluate_change(change(), "d" * 64, ctx(), (_Evaluating(),))
    assert r.reasons == ("evaluate ran",)


def test_prepared_is_still_one_per_settings_object() -> None:
    s = Settings()
    assert isinstance(prepared(s), Prepared) and prepared(s) is prepared(s)
    assert prepared(Settings()) is not prepared(s)


def _reference_parse_record(body: str) -> tuple[dict[str, str], str]:
    """parse_record as it was before its fast paths (session 3), over the same regexes."""
    from changeproof.controls.documentation import (
        _ALIAS,
        _HEADING,
        _KEY,
        _PLACEHOLDER,
        _UNTICKED,
        _clean,
    )

    def real(text: str) -> bool:
        parts = [ln.strip() for ln in text.splitlines()]
        body = " ".join(ln for ln in parts if ln and not (ln[0] in "-*" and _UNTICKED.match(ln)))
        return len(body.strip(" .-*_")) >= 2 and not _PLACEHOLDER.match(body)

    def heading(line: str) -> str | None:
        h = _HEADING.match(line)
        if not h:
            return None
        return _ALIAS.get(h.group("title").strip().lower().rstrip("?")) or "_other"

    def key(line: str) -> tuple[str, bool, str] | None:
        k = _KEY.match(line)
        if not k:
            return None
        field = _ALIAS.get(k.group("key").strip().lower())
        if field is None:
            return None
        return field, real(k.group("value")), k.group("value").strip()

    fields: dict[str, str] = {}
    free: list[str] = []
    current: str | None = None
    buf: list[str] = []
    for line in _clean(body).splitlines():
        title = heading(line)
        if title is not None:
            if (
                current is not None
                and current != "_other"
                and current not in fields
                and real("\n".join(buf))
            ):
                fields[current] = "\n".join(buf).strip()
            current, buf = title, []
            continue
        k = key(line)
        if k is not None:
            if k[1]:
                fields.setdefault(k[0], k[2])
            continue
        if current is None or current == "_other":
            free.append(line)
        else:
            buf.append(line)
    if (
        current is not None
        and current != "_other"
        and current not in fields
        and real("\n".join(buf))
    ):
        fields[current] = "\n".join(buf).strip()
    fields.pop("_other", None)
    return fields, "\n".join(free).strip()


record_lines = st.lists(
    st.sampled_from(
        [
            "## Description",
            "  ## Testing",
            "\t# Rollback plan",
            "**Risk**",
            "** Notes **",
            "* [ ] not done",
            "- [ ] tests",
            "- [x] tests",
            "   ",
            "",
            "TBD",
            "n/a",
            "Rewrite the cache layer.",
            "x",
            "Risk: high",
            "- **Testing**: unit tests",
            "rollback = revert",
            "Why: PROJ-1",
            "<!-- a template comment -->",
            "<!-- open",
            "close -->",
            "a\rb",
            "c\x0bd",
            "tail\u2028line",
            "## Other heading",
            "#hashtag text",
            "**bold** text: with a colon",
            "\u00a0## Affected systems",
            "...",
            "-",
        ]
    ),
    max_size=14,
)


@hsettings(max_examples=1000, deadline=None)
@given(record_lines, st.sampled_from(["\n", "\r\n", "\n\n"]))
def test_parse_record_agrees_with_the_plain_reading(lines: list[str], sep: str) -> None:
    from changeproof.controls.documentation import parse_record

    body = sep.join(lines)
    assert parse_record(body) == _reference_parse_record(body)
