"""Choosing one severity among the several a scanner reports — the documented order.

1. Every CVSS v4.0 and v3.x **vector** present is scored (base metrics only; for v4 the
   threat/exploit-maturity and environmental metrics are stripped first). The **maximum**
   wins: conservative and auditable.
2. Without a parseable v3/v4 vector, the maximum **numeric score** the tool supplies
   (npm ``cvss.score``, Snyk ``cvssScore``, Grype ``baseScore``, SARIF ``security-severity``).
   A score of 0 with no vector means "unscored", not "none" (npm, Dependabot do this).
3. Without a score, the scanner's **label** (critical, high, medium/moderate, low/negligible,
   info/none).
4. Without a label, a **CVSS v2** vector or score (NVD's v2 bands top out at High).
5. Otherwise **unscored**: provisional *medium*, flagged ``needs_triage``.

OSV ``MAL-*`` advisories (malicious packages) are critical whatever else is said.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from changeproof.evidence import SeverityInput, SeverityTier
from changeproof.vuln.cvss import CvssError, band, score_vector

_LABELS: dict[str, SeverityTier] = {
    "critical": "critical",
    "high": "high",
    "important": "high",
    "error": "high",
    "medium": "medium",
    "moderate": "medium",
    "warning": "medium",
    "low": "low",
    "negligible": "low",
    "note": "none",
    "info": "none",
    "informational": "none",
    "none": "none",
}
TIER_ORDER: dict[SeverityTier, int] = {"none": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


def label_tier(label: str | None) -> SeverityTier | None:
    if not label:
        return None
    return _LABELS.get(label.strip().lower())


@dataclass(frozen=True, slots=True)
class Chosen:
    tier: SeverityTier
    score: float | None
    version: str | None
    source: (
        str  # "cvss:<src>", "score:<src>", "label:<src>", "cvss2:<src>", "malicious", "unscored"
    )
    needs_triage: bool = False


@lru_cache(maxsize=65536)
def choose_cached(
    inputs: tuple[SeverityInput, ...], malicious: bool, unscored: SeverityTier
) -> Chosen:
    """:func:`choose` memoised: the same severity statements recur across many findings."""
    return choose(inputs, advisory_ids=("MAL-",) if malicious else (), unscored=unscored)


def choose(
    inputs: tuple[SeverityInput, ...] | list[SeverityInput],
    *,
    advisory_ids: tuple[str, ...] = (),
    unscored: SeverityTier = "medium",
) -> Chosen:
    if any(a.upper().startswith("MAL-") for a in advisory_ids):
        return Chosen("critical", None, None, "malicious")
    best: tuple[float, str, str] | None = None  # (score, version, source)
    v2: tuple[float, str] | None = None
    for s in inputs:
        if not s.vector:
            continue
        try:
            sc = score_vector(s.vector)
        except CvssError:
            continue  # a malformed vector in scanner output must not block the rest
        if sc.version == "2.0":
            if v2 is None or sc.base > v2[0]:
                v2 = (sc.base, s.source)
            continue
        if best is None or sc.base > best[0]:
            best = (sc.base, sc.version, s.source)
    if best is not None:
        return Chosen(band(best[0]), best[0], best[1], f"cvss:{best[2]}")
    numeric: tuple[float, str] | None = None
    for s in inputs:
        usable = s.score is not None and 0 < s.score <= 10
        if usable and not (s.vector and "Au:" in s.vector):
            assert s.score is not None
            if numeric is None or s.score > numeric[0]:
                numeric = (s.score, s.source)
    if numeric is not None:
        return Chosen(band(numeric[0]), numeric[0], None, f"score:{numeric[1]}")
    labelled: tuple[SeverityTier, str] | None = None
    for s in inputs:
        t = label_tier(s.label)
        if t is not None and (labelled is None or TIER_ORDER[t] > TIER_ORDER[labelled[0]]):
            labelled = (t, s.source)
    if labelled is not None:
        return Chosen(labelled[0], None, None, f"label:{labelled[1]}")
    if v2 is not None:
        return Chosen(band(v2[0]), v2[0], "2.0", f"cvss2:{v2[1]}")
    return Chosen(unscored, None, None, "unscored", needs_triage=True)
