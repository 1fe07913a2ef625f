"""CM-DOC-1: the change record holds the fields the policy requires.

The record is the PR/MR body, its labels and its linked tickets. A field is present when the
body has a heading (``## Rollback plan``) or a key line (``Rollback: revert the deploy``) for
it with real content — empty sections, template comments and placeholders (TBD, TODO, N/A)
do not count. Risk comes from a ``risk:high`` label or a ``Risk: high`` line; affected systems
may also come from ``system:``/``service:``/``component:`` labels, and the justification from a
linked ticket. High-risk changes must hold ``documentation.high_risk_required_fields``.
"""

from __future__ import annotations

import functools
import re

from changeproof.controls.base import Context
from changeproof.controls.facts import ChangeFacts
from changeproof.controls.review import ChangeControl
from changeproof.evidence import Change
from changeproof.outcomes import FAIL, NOT_APPLICABLE, PASS, Result
from changeproof.settings import Documentation

FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "description": ("description", "summary", "what", "what changed", "changes", "overview"),
    "justification": (
        "justification",
        "business justification",
        "why",
        "motivation",
        "reason",
        "rationale",
        "purpose",
    ),
    "affected_systems": (
        "affected systems",
        "affected services",
        "affected components",
        "systems affected",
        "systems",
        "services",
        "scope",
        "impact",
    ),
    "risk": ("risk", "risk level", "risk assessment"),
    "testing": (
        "testing",
        "tests",
        "test plan",
        "test evidence",
        "how tested",
        "how was this tested",
        "how to test",
        "verification",
        "qa",
    ),
    "rollback": (
        "rollback",
        "rollback plan",
        "roll back",
        "roll-back",
        "back-out plan",
        "backout plan",
        "back out",
        "revert plan",
        "undo",
    ),
}
LABELS = {
    "description": "description",
    "justification": "business justification",
    "affected_systems": "affected systems",
    "risk": "risk level (low/medium/high)",
    "testing": "test evidence",
    "rollback": "rollback plan",
}
_ALIAS = {alias: field for field, names in FIELD_NAMES.items() for alias in names}
_HEADING = re.compile(r"^\s{0,3}(?:#{1,6}\s*|\*\*)(?P<title>[^*#:\n]+?)[\s:*?]*(?:\*\*)?\s*:?\s*$")
_KEY = re.compile(
    r"^\s*(?:[-*]\s*)?(?:\*\*)?(?P<key>[A-Za-z][A-Za-z /-]{1,40}?)(?:\*\*)?\s*[:=]\s*(?:\*\*)?\s*(?P<value>.+)$"
)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_UNTICKED = re.compile(r"^[-*]\s*\[ \]")
_PLACEHOLDER = re.compile(
    r"(?i)^\W*(?:tbd|todo|n/?a|none|-+|\.\.\.|…|xxx|fill (?:me )?in|describe.*here)\W*$"
)
_RISK = re.compile(r"(?i)\b(low|medium|high)\b")
_SYSTEM_LABEL = re.compile(r"(?i)^(?:system|service|component|area|app)[:/]\s*\S")


