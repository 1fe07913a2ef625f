"""Fixed control catalogues for policy tests, independent of the live registry.

The live registry grows as controls are added; golden files and wording tests that must not
change with it render against these instead (tests of the live registry use ALL_CONTROLS).
"""

from __future__ import annotations

import re
from typing import ClassVar

from changeproof.controls.base import Control, Definition

OUTCOMES = {
    "pass": "It holds.",
    "fail": "It does not hold.",
    "exception": "Covered by an approved, unexpired exception.",
    "not_applicable": "Nothing to judge.",
    "indeterminate": "Evidence missing.",
}


def fixed_control(
    control_id: str, title: str, mappings: dict[str, tuple[str, ...]] | None = None
) -> Control:
    """A control whose definition is given here rather than loaded from its file."""
    definition = Definition(
        id=control_id,
        title=title,
        subject="change",
        statement=f"The rule of {control_id}: {title.lower()}, with `code` and *stars*.",
        mappings=mappings or {"soc2": ("CC8.1",), "iso27001": ("A.8.32",)},
        evidence=("change: the pull request", "settings: the values it reads"),
        procedure=f"Evaluate {control_id} over each subject.",
        pass_criterion=f"{control_id} holds.",
        outcomes=OUTCOMES,
        remediation=f"Fix {control_id}.",
    )

    class Fixed(Control):
        id: ClassVar[str] = control_id

        @property
        def definition(self) -> Definition:
            return definition

    return Fixed()


FIXED_CONTROLS: tuple[Control, ...] = (
    fixed_control(
        "CM-REV-1",
        "Independent approval before merge",
        {
            "soc2": ("CC8.1",),
            "iso27001": ("A.8.32", "A.8.25"),
            "pci_dss": ("6.5.1",),
            "nis2": ("21(2)(e)",),
        },
    ),
    fixed_control("CM-REV-2", "No self-approval", {"soc2": ("CC8.1",), "pci_dss": ("6.5.4",)}),
    fixed_control("CM-TST-1", "Required checks passed before merge"),
    fixed_control(
        "CM-EMG-1",
        "Emergency changes declared at the time",
        {"soc2": ("CC8.1",), "hipaa": ("164.308(a)(5)(ii)(B)",)},
    ),
    fixed_control("CM-EMG-2", "Independent retroactive review"),
    fixed_control(
        "CM-VUL-1",
        "Vulnerabilities fixed in production in time",
        {"soc2": ("CC7.1",), "iso27001": ("A.8.8",)},
    ),
)


def section(markdown: str, title: str) -> str:
    """The text of the numbered section (## or ###) whose title is ``title``."""
    lines = markdown.split("\n")
    pat = re.compile(r"^(#{2,3}) (?:\d+(?:\.\d+)?\.? )?" + re.escape(title) + r"$")
    for i, line in enumerate(lines):
        m = pat.match(line)
        if not m:
            continue
        level = len(m.group(1))
        out = []
        for nxt in lines[i + 1 :]:
            h = re.match(r"^(#{1,3}) ", nxt)
            if h and len(h.group(1)) <= level:
                break
            out.append(nxt)
        return "\n".join(out)
    raise AssertionError(f"no section titled {title!r}")
