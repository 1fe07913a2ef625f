"""Real framework identifiers, to validate every control mapping against (no "CC8.2").

Sources: AICPA TSC 2017 (revised points of focus 2022); ISO/IEC 27001:2022 Annex A;
PCI DSS v4.0 (the requirement IDs changeproof maps to); HIPAA Security Rule 45 CFR 164.308,
164.312, 164.316; NIS2 Directive (EU) 2022/2555 Art. 21(2)(a)-(j).
"""

from __future__ import annotations


def _series(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(1, count + 1)]


SOC2: frozenset[str] = frozenset(
    [
        *_series("CC1.", 5),
        *_series("CC2.", 3),
        *_series("CC3.", 4),
        *_series("CC4.", 2),
        *_series("CC5.", 3),
        *_series("CC6.", 8),
        *_series("CC7.", 5),
        "CC8.1",
        *_series("CC9.", 2),
        *_series("A1.", 3),
        *_series("C1.", 2),
        *_series("PI1.", 5),
        "P1.1",
        "P2.1",
        *_series("P3.", 2),
        *_series("P4.", 3),
        *_series("P5.", 2),
        *_series("P6.", 7),
        "P7.1",
        "P8.1",
    ]
)

ISO27001: frozenset[str] = frozenset(
    [
        *_series("A.5.", 37),
        *_series("A.6.", 8),
        *_series("A.7.", 14),
        *_series("A.8.", 34),
    ]
)

PCI_DSS: frozenset[str] = frozenset(
    [
        "6.1.1", "6.1.2",
        "6.2.1", "6.2.2", "6.2.3", "6.2.3.1", "6.2.4",
        "6.3.1", "6.3.2", "6.3.3",
        "6.4.1", "6.4.2", "6.4.3",
        "6.5.1", "6.5.2", "6.5.3", "6.5.4", "6.5.5", "6.5.6",
        "7.2.1", "7.2.2", "7.2.4", "7.2.5",
        "8.2.1", "8.2.2", "8.6.1",
        "10.2.1", "10.2.1.2", "10.3.2", "10.5.1",
        "11.3.1", "11.3.1.1", "11.5.2",
        "12.5.2", "12.10.1",
    ]
)  # fmt: skip

HIPAA: frozenset[str] = frozenset(
    [
        "164.308(a)(1)(i)",
        "164.308(a)(1)(ii)(A)",
        "164.308(a)(1)(ii)(B)",
        "164.308(a)(1)(ii)(D)",
        "164.308(a)(3)(ii)(A)",
        "164.308(a)(4)(ii)(B)",
        "164.308(a)(5)(ii)(B)",
        "164.308(a)(6)(ii)",
        "164.308(a)(8)",
        "164.312(a)(1)",
        "164.312(b)",
        "164.312(c)(1)",
        "164.316(b)(1)",
        "164.316(b)(2)(i)",
    ]
)

NIS2: frozenset[str] = frozenset(f"21(2)({c})" for c in "abcdefghij")

KNOWN: dict[str, frozenset[str]] = {
    "soc2": SOC2,
    "iso27001": ISO27001,
    "pci_dss": PCI_DSS,
    "hipaa": HIPAA,
    "nis2": NIS2,
}

TITLES: dict[str, str] = {
    "soc2": "SOC 2 (TSC 2017)",
    "iso27001": "ISO/IEC 27001:2022 Annex A",
    "pci_dss": "PCI DSS v4.0",
    "hipaa": "HIPAA Security Rule (45 CFR)",
    "nis2": "NIS2 Art.",
}


def unknown_ids(mappings: dict[str, tuple[str, ...]]) -> list[str]:
    """Every mapping id that is not real, as "framework:id"."""
    bad: list[str] = []
    for fw, ids in mappings.items():
        known = KNOWN.get(fw)
        if known is None:
            bad.append(f"{fw}:(unknown framework)")
            continue
        bad.extend(f"{fw}:{i}" for i in ids if i not in known)
    return bad