@functools.lru_cache(maxsize=64)
def _compiled(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    return [re.compile(p) for p in patterns]


def _clean(text: str) -> str:
    return _COMMENT.sub("", text) if "<!--" in text else text


def _real(text: str) -> bool:
    """Real content: not empty, not only unticked boxes, not a placeholder."""
    return _real_lines(text.splitlines())


def _real_lines(lines: list[str]) -> bool:
    """:func:`_real` of the text of these lines (lines without line breaks: a section's)."""
    if len(lines) == 1:
        return _real_one(lines[0].strip())
    parts = []
    for ln in lines:
        ln = ln.strip()
        if ln and not (ln[0] in "-*" and _UNTICKED.match(ln)):
            parts.append(ln)
    return _real_body(parts[0] if len(parts) == 1 else " ".join(parts))


def _real_one(line: str) -> bool:
    """:func:`_real_lines` of one stripped line."""
    if line and line[0] in "-*" and _UNTICKED.match(line):
        return False
    return _real_body(line)


def _real_body(body: str) -> bool:
    """Whether the text of a section's kept lines, joined, is real content."""
    if len(body.strip(" .-*_")) < 2:
        return False
    # _PLACEHOLDER's \W* cannot consume a leading ASCII letter, so the match would start with
    # it, and every alternative starting with a letter starts with t, n, x, f or d: text
    # starting with another ASCII letter (most text) is no placeholder
    c = body[0]
    if c.isascii() and c.isalpha() and c not in "tTnNxXfFdD":
        return True
    return not _PLACEHOLDER.match(body)


# Line → what it says as a heading (its field, "_other" for another title, None when it is
# not a heading) and as a key line ((field, value is real, stripped value), None when it is
# not one). Pure functions of the line, memoised: the headings and key lines of a
# repository's PR template recur in every change record, and their regexes backtrack.
_HEADINGS: dict[str, str | None] = {}
_KEYS: dict[str, tuple[str, bool, str] | None] = {}
_MEMO_MAX = 50_000


def _heading(line: str) -> str | None:
    try:
        return _HEADINGS[line]
    except KeyError:
        pass
    h = _HEADING.match(line)
    out = None
    if h:
        title = h.group("title").strip().lower().rstrip("?")
        out = _ALIAS.get(title) or "_other"
    if len(_HEADINGS) >= _MEMO_MAX:
        _HEADINGS.clear()
    _HEADINGS[line] = out
    return out


def _key(line: str) -> tuple[str, bool, str] | None:
    try:
        return _KEYS[line]
    except KeyError:
        pass
    k = _KEY.match(line)
    out = None
    if k:
        field = _ALIAS.get(k.group("key").strip().lower())
        if field is not None:
            value = k.group("value")
            out = (field, _real(value), value.strip())
    if len(_KEYS) >= _MEMO_MAX:
        _KEYS.clear()
    _KEYS[line] = out
    return out


def parse_record(body: str) -> tuple[dict[str, str], str]:
    """Field → its text, and the free text outside every recognised section."""
    fields: dict[str, str] = {}
    free: list[str] = []
    # the recognised section being read (None outside one: before the first heading, or
    # under another title) and where its lines go (``free`` outside one)
    current: str | None = None
    buf = free
    headings = _HEADINGS
    keys = _KEYS
    for line in _clean(body).splitlines():
        if line:  # an empty line is neither a heading nor a key line
            # a heading starts with "#" or "**" after any leading space (most lines start
            # with neither: test the first character before stripping anything)
            c0 = line[0]
            if c0 == "#" or (c0 == "*" and line[1:2] == "*"):
                title = headings.get(line, _UNSEEN)
                if title is _UNSEEN:
                    title = _heading(line)
            elif c0.isspace():
                head = line.lstrip()[:2]
                title = _heading(line) if head[:1] == "#" or head == "**" else None
            else:
                title = None
            if title is not None:
                # the section before it ends: keep its text if it is a field's first real one
                if current is not None and current not in fields:
                    _keep(fields, current, buf)
                if title == "_other":
                    current, buf = None, free
                else:
                    current, buf = title, []
                continue
            if ":" in line or "=" in line:
                k = keys.get(line, _UNSEEN_KEY)
                if k is _UNSEEN_KEY:
                    k = _key(line)
                if k is not None:
                    if k[1]:
                        fields.setdefault(k[0], k[2])
                    continue
        buf.append(line)
    if current is not None and current not in fields:
        _keep(fields, current, buf)
    return fields, "\n".join(free).strip()


_UNSEEN = "\x00"  # (no heading memo entry: titles are field names, "_other" or None)
_UNSEEN_KEY = ("", False, "")


def _keep(fields: dict[str, str], field: str, lines: list[str]) -> None:
    """``fields[field]`` = the section's text, when it is real content."""
    # (the lines of "\n".join(lines) are the lines': none holds a line break, so a text
    # without one has at most one line with content: the text itself)
    text = "\n".join(lines).strip()
    if _real_one(text) if "\n" not in text else _real_lines(lines):
        fields[field] = text


def record_fields(c: Change, risk: str | None, ticket_res: list[re.Pattern[str]]) -> dict[str, str]:
    """Which fields the change record holds, each with where it was found."""
    found, body = _record(c, risk)
    _justify(found, c, body, ticket_res)
    return found


def _record(c: Change, risk: str | None) -> tuple[dict[str, str], str]:
    """:func:`record_fields` but a justification from linked tickets (see :func:`_justify`),
    and the body it read."""
    body = c.body or ""
    if c.change_type == "direct_push" and not body.strip():
        body = "\n\n".join(ci.message.split("\n", 1)[1] for ci in c.commits if "\n" in ci.message)
    fields, free = parse_record(body)
    found = dict.fromkeys(fields, "body")
    if "description" not in found and _real(free) and len(free) >= 20:
        found["description"] = "body"
    level = _risk_level(fields.get("risk", ""))
    if "risk" in found and level is None:
        del found["risk"]
    if level is not None:
        found["_risk_level"] = level
    if risk:
        found["risk"] = found.get("risk", "label or body")
    if "affected_systems" not in found and c.labels:
        for lb in c.labels:
            system = _SYSTEM_LABELS.get(lb)
            if system is None:
                if len(_SYSTEM_LABELS) >= _MEMO_MAX:
                    _SYSTEM_LABELS.clear()
                system = _SYSTEM_LABELS[lb] = _SYSTEM_LABEL.match(lb) is not None
            if system:
                found["affected_systems"] = "label"
                break
    return found, body


# label → whether it names an affected system (labels recur from change to change)
_SYSTEM_LABELS: dict[str, bool] = {}


# a risk section's text → the level it names (None when none): sections recur ("low")
_LEVELS: dict[str, str | None] = {}


def _risk_level(text: str) -> str | None:
    try:
        return _LEVELS[text]
    except KeyError:
        pass
    m = _RISK.search(text)
    out = m.group(1).lower() if m is not None else None
    if len(text) <= 200:  # (a long section is kept out of the memo)
        if len(_LEVELS) >= _MEMO_MAX:
            _LEVELS.clear()
        _LEVELS[text] = out
    return out


def _justify(
    found: dict[str, str], c: Change, body: str, ticket_res: list[re.Pattern[str]]
) -> None:
    """Without a justification in the record, a linked ticket is one."""
    if "justification" in found:
        return
    tickets = set(c.tickets)
    for rx in ticket_res:
        tickets.update(rx.findall(f"{c.title}\n{body}"))
    if tickets:
        found["justification"] = "linked ticket " + ", ".join(sorted(tickets)[:3])


class ChangeRecord(ChangeControl):
    id = "CM-DOC-1"

    def judge(self, f: ChangeFacts, ctx: Context, digest: str) -> Result:
        c = f.change
        if c.change_type == "initial":
            return self.res(f, NOT_APPLICABLE, ["the repository's initial commit"], digest)
        failed, head = _judge_record(c, f.risk, ctx.settings.documentation)
        if f.independent:
            approvers = ", ".join(
                [f"{a.name} at {at}" for a, at in zip(f.independent, f.independent_at, strict=True)]
            )
            trail = f"approved by {approvers} (from the review evidence)"
        else:
            trail = "no independent approval in the review evidence (see CM-REV-1)"
        return self.res(f, FAIL if failed else PASS, [*head, trail], digest)


def _judge_record(
    c: Change, facts_risk: str | None, doc: Documentation
) -> tuple[bool, tuple[str, ...]]:
    """(whether a required field is missing, the reasons before the approval trail)."""
    found, body = _record(c, facts_risk)
    level = found.pop("_risk_level", None)
    risk_level = facts_risk or level
    required, held_by_risk = _required(doc, risk_level == "high")
    if "justification" in required:  # the tickets are read only when they can matter
        _justify(found, c, body, _compiled(doc.ticket_patterns))
    missing = [x for x in required if x not in found]
    risk = f" (risk {risk_level})" if risk_level else ""
    if missing:
        return (
            True,
            (
                "the change record lacks: " + ", ".join(LABELS[m] for m in missing) + risk,
                *(f"has {LABELS[k]} ({found[k]})" for k in required if k in found),
            ),
        )
    held = held_by_risk.get(risk)
    if held is None:
        held = held_by_risk[risk] = (
            f"the change record holds all {len(required)} required field(s){risk}: "
            + ", ".join([LABELS[k] for k in required])
        )
    return False, (held,)


_Required = tuple[tuple[str, ...], dict[str, str]]
# id(documentation settings) → (them, then per [not high risk, high risk]: the fields a change
# record must hold, and per risk note the passing reason that lists them)
_REQUIRED: dict[int, tuple[Documentation, tuple[_Required, _Required]]] = {}


def _required(doc: Documentation, high: bool) -> _Required:
    """The fields a change record must hold — the settings' ``required_fields``, and for a
    high-risk change ``high_risk_required_fields`` too — and the passing reasons' memo."""
    hit = _REQUIRED.get(id(doc))
    if hit is None or hit[0] is not doc:
        base = list(doc.required_fields)
        extra = [x for x in doc.high_risk_required_fields if x not in base]
        hit = (doc, ((tuple(base), {}), ((*base, *extra), {})))
        if len(_REQUIRED) >= 64:
            _REQUIRED.clear()
        _REQUIRED[id(doc)] = hit
    return hit[1][high]
