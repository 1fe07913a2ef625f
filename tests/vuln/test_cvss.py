"""CVSS base scores from the official formulas, against vectors with published scores."""

from __future__ import annotations

import pytest

from changeproof.vuln.cvss import (
    CvssError,
    _roundup_31,
    band,
    score_v2,
    score_v3,
    score_v4,
    score_vector,
)
from changeproof.vuln.cvss4_table import MACROVECTOR_SCORES

# CVSS v3.1 specification, examples document (section 3) and NVD records
V3 = [
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),  # CVE-2014-6271 Shellshock
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", 7.5),  # CVE-2014-0160 Heartbleed
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),  # CVE-2013-1937 phpMyAdmin XSS
    ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:L/A:N", 6.4),  # CVE-2013-0375 MySQL
    ("CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N", 3.1),  # CVE-2014-3566 POODLE
    ("CVSS:3.1/AV:L/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),  # no impact
    ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L", 5.3),  # npm audit corpus (GHSA)
    ("CVSS:3.1/AV:N/AC:L/PR:L/UI:R/S:C/C:L/I:L/A:H", 8.2),  # Grype golden, labelled "Low"
    ("CVSS:3.1/AV:N/AC:H/PR:L/UI:N/S:C/C:H/I:H/A:H", 8.5),  # Grype golden
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:U/RL:O/RC:R", 9.8),  # temporal ignored
]

# CVSS v4.0: FIRST calculator / GitHub advisory database values
V4 = [
    ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", 9.3),
    ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:N/VA:N/SC:N/SI:N/SA:N", 8.7),  # GitHub REST example
    ("CVSS:4.0/AV:L/AC:L/AT:N/PR:N/UI:P/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", 8.5),  # GitHub REST example
    ("CVSS:4.0/AV:N/AC:L/AT:P/PR:N/UI:N/VC:L/VI:L/VA:N/SC:N/SI:N/SA:N", 6.3),
    ("CVSS:4.0/AV:P/AC:H/AT:P/PR:H/UI:A/VC:L/VI:N/VA:N/SC:N/SI:N/SA:N", 1.0),
    ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:N/SI:N/SA:N", 0.0),
]


@pytest.mark.parametrize(("vector", "expected"), V3)
def test_v3_base_scores(vector: str, expected: float) -> None:
    assert score_v3(vector).base == expected
    assert score_vector(vector).base == expected


@pytest.mark.parametrize(("vector", "expected"), V4)
def test_v4_base_scores(vector: str, expected: float) -> None:
    assert score_v4(vector).base == expected


def test_v4_threat_metrics_are_stripped_before_tiering() -> None:
    v = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:U"
    assert score_v4(v, base_only=False).base == 8.1  # CVSS-BT: exploit maturity "unreported"
    assert score_v4(v).base == 9.3  # the deadline tier uses CVSS-B: still critical
    assert band(score_v4(v).base) == "critical"


def test_v4_full_vector_with_environmental_metrics() -> None:
    # the FIRST reference calculator's documented example
    v = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:L/SC:N/SI:N/SA:N/E:A/MAV:A"
    assert score_v4(v, base_only=False).base == 8.7
    safety = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H/MSI:S/MSA:S"
    assert score_v4(safety, base_only=False).base == 10.0


def test_v2_base_scores() -> None:
    assert score_v2("AV:N/AC:L/Au:N/C:C/I:C/A:C").base == 10.0
    assert score_v2("AV:L/AC:L/Au:N/C:P/I:P/A:P").base == 4.6  # CVE-2020-27350 (Trivy corpus)
    assert score_v2("AV:L/AC:L/Au:N/C:N/I:P/A:N").base == 2.1  # CVE-2004-0971 (Grype corpus)


def test_roundup_avoids_float_artefacts() -> None:
    assert _roundup_31(4.000000000000001) == 4.0
    assert _roundup_31(4.02) == 4.1
    assert _roundup_31(4.0) == 4.0


def test_macrovector_table_is_complete() -> None:
    assert len(MACROVECTOR_SCORES) == 270
    assert MACROVECTOR_SCORES["000000"] == 10.0
    assert MACROVECTOR_SCORES["212221"] == 0.1


@pytest.mark.parametrize(
    ("score", "expected"),
    [(0.0, "none"), (0.1, "low"), (3.9, "low"), (4.0, "medium"), (6.9, "medium"),
     (7.0, "high"), (8.9, "high"), (9.0, "critical"), (10.0, "critical")],
)  # fmt: skip
def test_bands(score: float, expected: str) -> None:
    assert band(score) == expected


@pytest.mark.parametrize(
    "vector",
    [
        "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",  # v3 without its CVSS:3.x/ prefix
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",  # missing A
        "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",  # bad value
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N",  # missing SA
        "CVSS:4.0/AC:L/AV:N/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",  # out of order
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:Q",
        "CVSS:5.0/AV:N",
        "not a vector",
    ],
)
def test_malformed_vectors_are_refused(vector: str) -> None:
    with pytest.raises(CvssError):
        score_vector(vector)
