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
from changeproof.outcomes import Outcome, Result

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
    parts = []
    for ln in text.splitlines():
        ln = ln.strip()
        if ln and not (ln[0] in "-*" and _UNTICKED.match(ln)):
            parts.append(ln)
    body = " ".join(parts)
    return len(body.strip(" .-*_")) >= 2 and not _PLACEHOLDER.match(body)


def parse_record(body: str) -> tuple[dict[str, str], str]:
    """Field → its text, and the free text outside every recognised section."""
    fields: dict[str, str] = {}
    free: list[str] = []
    current: str | None = None
    buf: list[str] = []

    def close() -> None:
        if current is None or current == "_other" or current in fields:
            return
        text = "\n".join(buf)
        if _real(text):
            fields[current] = text.strip()

    for line in _clean(body).splitlines():
        head = line.lstrip()[:2]
        h = _HEADING.match(line) if head[:1] == "#" or head == "**" else None
        if h:
            title = h.group("title").strip().lower().rstrip("?")
            close()
            current, buf = _ALIAS.get(title), []
            if current is None:
                current = "_other"
            continue
        k = _KEY.match(line) if (":" in line or "=" in line) else None
        if k and k.group("key").strip().lower() in _ALIAS:
            field = _ALIAS[k.group("key").strip().lower()]
            if _real(k.group("value")):
                fields.setdefault(field, k.group("value").strip())
            continue
        if current is None or current == "_other":
            free.append(line)
        else:
            buf.append(line)
    close()
    fields.pop("_other", None)
    return fields, "\n".join(free).strip()


def record_fields(c: Change, risk: str | None, ticket_res: list[re.Pattern[str]]) -> dict[str, str]:
    """Which fields the change record holds, each with where it was found."""
    body = c.body or ""
    if c.change_type == "direct_push" and not body.strip():
        body = "\n\n".join(ci.message.split("\n", 1)[1] for ci in c.commits if "\n" in ci.message)
    fields, free = parse_record(body)
    found = dict.fromkeys(fields, "body")
    if "description" not in found and _real(free) and len(free) >= 20:
        found["description"] = "body"
    level = _RISK.search(fields.get("risk", ""))
    if "risk" in found and level is None:
        del found["risk"]
    if level is not None:
        found["_risk_level"] = level.group(1).lower()
    if risk:
        found["risk"] = found.get("risk", "label or body")
    if "affected_systems" not in found and any(_SYSTEM_LABEL.match(lb) for lb in c.labels):
        found["affected_systems"] = "label"
    tickets = set(c.tickets)
    for rx in ticket_res:
        tickets.update(rx.findall(f"{c.title}\n{body}"))
    if "justification" not in found and tickets:
        found["justification"] = "linked ticket " + ", ".join(sorted(tickets)[:3])
    return found


class ChangeRecord(ChangeControl):
    id = "CM-DOC-1"

    def judge(self, f: ChangeFacts, ctx: Context, digest: str) -> Result:
        c = f.change
        if c.change_type == "initial":
            return self.res(f, Outcome.NOT_APPLICABLE, ["the repository's initial commit"], digest)
        doc = ctx.settings.documentation
        ticket_res = _compiled(doc.ticket_patterns)
        found = record_fields(c, f.risk, ticket_res)
        risk_level = f.risk or found.get("_risk_level")
        found.pop("_risk_level", None)
        required = list(doc.required_fields)
        if risk_level == "high":
            required += [x for x in doc.high_risk_required_fields if x not in required]
        missing = [x for x in required if x not in found]
        approvers = ", ".join(
            f"{a.name} at {a.review.submitted_at.isoformat()}" for a in f.independent
        )
        trail = (
            f"approved by {approvers} (from the review evidence)"
            if approvers
            else "no independent approval in the review evidence (see CM-REV-1)"
        )
        risk = f" (risk {risk_level})" if risk_level else ""
        if missing:
            return self.res(
                f,
                Outcome.FAIL,
                [
                    "the change record lacks: " + ", ".join(LABELS[m] for m in missing) + risk,
                    *(f"has {LABELS[k]} ({found[k]})" for k in required if k in found),
                    trail,
                ],
                digest,
            )
        return self.res(
            f,
            Outcome.PASS,
            [
                f"the change record holds all {len(required)} required field(s){risk}: "
                + ", ".join(LABELS[k] for k in required),
                trail,
            ],
            digest,
        )
