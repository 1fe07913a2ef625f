"""What every scanner parser shares: typed decoding, errors that name the file and the JSON
path, the parse context, and the result shape.

Parsers decode with msgspec into typed structs that name only the fields they use (fast, and a
file of the wrong kind fails on a missing required field with its path). They build
:class:`~changeproof.evidence.FindingObservation` records directly: no intermediate dicts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from changeproof.errors import InputFormatError
from changeproof.evidence import (
    FindingCategory,
    FindingObservation,
    FindingStatus,
    FixState,
    SeverityInput,
    SeverityTier,
)
from changeproof.vuln.identity import norm_ecosystem, norm_package
from changeproof.vuln.severity import choose_cached

T = TypeVar("T")
# a scanner file's bytes: read into memory, or a view of them where a parser process read
# them (its buffer shared with the parent, so they are not copied once more)
Data = bytes | memoryview
_replace = msgspec.structs.replace


def _any_mal(ids: tuple[str, ...] | list[str]) -> bool:
    return any(a[:4].upper() == "MAL-" for a in ids)


_PATH_RE = re.compile(r" - at `(?P<path>[^`]*)`$")
_BYTE_RE = re.compile(r"\(byte (?P<pos>\d+)\)")


@dataclass
class ParseContext:
    """Everything a parser needs besides the bytes: who, when, and where the bytes came from."""

    file: str
    repo: str
    scan_id: str
    raw_sha256: str
    now: datetime
    scanned_at: datetime | None = None  # --scanned-at, which beats the scanner's own time
    target: str | None = None  # --target, for formats that do not name what they scanned
    unscored: SeverityTier = "medium"
    _when: datetime | None = None
    _n: int = 0
    # per-scan memos of normalised names (ecosystem → normalised; (package, ecosystem) → name)
    _eco: dict[str, str] = field(default_factory=dict)
    _pkg: dict[tuple[str, str], str] = field(default_factory=dict)
    _template: FindingObservation | None = None

    def settle_time(self, scanner_time: datetime | None) -> tuple[datetime, str]:
        if self.scanned_at is not None:
            when, src = self.scanned_at, "option"
        elif scanner_time is not None:
            when, src = scanner_time, "scanner"
        else:
            when, src = self.now, "ingest"
        self._when = when
        return when, src

    @property
    def when(self) -> datetime:
        assert self._when is not None, "settle_time() first"
        return self._when

    def finding(
        self,
        scanner: str,
        *,
        advisory_id: str,
        severities: tuple[SeverityInput, ...] | list[SeverityInput] = (),
        aliases: tuple[str, ...] | list[str] = (),
        package: str = "",
        ecosystem: str = "",
        category: FindingCategory = "dependency",
        version: str | None = None,
        target: str = "",
        manifest: str | None = None,
        title: str = "",
        url: str | None = None,
        fixed_versions: tuple[str, ...] = (),
        fix_state: FixState = "unknown",
        status: FindingStatus = "open",
        status_reason: str | None = None,
        status_at: datetime | None = None,
        alert_created_at: datetime | None = None,
        known_exploited: bool = False,
    ) -> FindingObservation:
        # called once per finding (millions per ingest): explicit parameters rather than
        # **kwargs, and the per-scan memos below instead of repeated normalisation
        when = self._when
        assert when is not None, "settle_time() first"
        sev = severities if type(severities) is tuple else tuple(severities)
        # other ids of the advisory (sorted, without itself) and whether any is a MAL-* id
        mal = advisory_id[:4].upper() == "MAL-"
        if not aliases:
            other: tuple[str, ...] = ()
        elif len(aliases) == 1:
            a = aliases[0]
            other = (a,) if a and a != advisory_id else ()
            mal = mal or a[:4].upper() == "MAL-"
        else:
            other = tuple(sorted({a for a in aliases if a and a != advisory_id}))
            mal = mal or _any_mal(other)
        chosen = choose_cached(sev, mal, self.unscored)
        self._n += 1
        eco = self._eco.get(ecosystem)
        if eco is None:
            eco = self._eco[ecosystem] = norm_ecosystem(ecosystem)
        if category == "dependency":
            pk = (package, eco)
            npkg = self._pkg.get(pk)
            if npkg is None:
                npkg = self._pkg[pk] = norm_package(package, eco)
        else:
            npkg = package  # code/config/secret findings are located by file path: keep its case
        tpl = self._template
        if tpl is None or tpl.scanner != scanner or tpl.scanned_at is not when:
            tpl = self._template = FindingObservation(
                id="",
                repo=self.repo,
                scan_id=self.scan_id,
                scanner=scanner,
                scanned_at=when,
                advisory_id=advisory_id,
            )
        # a copy of the scan's template (whose other fields hold their defaults) with the
        # finding's own fields: msgspec's replace() validates as the constructor does
        # (__post_init__ runs on the result), and costs ≈ 50 ns a keyword, so a field still
        # at its default is not passed (24 keywords ≈ 1.25 µs; the usual 8–12 ≈ 0.35–0.5)
        kw: dict[str, Any] = {
            "id": f"{self.scan_id}/{self._n}",
            "advisory_id": advisory_id,
            "package": npkg,
            "ecosystem": eco,
            "severities": sev,
            "severity_source": chosen.source,
            "tier": chosen.tier,
        }
        if category != "dependency":
            kw["category"] = category
        if other != ():
            kw["aliases"] = other
        if version is not None:
            kw["version"] = version
        if target != "":
            kw["target"] = target
        if manifest is not None:
            kw["manifest"] = manifest
        if title != "":
            kw["title"] = title
        if url is not None:
            kw["url"] = url
        if chosen.score is not None:
            kw["score"] = chosen.score
        if chosen.version is not None:
            kw["score_version"] = chosen.version
        if chosen.needs_triage is not False:
            kw["needs_triage"] = chosen.needs_triage
        if fixed_versions != ():
            kw["fixed_versions"] = fixed_versions
        if fix_state != "unknown":
            kw["fix_state"] = fix_state
        if status != "open":
            kw["status"] = status
        if status_reason is not None:
            kw["status_reason"] = status_reason
        if status_at is not None:
            kw["status_at"] = status_at
        if alert_created_at is not None:
            kw["alert_created_at"] = alert_created_at
        if known_exploited is not False:
            kw["known_exploited"] = known_exploited
        return _replace(tpl, **kw)


@dataclass
class ParsedScan:
    tool: str
    tool_version: str | None
    format: str
    scanned_at: datetime
    scanned_at_source: str
    findings: list[FindingObservation]
    targets: tuple[str, ...] = ()
    coverage: tuple[tuple[str, str, str], ...] = ()
    skipped: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    partial: bool = False  # the output itself says it is incomplete


Parser = Callable[[Data, ParseContext], ParsedScan]


def json_path_at(data: Data, pos: int) -> str:
    """The JSON path of the value being read at byte ``pos`` (for errors msgspec reports by
    byte offset only: truncated or malformed input)."""
    stack: list[list[Any]] = []  # [kind, key/index, expecting_key]
    i, n = 0, min(pos, len(data))
    while i < n:
        c = data[i]
        if c == 0x22:  # string
            j = i + 1
            while j < len(data) and data[j] != 0x22:
                j += 2 if data[j] == 0x5C else 1
            text = str(data[i + 1 : min(j, len(data))], "utf-8", "replace")
            if stack and stack[-1][0] == "obj" and stack[-1][2]:
                stack[-1][1] = text
            i = j + 1
            continue
        if c == 0x7B:  # {
            stack.append(["obj", None, True])
        elif c == 0x5B:  # [
            stack.append(["arr", 0, False])
        elif c in (0x7D, 0x5D):
            if stack:
                stack.pop()
        elif c == 0x3A and stack and stack[-1][0] == "obj":  # :
            stack[-1][2] = False
        elif c == 0x2C and stack:  # ,
            if stack[-1][0] == "obj":
                stack[-1][2] = True
                stack[-1][1] = None
            else:
                stack[-1][1] += 1
        i += 1
    path = "$"
    for kind, key, _ in stack:
        if kind == "obj":
            if key is None:
                break
            path += f".{key}" if re.fullmatch(r"[A-Za-z_][\w-]*", key) else f"[{key!r}]"
        else:
            path += f"[{key}]"
    return path


def bad_input(ctx_file: str, scanner: str, problem: str, path: str, hint: str) -> InputFormatError:
    return InputFormatError(
        f"{ctx_file}: {problem} at JSON path {path}",
        expected=f"the JSON that `{scanner}` writes",
        hint=hint + "; nothing from this file was ingested",
    )


def decode(
    data: Data, typ: type[T], *, file: str, scanner: str, sniff: Callable[[Data], str | None]
) -> T:
    """Decode ``data`` as ``typ``; on failure raise one clear error naming file and JSON path."""
    if not first_byte(data):  # empty or blank (strip() would copy the whole file to find out)
        raise InputFormatError(
            f"{file}: the file is empty ({len(data)} bytes)",
            expected=f"the JSON that `{scanner}` writes",
            hint="a scanner that crashed or was cut off writes nothing — re-run it; an empty "
            "output proves nothing about absent findings, so no scan was recorded",
        )
    try:
        return msgspec.json.decode(data, type=typ)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        m = _PATH_RE.search(msg)
        path = m.group("path") if m else "$"
        problem = msg[: m.start()] if m else msg
        other = sniff(data)
        if other is not None and other != scanner:
            hint = f"this looks like {other} output: run `changeproof ingest {other} {file}`"
            problem = f"not {scanner} output ({problem})"
        else:
            hint = f"check that {file} is complete, unmodified `{scanner}` JSON output"
        raise bad_input(file, scanner, problem, path, hint) from None
    except msgspec.DecodeError as exc:
        msg = str(exc)
        if "truncated" in msg:
            path = json_path_at(data, len(data))
            raise bad_input(
                file,
                scanner,
                f"the JSON ends early (truncated after {len(data)} bytes)",
                path,
                "the file was cut off (disk full, killed job, partial upload?) — re-run the scanner",
            ) from None
        bm = _BYTE_RE.search(msg)
        pos = int(bm.group("pos")) if bm else 0
        raise bad_input(
            file,
            scanner,
            f"not valid JSON ({msg.removeprefix('JSON is malformed: ')})",
            json_path_at(data, pos),
            f"check that {file} is JSON output of `{scanner}` (e.g. --format json)",
        ) from None


_FIRST_BYTE = re.compile(rb"\s*(\S)")


def first_byte(data: Data) -> bytes:
    """The first non-whitespace byte of ``data`` (b"" if none), without copying it."""
    m = _FIRST_BYTE.match(data)
    return m.group(1) if m else b""


def probe_keys(
    data: Data, *, file: str, scanner: str, sniff: Callable[[Data], str | None]
) -> set[str]:
    """The top-level keys of a JSON object (values left undecoded): picks a format variant."""
    return set(decode(data, dict[str, msgspec.Raw], file=file, scanner=scanner, sniff=sniff))


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp from scanner output; None for empty or the Go zero time."""
    if not value or value.startswith("0001-01-01"):
        return None
    v = value.strip().replace("Z", "+00:00")
    # Go writes nanoseconds; Python takes at most microseconds
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", v)
    if m and m.group(2) and len(m.group(2)) > 7:
        v = m.group(1) + m.group(2)[:7] + m.group(3)
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)
