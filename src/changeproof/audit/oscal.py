"""OSCAL assessment plan and assessment results for the package (an extra format).

Follows the mapping in the GRC reference (§5.8): the plan declares the reviewed controls, the
sampled changes as subjects and the methodology and sampling as terms-and-conditions parts;
the results carry one observation per sampled change × attribute (method TEST, subjects
pointing at back-matter resources whose rlinks carry SHA-256 hashes) and one finding per
control. UUIDs are version-5, derived from the package's content, so the same audit gives the
same documents. Validated in the tests against the NIST JSON schemas in the shared corpus.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from changeproof.audit.population import Population, iso
from changeproof.settings import Settings

if TYPE_CHECKING:
    from changeproof.audit.package import AuditRequest, Sampled

# The version of the NIST schemas these documents are validated against (shared corpus).
OSCAL_VERSION = "1.0.6"
NS = "https://changeproof.dev/ns/oscal"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def documents(
    req: AuditRequest,
    settings: Settings,
    pop: Population,
    plans: dict[str, dict[str, object]],
    sampled: list[Sampled],
    attributes: list[str],
    audit: dict[str, Any],
    root: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    from changeproof import controls

    base = uuid.uuid5(
        uuid.NAMESPACE_URL, f"changeproof-audit:{pop.csv_sha256}:{req.period_text}:{iso(req.now)}"
    )

    def u(name: str) -> str:
        return str(uuid.uuid5(base, name))

    now = iso(req.now)
    defs = {c.id: c.definition for c in controls.ALL_CONTROLS}
    org = settings.organisation.name

    def metadata(title: str) -> dict[str, Any]:
        return {
            "title": title,
            "last-modified": now,
            "version": f"changeproof-{audit['tool_version']}",
            "oscal-version": OSCAL_VERSION,
            "props": [
                {"name": "tool", "ns": NS, "value": f"changeproof {audit['tool_version']}"},
                {"name": "operator", "ns": NS, "value": req.operator},
            ],
            "parties": [{"uuid": u("party:org"), "type": "organization", "name": org}],
        }

    # back-matter: the settings (in place of an SSP), the population, and each sampled change
    def resource(key: str, title: str, rel: str, media: str) -> dict[str, Any]:
        return {
            "uuid": u(key),
            "title": title,
            "rlinks": [
                {
                    "href": f"../{rel}",
                    "media-type": media,
                    "hashes": [{"algorithm": "SHA-256", "value": _sha(root / rel)}],
                }
            ],
        }

    resources = [
        resource(
            "res:settings",
            "Change-management settings in force (stands in for the SSP)",
            "settings/effective-settings.json",
            "application/json",
        ),
        resource(
            "res:population",
            "Population of changes (canonical CSV)",
            "population/population.csv",
            "text/csv",
        ),
        resource("res:worksheet", "Attribute worksheet", "worksheet.csv", "text/csv"),
    ]
    policy = audit["policy"]
    for v in policy["in_force_during_period"]:
        if v["text_file"]:
            resources.append(
                resource(
                    f"res:policy:{v['document_sha256']}",
                    f"Change Management Policy version {v['version']} as approved by "
                    f"{v['approver']} on {v['approved_at']}",
                    v["text_file"],
                    "text/markdown",
                )
            )
    for s in sampled:
        resources.append(
            resource(
                f"res:change:{s.row.id}",
                f"Evidence page for {s.row.id}",
                f"changes/{s.slug}.html",
                "text/html",
            )
        )

    control_ids = list(defs)
    reviewed: dict[str, Any] = {
        "control-selections": [{"include-controls": [{"control-id": cid} for cid in control_ids]}]
        if control_ids
        else [{"include-all": {}}]
    }
    sampling_props = [
        {"name": "population-count", "ns": NS, "value": str(len(pop.rows))},
        {"name": "population-sha256", "ns": NS, "value": pop.csv_sha256},
    ]
    for name, p in plans.items():
        sampling_props.append(
            {"name": "sample-size", "ns": NS, "class": name, "value": str(p["size"])}
        )
        sampling_props.append(
            {"name": "sampling-method", "ns": NS, "class": name, "value": str(p["method"])}
        )
        if p.get("seed") is not None:
            sampling_props.append(
                {"name": "seed", "ns": NS, "class": name, "value": str(p["seed"])}
            )
        if p.get("risk_of_overreliance") is not None:
            sampling_props.append(
                {
                    "name": "risk-of-overreliance",
                    "ns": NS,
                    "class": name,
                    "value": str(p["risk_of_overreliance"]),
                }
            )
            sampling_props.append(
                {
                    "name": "tolerable-deviation-rate",
                    "ns": NS,
                    "class": name,
                    "value": str(p["tolerable_deviation_rate"]),
                }
            )
    subjects: list[dict[str, Any]] = (
        [
            {
                "type": "resource",
                "description": "The sampled changes; each subject is the evidence page of one change.",
                "include-subjects": [
                    {"subject-uuid": u(f"res:change:{s.row.id}"), "type": "resource"}
                    for s in sampled
                ],
            }
        ]
        if sampled
        else []
    )
    ap_body: dict[str, Any] = {
        "uuid": u("ap"),
        "metadata": metadata(f"Change-management assessment plan — {org}"),
        "import-ssp": {"href": f"#{u('res:settings')}"},
        "reviewed-controls": reviewed,
        "terms-and-conditions": {
            "parts": [
                {
                    "name": "methodology",
                    "title": "Methodology",
                    "prose": (
                        f"Every change landed on a controlled branch between {iso(req.start)} and {iso(req.end)} "
                        "(end exclusive) forms the population, reconciled against branch history, production "
                        "deployments and ticket references. Each sampled change is tested against every "
                        "control's pass criterion (see the controls in the package)."
                    ),
                },
                {
                    "name": "sampling",
                    "title": "Sampling",
                    "props": sampling_props,
                    "prose": (
                        "Zero-deviation attribute sampling: n = ceil(ln(risk) / ln(1 - tolerable rate)) with the "
                        "finite-population (hypergeometric) correction, or a size or list the auditor gave. "
                        "Changes are ranked by SHA-256(seed || change id) and the lowest n are taken. Emergency "
                        "changes are a separate population."
                    ),
                },
            ]
        },
        "back-matter": {"resources": resources},
    }
    if subjects:
        ap_body["assessment-subjects"] = subjects
    ap = {"assessment-plan": ap_body}

    observations: list[dict[str, Any]] = []
    by_control: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for s in sampled:
        for a in attributes:
            outcome, reason = s.cells[a]
            oid = u(f"obs:{s.row.id}:{a}")
            by_control[a].append((oid, outcome))
            observations.append(
                {
                    "uuid": oid,
                    "title": f"{a} on {s.row.id}",
                    "description": f"{a}: {outcome}. {reason}".strip(),
                    "props": [
                        {"name": "outcome", "ns": NS, "value": outcome},
                        {"name": "control-id", "ns": NS, "value": a},
                        {"name": "change-id", "ns": NS, "value": s.row.id},
                    ],
                    "methods": ["TEST"],
                    "types": ["control-objective"],
                    "subjects": [{"subject-uuid": u(f"res:change:{s.row.id}"), "type": "resource"}],
                    "relevant-evidence": [
                        {
                            "href": f"../changes/{s.slug}.html",
                            "description": f"Evidence page for {s.row.id}",
                        }
                    ],
                    "collected": iso(s.change.provenance.collected_at),
                }
            )
    findings = []
    for a in attributes:
        obs = by_control.get(a, [])
        bad = [o for o, out in obs if out in ("fail", "indeterminate")]
        title = defs[a].title if a in defs else a
        finding: dict[str, Any] = {
            "uuid": u(f"finding:{a}"),
            "title": f"{a} — {title}",
            "description": (
                f"{len(bad)} deviation(s) in {len(obs)} sampled change(s)."
                if obs
                else "No sampled change."
            ),
            "target": {
                "type": "objective-id",
                "target-id": a,
                "status": {
                    "state": "not-satisfied" if bad else "satisfied",
                    "reason": "fail" if bad else "pass",
                },
            },
        }
        if obs:
            finding["related-observations"] = [{"observation-uuid": o} for o, _ in obs]
        findings.append(finding)
    # the policy's approval (issue: the version in force, and settings changed without a new
    # approval) and the locker's verification are judged over the period, not per change
    policy_obs: list[str] = []
    for i, f in enumerate(policy["findings"]):
        oid = u(f"obs:policy:{i}:{f['code']}")
        policy_obs.append(oid)
        observations.append(
            {
                "uuid": oid,
                "title": f"Policy approval: {f['code']}",
                "description": f"{f['message']} What to do: {f['hint']}",
                "props": [{"name": "policy-finding", "ns": NS, "value": f["code"]}],
                "methods": ["EXAMINE"],
                "types": ["finding"],
                "relevant-evidence": [
                    {
                        "href": "../reconciliation/policy-findings.csv",
                        "description": "Policy approval findings",
                    }
                ],
                "collected": now,
            }
        )
        findings.append(
            {
                "uuid": u(f"finding:policy:{i}:{f['code']}"),
                "title": f"Policy approval — {f['code']}",
                "description": f["message"],
                "target": {
                    "type": "objective-id",
                    "target-id": f["code"],
                    "status": {"state": "not-satisfied", "reason": "fail"},
                },
                "related-observations": [{"observation-uuid": oid}],
            }
        )
    if not policy["findings"]:
        versions = policy["in_force_during_period"]
        findings.append(
            {
                "uuid": u("finding:policy"),
                "title": "Policy approval",
                "description": "An approved policy version was in force throughout the period: "
                + "; ".join(
                    f"version {v['version']} approved by {v['approver']} on {v['approved_at']}"
                    for v in versions
                )
                + ".",
                "target": {
                    "type": "objective-id",
                    "target-id": "policy-approval",
                    "status": {"state": "satisfied", "reason": "pass"},
                },
            }
        )
    locker = audit["locker_verification"]
    if "CM-POP-2" not in attributes:
        oid = u("obs:locker")
        observations.append(
            {
                "uuid": oid,
                "title": "Evidence locker verification",
                "description": (
                    f"Hash chain of {locker['entries']} entries and {locker['checkpoints']} "
                    "signed checkpoint(s) "
                    + (
                        "verified."
                        if locker["intact"]
                        else f"does not verify: {'; '.join(locker['problems'][:5])}"
                    )
                ),
                "props": [
                    {"name": "outcome", "ns": NS, "value": "pass" if locker["intact"] else "fail"}
                ],
                "methods": ["TEST"],
                "types": ["control-objective"],
                "collected": now,
            }
        )
        findings.append(
            {
                "uuid": u("finding:CM-POP-2"),
                "title": f"CM-POP-2 — {defs['CM-POP-2'].title if 'CM-POP-2' in defs else 'locker'}",
                "description": "The evidence locker "
                + ("verifies." if locker["intact"] else "does not verify."),
                "target": {
                    "type": "objective-id",
                    "target-id": "CM-POP-2",
                    "status": {
                        "state": "satisfied" if locker["intact"] else "not-satisfied",
                        "reason": "pass" if locker["intact"] else "fail",
                    },
                },
                "related-observations": [{"observation-uuid": oid}],
            }
        )
    result: dict[str, Any] = {
        "uuid": u("result"),
        "title": f"Change-management testing {req.period_text}",
        "description": f"Attribute testing of {len(sampled)} sampled change(s) from a population of {len(pop.rows)}.",
        "start": iso(req.start),
        "end": iso(req.end),
        "reviewed-controls": reviewed,
    }
    if observations:
        result["observations"] = observations
    if findings:
        result["findings"] = findings
    ar = {
        "assessment-results": {
            "uuid": u("ar"),
            "metadata": metadata(f"Change-management assessment results — {org}"),
            "import-ap": {"href": "assessment-plan.json"},
            "results": [result],
            "back-matter": {"resources": resources},
        }
    }
    return ap, ar
