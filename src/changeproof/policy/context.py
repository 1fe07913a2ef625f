"""The values the policy templates read: settings, control definitions and text helpers.

Pure: no I/O besides reading the control definitions through the registry. Every sentence
with a configurable value takes it from here, so changing a setting changes its sentence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from changeproof.controls.base import Control, Definition
from changeproof.settings import Settings

# The frameworks of the mapping table, in column order, with how their ids are written.
FRAMEWORK_COLUMNS: tuple[tuple[str, str], ...] = (
    ("soc2", "SOC 2"),
    ("iso27001", "ISO 27001:2022"),
    ("pci_dss", "PCI DSS v4.0"),
    ("hipaa", "HIPAA"),
    ("nis2", "NIS2"),
)

FRAMEWORK_LONG: dict[str, str] = {
    "soc2": "SOC 2 Trust Services Criteria (2017, revised points of focus 2022)",
    "iso27001": "ISO/IEC 27001:2022 Annex A",
    "pci_dss": "PCI DSS v4.0",
    "hipaa": "HIPAA Security Rule (45 CFR Part 164)",
    "nis2": "NIS2 Directive (EU) 2022/2555",
}

DOC_FIELDS: dict[str, str] = {
    "description": "a description of the change",
    "justification": "the business justification",
    "affected_systems": "the affected systems or components",
    "risk": "a risk assessment (low, medium or high)",
    "testing": "the test evidence",
    "rollback": "a rollback plan",
}

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")


def md_text(value: object) -> str:
    """Escape user-supplied text so Markdown shows it literally (names, team labels…)."""
    return _MD_SPECIAL.sub(r"\\\1", str(value))


_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)


def md_prose(value: object) -> str:
    """Escape text from control definitions, keeping their `code spans` as code."""
    text = str(value)
    out: list[str] = []
    pos = 0
    for m in _CODE_SPAN.finditer(text):
        out.append(md_text(text[pos : m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(md_text(text[pos:]))
    return "".join(out)


def md_code(value: object) -> str:
    """A Markdown code span that survives backticks inside the value."""
    text = str(value)
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def join_words(items: Sequence[str], conj: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + f" {conj} " + items[-1]


def codes(items: Iterable[object], conj: str = "and") -> str:
    return join_words([md_code(i) for i in items], conj)


def duration_hours(hours: int) -> str:
    """72 → '72 hours (3 days)', 336 → '14 days', 5 → '5 hours'."""
    if hours % 24 == 0 and hours > 72:
        return f"{hours // 24} days"
    plural = "hour" if hours == 1 else "hours"
    if hours % 24 == 0:
        days = hours // 24
        return f"{hours} {plural} ({days} day{'s' if days != 1 else ''})"
    return f"{hours} {plural}"


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def number_word(n: int) -> str:
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    return words[n] if 0 <= n < len(words) else str(n)


def slug(text: str) -> str:
    """GitHub-style heading anchor, so links work in Markdown viewers and in HTML/PDF alike."""
    s = text.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _natural(value: str) -> tuple[object, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", value))


def show_ref(framework: str, ref: str) -> str:
    """How a requirement id is written in the policy: '§164.308(a)(5)(ii)(B)', 'Art. 21(2)(e)'."""
    if framework == "hipaa":
        return f"§{ref}"
    if framework == "nis2":
        return f"Art. {ref}"
    return ref


@dataclass
class Sections:
    """Numbers sections as the template emits them, and resolves cross-references by title.

    The template is rendered twice: the first pass learns each title's number, the second
    uses them, so an optional subsection renumbers everything after it, references included.
    """

    known: dict[str, str] = field(default_factory=dict)
    numbers: dict[str, str] = field(default_factory=dict)
    counters: list[int] = field(default_factory=lambda: [0, 0])

    def h2(self, title: str) -> str:
        self.counters[0] += 1
        self.counters[1] = 0
        self.numbers[title] = str(self.counters[0])
        return f"## {self.counters[0]}. {title}"

    def h3(self, title: str) -> str:
        self.counters[1] += 1
        number = f"{self.counters[0]}.{self.counters[1]}"
        self.numbers[title] = number
        return f"### {number} {title}"

    def ref(self, title: str) -> str:
        """'section 4.2' for a heading title (known after the first pass)."""
        return self.known.get(title, "?")


@dataclass(frozen=True)
class Catalogue:
    """The registered controls, as the policy cites them."""

    definitions: tuple[Definition, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(d.id for d in self.definitions)

    def has(self, *ids: str) -> bool:
        return any(i in self.ids for i in ids)

    def get(self, control_id: str) -> Definition | None:
        for d in self.definitions:
            if d.id == control_id:
                return d
        return None

    def link(self, control_id: str) -> str:
        d = self.get(control_id)
        assert d is not None
        return f"[{d.id}](#{slug(heading_of(d))})"

    def tag(self, *ids: str) -> str:
        """How a requirement says which registered controls verify it, honestly.

        A requirement whose controls are not (yet) in the registry is marked procedural:
        the policy never claims a check that does not run.
        """
        present = [i for i in ids if i in self.ids]
        if not present:
            return "*(Procedural: not verified automatically.)*"
        return f"*(Verified by {join_words([self.link(i) for i in present])}.)*"

    def mapping_rows(self) -> list[dict[str, Any]]:
        rows = []
        for d in self.definitions:
            cells = {
                fw: ", ".join(show_ref(fw, r) for r in sorted(d.mappings.get(fw, ()), key=_natural))
                or "—"
                for fw, _ in FRAMEWORK_COLUMNS
            }
            rows.append({"id": d.id, "title": d.title, "link": self.link(d.id), "cells": cells})
        return rows

    def by_requirement(self) -> list[dict[str, Any]]:
        """Framework → requirement → the controls mapped to it (the auditor's view)."""
        out = []
        for fw, label in FRAMEWORK_COLUMNS:
            refs: dict[str, list[str]] = {}
            for d in self.definitions:
                for r in d.mappings.get(fw, ()):
                    refs.setdefault(r, []).append(d.id)
            out.append(
                {
                    "framework": fw,
                    "label": label,
                    "long": FRAMEWORK_LONG[fw],
                    "refs": [
                        {
                            "ref": show_ref(fw, r),
                            "controls": sorted(refs[r], key=_natural),
                            "links": ", ".join(self.link(c) for c in sorted(refs[r], key=_natural)),
                        }
                        for r in sorted(refs, key=_natural)
                    ],
                }
            )
        return out

    def unmapped_frameworks(self) -> list[str]:
        return [
            label
            for fw, label in FRAMEWORK_COLUMNS
            if not any(d.mappings.get(fw) for d in self.definitions)
        ]


def heading_of(d: Definition) -> str:
    return f"{d.id} — {d.title}"


def catalogue_of(controls: Iterable[Control]) -> Catalogue:
    """Read each registered control's definition at run time, in id order."""
    defs = {c.id: c.definition for c in controls}
    return Catalogue(tuple(defs[k] for k in sorted(defs, key=_natural)))


def build_context(
    settings: Settings, controls: Iterable[Control], known: dict[str, str] | None = None
) -> dict[str, Any]:
    s = settings
    org = s.organisation
    cat = catalogue_of(controls)
    doc_required = [DOC_FIELDS[f] for f in s.documentation.required_fields]
    doc_optional = [v for k, v in DOC_FIELDS.items() if k not in s.documentation.required_fields]
    high_risk = s.documentation.high_risk_required_fields
    doc_high_risk_extra = [
        DOC_FIELDS[f]
        for f in DOC_FIELDS
        if f in high_risk and f not in s.documentation.required_fields
    ]
    soak_rules = [r for r in s.rules if r.min_staging_soak_minutes is not None]
    approval_rules = [r for r in s.rules if r.approvals is not None]
    return {
        "s": s,
        "org": org,
        "effective": org.effective_date.isoformat() if org.effective_date else None,
        "settings_version": s.version,
        "cat": cat,
        "sec": Sections(dict(known or {})),
        "doc_required": doc_required,
        "doc_optional": doc_optional,
        "doc_high_risk_extra": doc_high_risk_extra,
        "infra": s.infrastructure,
        "patch": s.patching,
        "doc_never": [f for f in doc_optional if f not in doc_high_risk_extra],
        "approval_rules": approval_rules,
        "soak_rules": soak_rules,
        "framework_columns": FRAMEWORK_COLUMNS,
        "heading_of": heading_of,
        "slug": slug,
    }


def filters() -> dict[str, Any]:
    return {
        "t": md_text,
        "prose": md_prose,
        "c": md_code,
        "codes": codes,
        "words": join_words,
        "hours": duration_hours,
        "plural": plural,
        "nword": number_word,
        "cell": lambda v: str(v).replace("|", "\\|"),
    }
