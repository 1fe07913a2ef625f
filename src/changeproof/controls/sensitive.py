"""CM-REV-4: changes touching sensitive path classes need M independent approvals from the
designated team, with team membership as it stood at the merge.

Membership comes from the latest ``TeamMembership`` snapshot observed at or before the merge;
without one, from ``[teams]`` in the settings. A snapshot taken only after the merge does not
say who was a member at the merge, so it is not used (membership changing after the merge
changes nothing). Old and new names of renamed files both count.
"""

from __future__ import annotations

import bisect
from datetime import datetime

from changeproof.controls.base import Context
from changeproof.controls.facts import ChangeFacts, classes_of
from changeproof.controls.prepared import occurred_times, prepared
from changeproof.controls.review import MAX_FILES, ChangeControl
from changeproof.evidence import TeamMembership
from changeproof.outcomes import FAIL, INDETERMINATE, NOT_APPLICABLE, PASS, Outcome, Result, worst
from changeproof.settings import SensitivePaths, Settings, path_matches

Members = tuple[frozenset[str] | None, str, tuple[str, ...]]

# (id(snapshot), team) → (snapshot, digest, members_at's answer under it): every change merged
# while one membership snapshot was the latest asks the same (keyed by identity, checked)
_BY_SNAPSHOT: dict[tuple[int, str], tuple[TeamMembership, str, Members]] = {}


def _observed(team: str, dig: str, snap: TeamMembership) -> Members:
    key = (id(snap), team)
    hit = _BY_SNAPSHOT.get(key)
    if hit is not None and hit[0] is snap and hit[1] == dig:
        return hit[2]
    out: Members = (
        frozenset(m.lower() for m in snap.members),
        f"team {team} as observed {snap.provenance.occurred_at.isoformat()}",
        (dig,),
    )
    if len(_BY_SNAPSHOT) >= 4096:
        _BY_SNAPSHOT.clear()
    _BY_SNAPSHOT[key] = (snap, dig, out)
    return out


def members_at(team: str, ctx: Context, at: datetime) -> Members:
    """(lower-cased members or None if unknown, where from, evidence digests) as at ``at``."""
    snaps: tuple[tuple[str, TeamMembership], ...] = ctx.teams.get(team, ())
    i = bisect.bisect_right(occurred_times(snaps), at) if snaps else 0
    if i:
        dig, snap = snaps[i - 1]
        return _observed(team, dig, snap)
    configured = prepared(ctx.settings).team(team)
    if configured is not None:
        return configured, f"team {team} from the settings", ()
    if snaps:
        return (
            None,
            f"team {team}: the first membership snapshot "
            f"({snaps[0][1].provenance.occurred_at.isoformat()}) is after the merge",
            (),
        )
    return None, f"team {team} has no known members (no snapshot, empty in the settings)", ()


def matched_classes(
    paths: tuple[str, ...], classes: tuple[SensitivePaths, ...]
) -> list[tuple[SensitivePaths, list[str]]]:
    out: list[tuple[SensitivePaths, list[str]]] = []
    for sp in classes:
        hit = [p for p in paths if path_matches(p, sp.patterns)]
        if hit:
            out.append((sp, hit))
    return out


def sensitive_hits(f: ChangeFacts, settings: Settings) -> list[tuple[SensitivePaths, list[str]]]:
    """``matched_classes(f.paths, settings.sensitive_paths)``, from the paths' class bits."""
    prep, bits, union = classes_of(f, settings)
    hits: list[tuple[SensitivePaths, list[str]]] = []
    if union & prep.sensitive_mask and f.paths is not None and bits is not None:
        for i, sp in enumerate(settings.sensitive_paths):
            if union >> i & 1:
                hits.append((sp, [p for p, b in zip(f.paths, bits, strict=True) if b >> i & 1]))
    return hits


class SensitivePathApproval(ChangeControl):
    id = "CM-REV-4"

    def judge(self, f: ChangeFacts, ctx: Context, digest: str) -> Result:
        c = f.change
        if c.change_type == "initial":
            return self.res(f, NOT_APPLICABLE, ["the repository's initial commit"], digest)
        if c.files_total is not None and c.files_total > MAX_FILES:
            return self.res(
                f,
                INDETERMINATE,
                [
                    f"{c.files_total} files changed: past {MAX_FILES} the forge cannot list them "
                    "all, so whether sensitive paths were touched cannot be judged"
                ],
                digest,
            )
        if f.paths is None:
            return self.res(f, INDETERMINATE, ["the changed files were not collected"], digest)
        truncated = (
            c.files is not None and c.files_total is not None and c.files_total > len(c.files)
        )
        prep = f.prep
        # sensitive_hits(f, ctx.settings), without the call when no path is sensitive
        if prep.settings is ctx.settings and not f.path_union & prep.sensitive_mask:
            hits: list[tuple[SensitivePaths, list[str]]] = []
        else:
            hits = sensitive_hits(f, ctx.settings)
        if not hits:
            if truncated:
                return self.res(
                    f,
                    INDETERMINATE,
                    [
                        f"only {len(c.files or ())} of {c.files_total} changed files were "
                        "collected; none listed is sensitive"
                    ],
                    digest,
                )
            return self.res(f, NOT_APPLICABLE, ["no sensitive paths touched"], digest)
        if c.change_type == "direct_push":
            return self.res(
                f,
                FAIL,
                [
                    f"pushed directly, touching {sp.name}: {', '.join(sorted(p)[:5])}"
                    for sp, p in hits
                ],
                digest,
            )
        if c.reviews is None:
            return self.res(
                f,
                INDETERMINATE,
                [
                    "sensitive paths touched ("
                    + ", ".join(sp.name for sp, _ in hits)
                    + ") but no review evidence was collected"
                ],
                digest,
            )
        outcomes: list[Outcome] = []
        reasons: list[str] = []
        evidence: list[str] = [digest]
        counted = f.independent
        for sp, paths in hits:
            shown = ", ".join(sorted(paths)[:5]) + (
                f" (+{len(paths) - 5})" if len(paths) > 5 else ""
            )
            members, source, ev = members_at(sp.team, ctx, c.merged_at)
            evidence.extend(ev)
            if members is None:
                outcomes.append(INDETERMINATE)
                reasons.append(f"{sp.name} ({shown}): {source}")
                continue
            ok = sorted({a.name for a in counted if a.review.reviewer.keys() & members})
            not_counted = sorted(
                {
                    f"{a.name} ({a.why_not()})"
                    for a in f.approvals
                    if not a.counts and a.review.reviewer.keys() & members
                }
            )
            line = (
                f"{sp.name} ({shown}): {len(ok)} of {sp.approvals} independent approval(s) from "
                f"{source}" + (f": {', '.join(ok)}" if ok else "")
            )
            if not_counted:
                line += "; not counted: " + ", ".join(not_counted)
            outcomes.append(PASS if len(ok) >= sp.approvals else FAIL)
            reasons.append(line)
        result = worst(outcomes)
        if truncated and result is PASS:
            result = INDETERMINATE
            reasons.append(
                f"only {len(c.files or ())} of {c.files_total} changed files were collected: "
                "other sensitive classes may be touched"
            )
        return self.result(f.cid, result, reasons, repo=c.repo, evidence=tuple(evidence))
