"""CVSS vectors → base scores: v2.0, v3.0, v3.1 and v4.0, from the official formulas.

No third-party scorer: the `cvss` package is LGPL and returns Decimals, and its v4 score
includes threat metrics when present. Patch deadlines are tiered on the **base** score, so
for v4 the threat (``E``) and environmental metrics are stripped before scoring — an exploit
maturity of "Unreported" must never push a critical finding into a longer deadline.

References: CVSS v3.1 specification §7 (with Appendix A ``Roundup``), v3.0 §8 (plain ceiling),
v2 guide §3.2.1, v4.0 specification §8 (MacroVectors, EQ1–EQ6, severity distances) with the
lookup table in :mod:`changeproof.vuln.cvss4_table`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from changeproof.vuln.cvss4_table import MACROVECTOR_SCORES

Version = Literal["2.0", "3.0", "3.1", "4.0"]
Band = Literal["none", "low", "medium", "high", "critical"]


class CvssError(ValueError):
    """A vector that is not a well-formed CVSS vector of a known version."""


@dataclass(frozen=True, slots=True)
class Score:
    version: Version
    vector: str
    base: float


def band(score: float) -> Band:
    """The qualitative band of a 0–10 score (CVSS v3/v4 scale; 9.0 is critical)."""
    if score <= 0.0:
        return "none"
    if score < 4.0:
        return "low"
    if score < 7.0:
        return "medium"
    if score < 9.0:
        return "high"
    return "critical"


def _split(body: str, vector: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in body.split("/"):
        if not part:
            continue
        key, sep, value = part.partition(":")
        if not sep or not key or not value:
            raise CvssError(f"{vector!r}: malformed metric {part!r}")
        if key in out:
            raise CvssError(f"{vector!r}: metric {key} given twice")
        out[key] = value
    return out


# --- v3.0 / v3.1 ------------------------------------------------------------------------

_V3_AV = {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2}
_V3_AC = {"L": 0.77, "H": 0.44}
_V3_PR_U = {"N": 0.85, "L": 0.62, "H": 0.27}
_V3_PR_C = {"N": 0.85, "L": 0.68, "H": 0.5}
_V3_UI = {"N": 0.85, "R": 0.62}
_V3_CIA = {"H": 0.56, "L": 0.22, "N": 0.0}
_V3_BASE = ("AV", "AC", "PR", "UI", "S", "C", "I", "A")
_V3_OTHER = {
    "E": "XUPFH",
    "RL": "XOTWU",
    "RC": "XURC",
    "CR": "XLMH",
    "IR": "XLMH",
    "AR": "XLMH",
    "MAV": "XNALP",
    "MAC": "XLH",
    "MPR": "XNLH",
    "MUI": "XNR",
    "MS": "XUC",
    "MC": "XNLH",
    "MI": "XNLH",
    "MA": "XNLH",
}


def _roundup_31(value: float) -> float:
    # CVSS v3.1 Appendix A: avoids floating-point artefacts such as 4.000000001 → 4.1
    whole = round(value * 100_000)
    if whole % 10_000 == 0:
        return whole / 100_000.0
    return (math.floor(whole / 10_000) + 1) / 10.0


def _roundup_30(value: float) -> float:
    return math.ceil(value * 10) / 10


def score_v3(vector: str) -> Score:
    head, _, body = vector.partition("/")
    if head not in ("CVSS:3.0", "CVSS:3.1"):
        raise CvssError(f"{vector!r}: a v3 vector starts with CVSS:3.0/ or CVSS:3.1/")
    m = _split(body, vector)
    for key in _V3_BASE:
        if key not in m:
            raise CvssError(f"{vector!r}: base metric {key} is missing")
    for key, value in m.items():
        allowed: dict[str, float] | None = {
            "AV": _V3_AV,
            "AC": _V3_AC,
            "PR": _V3_PR_U,
            "UI": _V3_UI,
            "S": {"U": 0.0, "C": 0.0},
            "C": _V3_CIA,
            "I": _V3_CIA,
            "A": _V3_CIA,
        }.get(key)
        if allowed is not None:
            if value not in allowed:
                raise CvssError(f"{vector!r}: {key}:{value} is not a valid value")
        elif key in _V3_OTHER:
            if len(value) != 1 or value not in _V3_OTHER[key]:
                raise CvssError(f"{vector!r}: {key}:{value} is not a valid value")
        else:
            raise CvssError(f"{vector!r}: unknown metric {key}")
    changed = m["S"] == "C"
    iss = 1 - (1 - _V3_CIA[m["C"]]) * (1 - _V3_CIA[m["I"]]) * (1 - _V3_CIA[m["A"]])
    impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if changed else 6.42 * iss
    pr = (_V3_PR_C if changed else _V3_PR_U)[m["PR"]]
    exploitability = 8.22 * _V3_AV[m["AV"]] * _V3_AC[m["AC"]] * pr * _V3_UI[m["UI"]]
    roundup = _roundup_31 if head == "CVSS:3.1" else _roundup_30
    if impact <= 0:
        base = 0.0
    elif changed:
        base = roundup(min(1.08 * (impact + exploitability), 10))
    else:
        base = roundup(min(impact + exploitability, 10))
    version: Version = "3.1" if head == "CVSS:3.1" else "3.0"
    return Score(version, vector, base)


# --- v2.0 ---------------------------------------------------------------------------------

_V2_AV = {"L": 0.395, "A": 0.646, "N": 1.0}
_V2_AC = {"H": 0.35, "M": 0.61, "L": 0.71}
_V2_AU = {"M": 0.45, "S": 0.56, "N": 0.704}
_V2_CIA = {"N": 0.0, "P": 0.275, "C": 0.660}
_V2_OTHER = {
    "E": ("U", "POC", "F", "H", "ND"),
    "RL": ("OF", "TF", "W", "U", "ND"),
    "RC": ("UC", "UR", "C", "ND"),
    "CDP": ("N", "L", "LM", "MH", "H", "ND"),
    "TD": ("N", "L", "M", "H", "ND"),
    "CR": ("L", "M", "H", "ND"),
    "IR": ("L", "M", "H", "ND"),
    "AR": ("L", "M", "H", "ND"),
}


def _round1(value: float) -> float:
    # round half up to one decimal (Python's round() is banker's rounding)
    return math.floor(value * 10 + 0.5 + 1e-9) / 10


def score_v2(vector: str) -> Score:
    body = vector.removeprefix("(").removesuffix(")").removeprefix("CVSS:2.0/")
    m = _split(body, vector)
    tables = {"AV": _V2_AV, "AC": _V2_AC, "Au": _V2_AU, "C": _V2_CIA, "I": _V2_CIA, "A": _V2_CIA}
    for key, table in tables.items():
        if key not in m:
            raise CvssError(f"{vector!r}: base metric {key} is missing")
        if m[key] not in table:
            raise CvssError(f"{vector!r}: {key}:{m[key]} is not a valid value")
    for key, value in m.items():
        if key not in tables and (key not in _V2_OTHER or value not in _V2_OTHER[key]):
            raise CvssError(f"{vector!r}: unknown metric or value {key}:{value}")
    impact = 10.41 * (1 - (1 - _V2_CIA[m["C"]]) * (1 - _V2_CIA[m["I"]]) * (1 - _V2_CIA[m["A"]]))
    exploitability = 20 * _V2_AV[m["AV"]] * _V2_AC[m["AC"]] * _V2_AU[m["Au"]]
    f = 0.0 if impact == 0 else 1.176
    return Score("2.0", vector, _round1(((0.6 * impact) + (0.4 * exploitability) - 1.5) * f))


# --- v4.0 ---------------------------------------------------------------------------------

# Metric → allowed values, in the order the specification lists them (the order is mandatory).
_V4_METRICS: dict[str, tuple[str, ...]] = {
    "AV": ("N", "A", "L", "P"),
    "AC": ("L", "H"),
    "AT": ("N", "P"),
    "PR": ("N", "L", "H"),
    "UI": ("N", "P", "A"),
    "VC": ("H", "L", "N"),
    "VI": ("H", "L", "N"),
    "VA": ("H", "L", "N"),
    "SC": ("H", "L", "N"),
    "SI": ("H", "L", "N"),
    "SA": ("H", "L", "N"),
    "E": ("X", "A", "P", "U"),
    "CR": ("X", "H", "M", "L"),
    "IR": ("X", "H", "M", "L"),
    "AR": ("X", "H", "M", "L"),
    "MAV": ("X", "N", "A", "L", "P"),
    "MAC": ("X", "L", "H"),
    "MAT": ("X", "N", "P"),
    "MPR": ("X", "N", "L", "H"),
    "MUI": ("X", "N", "P", "A"),
    "MVC": ("X", "H", "L", "N"),
    "MVI": ("X", "H", "L", "N"),
    "MVA": ("X", "H", "L", "N"),
    "MSC": ("X", "H", "L", "N"),
    "MSI": ("X", "S", "H", "L", "N"),
    "MSA": ("X", "S", "H", "L", "N"),
    "S": ("X", "N", "P"),
    "AU": ("X", "N", "Y"),
    "R": ("X", "A", "U", "I"),
    "V": ("X", "D", "C"),
    "RE": ("X", "L", "M", "H"),
    "U": ("X", "Clear", "Green", "Amber", "Red"),
}
_V4_BASE = ("AV", "AC", "AT", "PR", "UI", "VC", "VI", "VA", "SC", "SI", "SA")
_V4_ORDER = {k: i for i, k in enumerate(_V4_METRICS)}

# Severity "levels" used for the distance from the highest-severity vector of a MacroVector.
_V4_LEVELS: dict[str, dict[str, float]] = {
    "AV": {"N": 0.0, "A": 0.1, "L": 0.2, "P": 0.3},
    "PR": {"N": 0.0, "L": 0.1, "H": 0.2},
    "UI": {"N": 0.0, "P": 0.1, "A": 0.2},
    "AC": {"L": 0.0, "H": 0.1},
    "AT": {"N": 0.0, "P": 0.1},
    "VC": {"H": 0.0, "L": 0.1, "N": 0.2},
    "VI": {"H": 0.0, "L": 0.1, "N": 0.2},
    "VA": {"H": 0.0, "L": 0.1, "N": 0.2},
    "SC": {"H": 0.1, "L": 0.2, "N": 0.3},
    "SI": {"S": 0.0, "H": 0.1, "L": 0.2, "N": 0.3},
    "SA": {"S": 0.0, "H": 0.1, "L": 0.2, "N": 0.3},
    "CR": {"H": 0.0, "M": 0.1, "L": 0.2},
    "IR": {"H": 0.0, "M": 0.1, "L": 0.2},
    "AR": {"H": 0.0, "M": 0.1, "L": 0.2},
    "E": {"U": 0.2, "P": 0.1, "A": 0.0},
}

# Highest-severity vectors per EQ level (spec §8.2, "max_composed"); EQ3 is keyed by EQ6 too.
_MAX_EQ1 = {0: ("AV:N/PR:N/UI:N",), 1: ("AV:A/PR:N/UI:N", "AV:N/PR:L/UI:N", "AV:N/PR:N/UI:P"),
            2: ("AV:P/PR:N/UI:N", "AV:A/PR:L/UI:P")}  # fmt: skip
_MAX_EQ2 = {0: ("AC:L/AT:N",), 1: ("AC:H/AT:N", "AC:L/AT:P")}
_MAX_EQ3: dict[int, dict[int, tuple[str, ...]]] = {
    0: {
        0: ("VC:H/VI:H/VA:H/CR:H/IR:H/AR:H",),
        1: ("VC:H/VI:H/VA:L/CR:M/IR:M/AR:H", "VC:H/VI:H/VA:H/CR:M/IR:M/AR:M"),
    },
    1: {
        0: ("VC:L/VI:H/VA:H/CR:H/IR:H/AR:H", "VC:H/VI:L/VA:H/CR:H/IR:H/AR:H"),
        1: (
            "VC:L/VI:H/VA:L/CR:H/IR:M/AR:H",
            "VC:L/VI:H/VA:H/CR:H/IR:M/AR:M",
            "VC:H/VI:L/VA:H/CR:M/IR:H/AR:M",
            "VC:H/VI:L/VA:L/CR:M/IR:H/AR:H",
            "VC:L/VI:L/VA:H/CR:H/IR:H/AR:M",
        ),
    },
    2: {1: ("VC:L/VI:L/VA:L/CR:H/IR:H/AR:H",)},
}
_MAX_EQ4 = {0: ("SC:H/SI:S/SA:S",), 1: ("SC:H/SI:H/SA:H",), 2: ("SC:L/SI:L/SA:L",)}
_MAX_EQ5 = {0: ("E:A",), 1: ("E:P",), 2: ("E:U",)}
# Depth of each MacroVector (the largest severity distance inside it, +1), in 0.1 steps.
_DEPTH_EQ1 = {0: 1, 1: 4, 2: 5}
_DEPTH_EQ2 = {0: 1, 1: 2}
_DEPTH_EQ3EQ6 = {(0, 0): 7, (0, 1): 6, (1, 0): 8, (1, 1): 8, (2, 1): 10}
_DEPTH_EQ4 = {0: 6, 1: 5, 2: 4}

_WORST_DEFAULT = {"E": "A", "CR": "H", "IR": "H", "AR": "H"}
THREAT_AND_ENVIRONMENTAL = frozenset(
    {"E", "CR", "IR", "AR"} | {k for k in _V4_METRICS if k.startswith("M")}
)


def parse_v4(vector: str) -> dict[str, str]:
    head, _, body = vector.partition("/")
    if head != "CVSS:4.0":
        raise CvssError(f"{vector!r}: a v4 vector starts with CVSS:4.0/")
    m = _split(body, vector)
    last = -1
    for key, value in m.items():
        if key not in _V4_METRICS:
            raise CvssError(f"{vector!r}: unknown metric {key}")
        if value not in _V4_METRICS[key]:
            raise CvssError(f"{vector!r}: {key}:{value} is not a valid value")
        if _V4_ORDER[key] < last:
            raise CvssError(f"{vector!r}: metric {key} is out of the specified order")
        last = _V4_ORDER[key]
    for key in _V4_BASE:
        if key not in m:
            raise CvssError(f"{vector!r}: base metric {key} is missing")
    return m


def _eff(m: dict[str, str], key: str) -> str:
    value = m.get(key, "X")
    if value == "X" and key in _WORST_DEFAULT:
        return _WORST_DEFAULT[key]
    modified = m.get("M" + key, "X")
    if modified != "X":
        return modified
    return value


def _macrovector(m: dict[str, str]) -> tuple[int, int, int, int, int, int]:
    av, pr, ui = _eff(m, "AV"), _eff(m, "PR"), _eff(m, "UI")
    if av == "N" and pr == "N" and ui == "N":
        eq1 = 0
    elif (av == "N" or pr == "N" or ui == "N") and av != "P":
        eq1 = 1
    else:
        eq1 = 2
    eq2 = 0 if _eff(m, "AC") == "L" and _eff(m, "AT") == "N" else 1
    vc, vi, va = _eff(m, "VC"), _eff(m, "VI"), _eff(m, "VA")
    if vc == "H" and vi == "H":
        eq3 = 0
    elif "H" in (vc, vi, va):
        eq3 = 1
    else:
        eq3 = 2
    if _eff(m, "MSI") == "S" or _eff(m, "MSA") == "S":
        eq4 = 0
    elif "H" in (_eff(m, "SC"), _eff(m, "SI"), _eff(m, "SA")):
        eq4 = 1
    else:
        eq4 = 2
    eq5 = {"A": 0, "P": 1, "U": 2}[_eff(m, "E")]
    cr, ir, ar = _eff(m, "CR"), _eff(m, "IR"), _eff(m, "AR")
    eq6 = (
        0
        if (cr == "H" and vc == "H") or (ir == "H" and vi == "H") or (ar == "H" and va == "H")
        else 1
    )
    return eq1, eq2, eq3, eq4, eq5, eq6


def _key(eqs: tuple[int, ...]) -> str:
    return "".join(str(e) for e in eqs)


def _score_v4_metrics(m: dict[str, str]) -> float:
    if all(_eff(m, k) == "N" for k in ("VC", "VI", "VA", "SC", "SI", "SA")):
        return 0.0
    eqs = _macrovector(m)
    eq1, eq2, eq3, eq4, eq5, eq6 = eqs
    value = MACROVECTOR_SCORES[_key(eqs)]

    def lower(i: int, step: int = 1) -> float | None:
        nxt = list(eqs)
        nxt[i] += step
        return MACROVECTOR_SCORES.get(_key(tuple(nxt)))

    lower_eq1 = lower(0)
    lower_eq2 = lower(1)
    if eq3 == 0 and eq6 == 0:
        # two ways down (00 → 01 and 00 → 10): the higher-scoring one bounds the distance
        left = MACROVECTOR_SCORES.get(_key((eq1, eq2, eq3, eq4, eq5, eq6 + 1)))
        right = MACROVECTOR_SCORES.get(_key((eq1, eq2, eq3 + 1, eq4, eq5, eq6)))
        lower_eq3eq6 = None if left is None or right is None else max(left, right)
    elif eq3 == 1 and eq6 == 0:
        lower_eq3eq6 = lower(5)
    elif eq3 in (0, 1):
        lower_eq3eq6 = lower(2)
    else:
        lower_eq3eq6 = MACROVECTOR_SCORES.get(_key((eq1, eq2, eq3 + 1, eq4, eq5, eq6 + 1)))
    lower_eq4 = lower(3)
    lower_eq5 = lower(4)

    # The highest-severity vector of this MacroVector that the scored vector does not exceed.
    distances: dict[str, float] | None = None
    for a in _MAX_EQ1[eq1]:
        for b in _MAX_EQ2[eq2]:
            for c in _MAX_EQ3[eq3][eq6]:
                for d4 in _MAX_EQ4[eq4]:
                    for e5 in _MAX_EQ5[eq5]:
                        mx = dict(p.split(":") for p in f"{a}/{b}/{c}/{d4}/{e5}".split("/"))
                        dist = {
                            k: levels[_eff(m, k)] - levels[mx[k]]
                            for k, levels in _V4_LEVELS.items()
                        }
                        if all(v >= 0 for v in dist.values()):
                            distances = dist
                            break
                    if distances is not None:
                        break
                if distances is not None:
                    break
            if distances is not None:
                break
        if distances is not None:
            break
    if distances is None:  # cannot happen for a valid vector; keep the MacroVector score
        return value

    d = distances
    current = (
        (d["AV"] + d["PR"] + d["UI"], lower_eq1, _DEPTH_EQ1[eq1]),
        (d["AC"] + d["AT"], lower_eq2, _DEPTH_EQ2[eq2]),
        (
            d["VC"] + d["VI"] + d["VA"] + d["CR"] + d["IR"] + d["AR"],
            lower_eq3eq6,
            _DEPTH_EQ3EQ6[(eq3, eq6)],
        ),
        (d["SC"] + d["SI"] + d["SA"], lower_eq4, _DEPTH_EQ4[eq4]),
    )
    existing = 0
    total = 0.0
    for distance, lower_score, depth in current:
        if lower_score is None:
            continue
        existing += 1
        total += (value - lower_score) * (distance / (depth * 0.1))
    if lower_eq5 is not None:
        existing += 1  # EQ5's proportional distance is always 0
    mean = total / existing if existing else 0.0
    return math.floor((max(0.0, min(10.0, value - mean)) + 1e-6) * 10 + 0.5) / 10


def score_v4(vector: str, *, base_only: bool = True) -> Score:
    """Score a v4.0 vector. ``base_only`` (the default, used for deadlines) drops the threat
    and environmental metrics first, so the result is CVSS-B whatever the vector carries."""
    m = parse_v4(vector)
    if base_only:
        m = {k: v for k, v in m.items() if k not in THREAT_AND_ENVIRONMENTAL}
    return Score("4.0", vector, _score_v4_metrics(m))


@lru_cache(maxsize=65536)
def score_vector(vector: str) -> Score:
    """Score any supported vector by its prefix (v2 vectors carry none). Cached: the same
    advisory vectors recur across thousands of findings."""
    v = vector.strip()
    if v.startswith("CVSS:4.0/"):
        return score_v4(v)
    if v.startswith(("CVSS:3.1/", "CVSS:3.0/")):
        return score_v3(v)
    if v.startswith("CVSS:"):
        raise CvssError(f"{vector!r}: unsupported CVSS version")
    if "Au:" in v:
        return score_v2(v)
    raise CvssError(
        f"{vector!r}: not a CVSS vector (v3/v4 vectors start with CVSS:3.x/ or CVSS:4.0/)"
    )
