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
from changeproof.controls.facts import ChangeFacts
from changeproof.controls.review import MAX_FILES, ChangeControl
from changeproof.evidence import TeamMembership
from changeproof.outcomes import Outcome, Result, worst
from changeproof.settings import SensitivePaths, path_matches


def members_at(
    team: str, ctx: Context, at: datetime
) -> tuple[frozenset[str] | None, str, tuple[str, ...]]:
    """(lower-cased members or None if unknown, where from, evidence digests) as at ``at``."""
    snaps: tuple[tuple[str, TeamMembership], ...] = ctx.teams.get(team, ())
    i = bisect.bisect_right(snaps, at, key=lambda x: x[1].provenance.occurred_at)
    if i:
        dig, snap = snaps[i - 1]
        return (
            frozenset(m.lower() for m in snap.members),
            f"team {team} as observed {snap.provenance.occurred_at.isoformat()}",
            (dig,),
        )
    configured = ctx.settings.teams.get(team)
    if configured:
        return frozenset(m.lower() for m in configured), f"team {team} from the settings", ()
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


class SensitivePathApproval(ChangeControl):
    id = "CM-REV-4"

    def judge(self, f: ChangeFacts, ctx: Context, digest: str) -> Result:
        c = f.change
        if c.change_type == "initial":
            return self.res(f, Outcome.NOT_APPLICABLE, ["the repository's initial commit"], digest)
        if c.files_total is not None and c.files_total > MAX_FILES:
            return self.res(
                f,
                Outcome.INDETERMINATE,
                [
                    f"{c.files_total} files changed: past {MAX_FILES} the forge cannot list them "
                    "all, so whether sensitive paths were touched cannot be judged"
                ],
                digest,
            )
        if f.paths is None:
            return self.res(
                f, Outcome.INDETERMINATE, ["the changed files were not collected"], digest
            )
        truncated = (
            c.files is not None and c.files_total is not None and c.files_total > len(c.files)
        )
        hits = matched_classes(f.paths, ctx.settings.sensitive_paths)
        if not hits:
            if truncated:
                return self.res(
                    f,
                    Outcome.INDETERMINATE,
                    [
                        f"only {len(c.files or ())} of {c.files_total} changed files were "
                        "collected; none listed is sensitive"
                    ],
                    digest,
                )
            return self.res(f, Outcome.NOT_APPLICABLE, ["no sensitive paths touched"], digest)
        if c.change_type == "direct_push":
            return self.res(
                f,
                Outcome.FAIL,
                [
                    f"pushed directly, touching {sp.name}: {', '.join(sorted(p)[:5])}"
                    for sp, p in hits
                ],
                digest,
            )
        if c.reviews is None:
            return self.res(
                f,
                Outcome.INDETERMINATE,
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
                outcomes.append(Outcome.INDETERMINATE)
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
            outcomes.append(Outcome.PASS if len(ok) >= sp.approvals else Outcome.FAIL)
            reasons.append(line)
        result = worst(outcomes)
        if truncated and result is Outcome.PASS:
            result = Outcome.INDETERMINATE
            reasons.append(
                f"only {len(c.files or ())} of {c.files_total} changed files were collected: "
                "other sensitive classes may be touched"
            )
        return self.result(c.id, result, reasons, repo=c.repo, evidence=tuple(evidence))
