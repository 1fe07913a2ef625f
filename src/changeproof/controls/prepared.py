"""What the change controls derive from the settings, derived once per settings object.

The check asks the same questions of the settings for every change — is this path in a
sensitive class, an infrastructure class, a standard change's paths; is this login a bot;
is this check a security scanner — and the answers depend only on the (frozen) settings and
the asked value. :func:`prepared` builds one :class:`Prepared` per settings object and
memoises the answers by value (paths, logins and check names recur from change to change).
Every answer is computed by the same function the controls would call directly
(:func:`~changeproof.settings.path_matches`, :meth:`~changeproof.settings.Settings.is_not_human`,
:func:`changeproof.controls.testing` glob matching), so the memo can only repeat them.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from changeproof.settings import Settings, lowered_names, path_matches

_MEMO_MAX = 200_000  # entries per memo before it starts over (bounded memory on huge stores)


@functools.lru_cache(maxsize=256)
def check_globs(patterns: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    """Case-insensitive glob match of a check name: one compiled regex per pattern set."""
    rx = "|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or "(?!)"
    return re.compile(rx, re.IGNORECASE).match


class Prepared:
    """Lookups over one :class:`Settings` object (see the module docstring).

    Path classes are bits of one int per path: bit ``i`` for sensitive class ``i``, then
    IaC, IAM and migrations (``iac_shift`` + 0, 1, 2), then standard-change policy ``j``
    (``standard_shift`` + j).
    """

    __slots__ = (
        "_classes",
        "_not_human",
        "_required",
        "_teams",
        "allowed_conclusions",
        "iac_mask",
        "iac_shift",
        "known_checks",
        "known_paths",
        "security",
        "sensitive_mask",
        "settings",
        "standard_shift",
        "web_flow",
    )

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.web_flow = lowered_names(settings.identities.web_flow_committers)
        inf = settings.infrastructure
        classes: list[tuple[str, ...]] = [sp.patterns for sp in settings.sensitive_paths]
        self.sensitive_mask = (1 << len(classes)) - 1
        self.iac_shift = len(classes)
        self.iac_mask = 0b111 << self.iac_shift
        classes += [inf.iac_paths, inf.iam_paths, inf.migration_paths]
        self.standard_shift = len(classes)
        classes += [sc.paths for sc in settings.standard_changes]
        self._classes = tuple(classes)
        t = settings.testing
        # CM-TST-2's classes of security testing, in the order its reasons list them
        self.security: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
            (label, pats)
            for label, pats in (
                ("dependency scanning", t.dependency_scanning_checks),
                ("SAST", t.sast_checks),
            )
            if pats
        )
        self.allowed_conclusions = frozenset(t.allowed_conclusions)
        # path → its class bits (read directly by compute_facts; filled by path_bits)
        self.known_paths: dict[str, int] = {}
        self._not_human: dict[tuple[str | None, str], bool] = {}
        # check name → its security class bits (read directly by CM-TST-2; filled by
        # security_bits)
        self.known_checks: dict[str, int] = {}
        self._teams: dict[str, frozenset[str] | None] = {}
        # risk → the approvals required; only without [[rules]], which alone read the
        # repository and the paths
        self._required: dict[str | None, int] | None = None if settings.rules else {}

    def path_bits(self, path: str) -> int:
        bits = self.known_paths.get(path)
        if bits is None:
            if len(self.known_paths) >= _MEMO_MAX:
                self.known_paths.clear()
            bits = 0
            for i, pats in enumerate(self._classes):
                if path_matches(path, pats):
                    bits |= 1 << i
            self.known_paths[path] = bits
        return bits

    def required_approvals(self, repo: str, paths: tuple[str, ...] | None, risk: str | None) -> int:
        """``settings.required_approvals(repo, paths or (), risk)``."""
        memo = self._required
        if memo is None:
            return self.settings.required_approvals(repo, paths or (), risk)
        n = memo.get(risk)
        if n is None:
            n = memo[risk] = self.settings.required_approvals(repo, paths or (), risk)
        return n

    def team(self, name: str) -> frozenset[str] | None:
        """The lower-cased members of a team as the settings configure it (None when the
        settings leave it empty or do not name it)."""
        try:
            return self._teams[name]
        except KeyError:
            pass
        configured = self.settings.teams.get(name)
        out = frozenset(m.lower() for m in configured) if configured else None
        self._teams[name] = out
        return out

    def not_human(self, login: str | None, actor_type: str) -> bool:
        key = (login, actor_type)
        hit = self._not_human.get(key)
        if hit is None:
            if len(self._not_human) >= _MEMO_MAX:
                self._not_human.clear()
            hit = self._not_human[key] = self.settings.is_not_human(login, actor_type)
        return hit

    def security_bits(self, check_name: str) -> int:
        """Bit ``i`` set when the check name matches :attr:`security` class ``i``."""
        bits = self.known_checks.get(check_name)
        if bits is None:
            if len(self.known_checks) >= _MEMO_MAX:
                self.known_checks.clear()
            bits = 0
            for i, (_, pats) in enumerate(self.security):
                if check_globs(pats)(check_name) is not None:
                    bits |= 1 << i
            self.known_checks[check_name] = bits
        return bits


# id(settings) → (settings, prepared): keyed by identity and checked (the entry keeps the
# settings alive, so its id cannot be reused while cached); a new settings object is new.
_PREPARED: dict[int, tuple[Settings, Prepared]] = {}


def prepared(settings: Settings) -> Prepared:
    hit = _PREPARED.get(id(settings))
    if hit is not None and hit[0] is settings:
        return hit[1]
    if len(_PREPARED) >= 16:
        _PREPARED.clear()
    p = Prepared(settings)
    _PREPARED[id(settings)] = (settings, p)
    return p


# id(records) → (records, each one's provenance.occurred_at): the times that controls bisect
# for the record in force at a merge (protection and team snapshots; the context's tuples
# live as long as the check, so a change asks about the same tuple as the last)
_TIMES: dict[int, tuple[Sequence[tuple[str, Any]], list[datetime]]] = {}


def occurred_times(records: Sequence[tuple[str, Any]]) -> list[datetime]:
    """``[r.provenance.occurred_at for _, r in records]``, memoised by identity (of a tuple:
    a list could change under the same identity)."""
    if type(records) is not tuple:
        return [r.provenance.occurred_at for _, r in records]
    hit = _TIMES.get(id(records))
    if hit is not None and hit[0] is records:
        return hit[1]
    times = [r.provenance.occurred_at for _, r in records]
    if len(_TIMES) >= 4096:
        _TIMES.clear()
    _TIMES[id(records)] = (records, times)
    return times


_encode = msgspec.json.Encoder().encode


def _iso_utc(value: datetime) -> str:
    # msgspec writes a UTC datetime as isoformat() does but with "Z" for "+00:00" (checked
    # below, at import), at a tenth of isoformat's cost
    return _encode(value)[1:-2].decode() + "+00:00"


_ISO_FAST = all(
    _iso_utc(d) == d.isoformat()
    for d in (
        datetime(2025, 3, 1, 10, 0, tzinfo=UTC),
        datetime(2025, 3, 1, 10, 0, 5, 120000, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
    )
)


def iso(value: datetime) -> str:
    """``value.isoformat()``: a UTC datetime (as records decode) through msgspec's encoder."""
    if value.tzinfo is UTC and _ISO_FAST:
        return _iso_utc(value)
    return value.isoformat()
