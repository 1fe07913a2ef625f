"""Terraform plan JSON (``terraform show -json PLAN``), format_version 0.x and 1.x.

Field paths follow hashicorp/terraform ``internal/command/jsonplan/plan.go``. The parser is
strict about what the file *is* (a plan, not a state file or the binary plan) and lenient
about what it may omit (``resource_changes`` and ``resource_drift`` are ``omitempty``).

Values marked sensitive (``before_sensitive``/``after_sensitive``) are masked before anything
is stored: the locker keeps a masked projection of the plan, never the file itself, and the
``digest`` of the whole canonical document is what binds an apply to the reviewed plan.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any, Literal

import msgspec

from changeproof.errors import InputFormatError
from changeproof.evidence import DriftItem, PlanAction, ResourceChangeInfo, canonical_json

SHOW_JSON = "terraform show -json PLAN > plan.json"
MAKE_PLAN = "terraform plan -out=PLAN && terraform show -json PLAN > plan.json"
SUPPORTED_MAJORS = (0, 1)
TESTED_UP_TO = (1, 2)
MASK = "(sensitive)"

KNOWN_ACTIONS = frozenset({"no-op", "create", "read", "update", "delete", "forget"})


@dataclass(frozen=True)
class ParsedPlan:
    format_version: str
    terraform_version: str | None
    planned_at: datetime | None
    applyable: bool | None
    complete: bool | None
    errored: bool | None
    digest: str
    changes_digest: str
    file_sha256: str
    counts: dict[str, int]
    resources: tuple[ResourceChangeInfo, ...]
    drift: tuple[DriftItem, ...]
    moved: tuple[str, ...]
    masked: bytes  # the masked projection kept in the locker
    notes: tuple[str, ...]

    @property
    def iam(self) -> tuple[str, ...]:
        return tuple(r.address for r in self.resources if r.iam)

    @property
    def destructive(self) -> tuple[str, ...]:
        return tuple(r.address for r in self.resources if r.destructive)


def _bad(name: str, what: str, *, expected: str | None = None, hint: str | None = None) -> None:
    raise InputFormatError(
        f"{name} {what}",
        expected=expected or "the JSON of a saved Terraform plan (format_version 0.1 to 1.2)",
        hint=hint or f"produce it with `{MAKE_PLAN}`",
    )


def load_document(data: bytes, name: str, *, kind: str = "a Terraform plan") -> dict[str, Any]:
    """Decode a JSON object, recognising the usual wrong inputs with a useful message."""
    if not data.strip():
        _bad(name, "is empty")
    if data[:4] == b"PK\x03\x04":
        _bad(
            name,
            "is a binary plan file (the zip archive `terraform plan -out` writes), not its JSON",
            hint=f"convert it with `{SHOW_JSON}` and pass plan.json",
        )
    try:
        doc = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        _bad(name, f"is not JSON ({exc})")
    if not isinstance(doc, dict):
        _bad(name, f"holds a JSON {type(doc).__name__}, not {kind} object")
    return doc  # type: ignore[no-any-return]


def _check_plan_shape(doc: dict[str, Any], name: str) -> str:
    if "lineage" in doc and "serial" in doc:
        _bad(
            name,
            "is a Terraform state file (it has lineage and serial), not a plan",
            hint=f"make a plan and convert it: `{MAKE_PLAN}`",
        )
    if "steps" in doc or "changeSummary" in doc:
        _bad(
            name,
            "looks like `pulumi preview --json` output, not a Terraform plan",
            hint="ingest it with `changeproof ingest pulumi-preview`",
        )
    fv = doc.get("format_version")
    if not isinstance(fv, str):
        _bad(name, "has no format_version: it is not `terraform show -json` output")
    assert isinstance(fv, str)
    plan_keys = {"resource_changes", "planned_values", "resource_drift", "output_changes"}
    if "values" in doc and not plan_keys & doc.keys():
        _bad(
            name,
            "is the JSON of a Terraform state (`terraform show -json` without a plan file), "
            "not of a plan",
            hint=f"pass the saved plan to terraform show: `{MAKE_PLAN}`",
        )
    if not plan_keys & doc.keys() and "prior_state" not in doc:
        _bad(name, "has neither resource_changes nor planned_values: it is not a plan")
    parse_format_version(fv, name)
    return fv


def parse_format_version(fv: str, name: str) -> tuple[int, int]:
    parts = fv.split(".")
    try:
        major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        _bad(name, f"has format_version {fv!r}, which is not MAJOR.MINOR")
        raise AssertionError from None
    if major not in SUPPORTED_MAJORS:
        _bad(
            name,
            f"has plan format_version {fv}; changeproof reads format 0.x and 1.x "
            "(Terraform 0.12 and later, up to 1.2 tested)",
            expected="a plan JSON with format_version 0.1 to 1.2",
            hint=f"produce it with a Terraform 1.x binary: `{SHOW_JSON}`",
        )
    return major, minor


def mask(value: Any, sensitive: Any) -> Any:
    """Replace every value the sensitivity tree marks ``true`` with a fixed marker."""
    if sensitive is True:
        return MASK if value is not None else None
    if not sensitive or b"true" not in msgspec.json.encode(sensitive):
        return value  # nothing below is sensitive (the common case): no copy
    if isinstance(sensitive, dict) and isinstance(value, dict):
        return {k: mask(v, sensitive.get(k, False)) for k, v in value.items()}
    if isinstance(sensitive, list) and isinstance(value, list):
        return [mask(v, sensitive[i] if i < len(sensitive) else False) for i, v in enumerate(value)]
    return value


def _masked_change(rc: dict[str, Any]) -> dict[str, Any]:
    ch = rc.get("change") or {}
    out = {k: v for k, v in rc.items() if k != "change"}
    masked = dict(ch)
    masked["before"] = mask(ch.get("before"), ch.get("before_sensitive", False))
    masked["after"] = mask(ch.get("after"), ch.get("after_sensitive", False))
    out["change"] = masked
    return out


def render_path(steps: Any) -> str:
    """A replace path (list of keys and indexes) as ``a.b[0]``."""
    if not isinstance(steps, list):
        return str(steps)
    out = ""
    for s in steps:
        if isinstance(s, int):
            out += f"[{s}]"
        else:
            out += ("." if out else "") + str(s)
    return out


def normalise_action(actions: tuple[str, ...], rc: dict[str, Any]) -> PlanAction:
    a = set(actions)
    if "create" in a and ("delete" in a or "forget" in a):
        return "replace"
    if actions == ("no-op",):
        ch = rc.get("change") or {}
        if ch.get("importing"):
            return "import"
        prev = rc.get("previous_address")
        if prev and prev != rc.get("address"):
            return "move"
        return "no-op"
    single: dict[tuple[str, ...], PlanAction] = {
        ("create",): "create",
        ("update",): "update",
        ("delete",): "delete",
        ("read",): "read",
        ("forget",): "forget",
    }
    return single[actions]


def is_iam_type(rtype: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(rtype, p) for p in patterns)


def _resource(
    rc: dict[str, Any], name: str, iam_types: Sequence[str]
) -> tuple[ResourceChangeInfo, dict[str, Any]]:
    if not isinstance(rc, dict) or not isinstance(rc.get("address"), str):
        _bad(name, "has a resource change without an address")
    ch = rc.get("change")
    if not isinstance(ch, dict) or not isinstance(ch.get("actions"), list) or not ch["actions"]:
        _bad(name, f"has resource change {rc.get('address')!r} without change.actions")
    assert isinstance(ch, dict)
    actions = tuple(str(x) for x in ch["actions"])
    unknown = [x for x in actions if x not in KNOWN_ACTIONS]
    if unknown:
        _bad(
            name,
            f"has resource change {rc['address']!r} with unknown action(s) {unknown}",
            expected="actions among no-op, create, read, update, delete, forget",
            hint="check the Terraform version; changeproof reads plan format 0.x and 1.x",
        )
    try:
        action = normalise_action(actions, rc)
    except KeyError:
        _bad(name, f"has resource change {rc['address']!r} with actions {list(actions)}")
        raise AssertionError from None
    mode: Literal["managed", "data"] = "data" if rc.get("mode") == "data" else "managed"
    rtype = str(rc.get("type") or "")
    masked = _masked_change(rc)
    importing = ch.get("importing")
    info = ResourceChangeInfo(
        address=rc["address"] + (f" (deposed {rc['deposed']})" if rc.get("deposed") else ""),
        type=rtype,
        mode=mode,
        action=action,
        actions=actions,
        previous_address=rc.get("previous_address") or None,
        action_reason=rc.get("action_reason") or None,
        replace_paths=tuple(render_path(p) for p in ch.get("replace_paths") or ()),
        importing=str(importing.get("id")) if isinstance(importing, dict) else None,
        iam=mode == "managed"
        and action not in ("no-op", "read", "move")
        and is_iam_type(rtype, iam_types),
        destructive=mode == "managed" and bool({"delete", "forget"} & set(actions)),
        digest=hashlib.sha256(canonical_json(masked)).hexdigest(),
    )
    return info, masked


def _parse_time(value: Any, notes: list[str]) -> datetime | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(str(value))
    except ValueError:
        notes.append(f"plan timestamp {value!r} is not RFC 3339; the plan time is unknown")
        return None
    if t.tzinfo is None:
        notes.append(f"plan timestamp {value!r} has no time zone; the plan time is unknown")
        return None
    return t


def _opt_bool(doc: dict[str, Any], key: str) -> bool | None:
    v = doc.get(key)
    return v if isinstance(v, bool) else None


def drift_items(doc: dict[str, Any], name: str) -> tuple[list[DriftItem], list[str], list[Any]]:
    """``resource_drift`` split into real drift and move-only entries (``moved`` blocks)."""
    items: list[DriftItem] = []
    moved: list[str] = []
    masked: list[Any] = []
    for rd in doc.get("resource_drift") or ():
        if not isinstance(rd, dict) or not isinstance(rd.get("address"), str):
            _bad(name, "has a resource_drift entry without an address")
        ch = rd.get("change") or {}
        actions = tuple(str(x) for x in ch.get("actions") or ("no-op",))
        masked.append(_masked_change(rd))
        prev = rd.get("previous_address")
        if actions == ("no-op",):
            if prev and prev != rd["address"]:
                moved.append(f"{prev} → {rd['address']}")
            continue
        items.append(
            DriftItem(address=rd["address"], type=str(rd.get("type") or ""), actions=actions)
        )
    return items, moved, masked


def parse_plan(data: bytes, name: str, iam_types: Sequence[str]) -> ParsedPlan:
    """Parse and summarise one plan JSON file; raise InputFormatError for anything else."""
    doc = load_document(data, name)
    fv = _check_plan_shape(doc, name)
    notes: list[str] = []
    major, minor = parse_format_version(fv, name)
    if (major, minor) > TESTED_UP_TO:
        notes.append(f"plan format {fv} is newer than 1.2, the newest changeproof was tested on")
    rcs = doc.get("resource_changes") or []
    if not isinstance(rcs, list):
        _bad(name, "has resource_changes that is not a list")
    resources: list[ResourceChangeInfo] = []
    masked_rcs: list[Any] = []
    counts: Counter[str] = Counter()
    moved: list[str] = []
    for rc in rcs:
        info, masked = _resource(rc, name, iam_types)
        counts[info.action] += 1
        masked_rcs.append(masked)
        if info.action == "move":
            moved.append(f"{info.previous_address} → {info.address}")
        if info.action != "no-op":
            resources.append(info)
    drift, drift_moved, masked_drift = drift_items(doc, name)
    planned_at = _parse_time(doc.get("timestamp"), notes)
    errored = _opt_bool(doc, "errored")
    if errored:
        notes.append("the plan errored (errored = true): it cannot be applied as is")
    deferred = doc.get("deferred_changes") or ()
    if deferred:
        notes.append(f"{len(deferred)} deferred change(s) are not part of this plan")
    if doc.get("complete") is False:
        notes.append("the plan is incomplete (complete = false): another plan/apply will follow")
    changes_digest = hashlib.sha256(
        canonical_json(sorted((r.address, r.digest) for r in resources))
    ).hexdigest()
    outputs = {}
    for k, oc in (doc.get("output_changes") or {}).items():
        if isinstance(oc, dict):
            outputs[k] = {
                **oc,
                "before": mask(oc.get("before"), oc.get("before_sensitive", False)),
                "after": mask(oc.get("after"), oc.get("after_sensitive", False)),
            }
    full_digest = hashlib.sha256(canonical_json(doc)).hexdigest()
    file_sha = hashlib.sha256(data).hexdigest()
    projection = {
        "changeproof": "masked projection of a Terraform plan",
        "digest": full_digest,
        "file_sha256": file_sha,
        "format_version": fv,
        "terraform_version": doc.get("terraform_version"),
        "timestamp": doc.get("timestamp"),
        "applyable": doc.get("applyable"),
        "complete": doc.get("complete"),
        "errored": doc.get("errored"),
        "resource_changes": masked_rcs,
        "resource_drift": masked_drift,
        "output_changes": outputs,
    }
    tv = doc.get("terraform_version")
    return ParsedPlan(
        format_version=fv,
        terraform_version=str(tv) if tv is not None else None,
        planned_at=planned_at,
        applyable=_opt_bool(doc, "applyable"),
        complete=_opt_bool(doc, "complete"),
        errored=errored,
        digest=full_digest,
        changes_digest=changes_digest,
        file_sha256=file_sha,
        counts=dict(sorted(counts.items())),
        resources=tuple(resources),
        drift=tuple(drift),
        moved=tuple(moved + drift_moved),
        masked=canonical_json(projection),
        notes=tuple(notes),
    )


def pending_items(plan: ParsedPlan) -> list[DriftItem]:
    """Resource changes of a normal-mode plan as "pending" drift: the infrastructure does not
    match the committed configuration (moves and reads excluded)."""
    return [
        DriftItem(address=r.address, type=r.type, actions=r.actions, cause="pending")
        for r in plan.resources
        if r.mode == "managed" and r.action not in ("move", "read", "no-op", "import")
    ]
