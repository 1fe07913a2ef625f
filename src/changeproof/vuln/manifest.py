"""A batch manifest: one CSV line per scanner file to ingest (`changeproof ingest batch`).

Columns (header row first, names case-insensitive, in any order): ``scanner``, ``file``,
``repo`` required; ``scanned_at``, ``target``, ``partial`` optional, an empty value meaning
what the per-scanner command does without the option (the time in the file, else now; no
target; not partial). A relative ``file`` is relative to the manifest's folder.

The manifest is read twice: once to check every line (and that every file exists) before
anything is parsed, then again, line by line, as the ingest's jobs: memory stays flat in its
length. Standard input is copied to a temporary file first so it can be read twice.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, BinaryIO

from changeproof.errors import ChangeproofError, InputFormatError
from changeproof.vuln.ingest import ParseJob, unreadable
from changeproof.vuln.parsers import SCANNERS

COLUMNS = ("scanner", "file", "repo", "scanned_at", "target", "partial")
REQUIRED = ("scanner", "file", "repo")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0", ""})
_EXAMPLE = "scanner,file,repo,scanned_at\ntrivy,scans/api.json,acme/api,2026-03-01T02:00Z"


# a ParseJob's fields: scanner, file, data (None: read the file), repo, scanned_at, target,
# partial
_Fields = tuple[str, str, None, str, datetime | None, str | None, bool]


class ManifestError(InputFormatError):
    """A manifest line is wrong (the message names the manifest, the line and the column)."""


@dataclass(frozen=True)
class ManifestStats:
    files: int  # lines naming a file
    bytes: int  # the files' sizes when checked


class Manifest:
    """A manifest open for reading; use as a context manager (closes it, and the copy of
    standard input)."""

    def __init__(self, name: str, text: IO[str], base: str) -> None:
        self.name = name  # as messages name it
        self._text = text
        self._base = base  # relative files are joined to this folder

    @classmethod
    def open(cls, arg: str, stdin: BinaryIO | None = None) -> Manifest:
        """``arg`` a path, or ``-``: ``stdin`` (default: this process's standard input),
        whose relative files are relative to the current folder."""
        if arg == "-":
            spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the manifest
            shutil.copyfileobj(stdin if stdin is not None else sys.stdin.buffer, spool)
            spool.seek(0)
            return cls("standard input", _text(spool), "")
        try:
            raw = open(arg, "rb")  # noqa: SIM115, PTH123 - closed with the manifest
        except OSError as exc:
            err = unreadable(arg, exc)
            raise ManifestError(
                f"manifest {err.what}",
                expected="a CSV file with a header row (scanner,file,repo, …), or - for "
                "standard input",
            ) from None
        # (strings: a file's path stays as the manifest spells it, joined to the folder)
        return cls(arg, _text(raw), os.path.dirname(arg))  # noqa: PTH120

    def close(self) -> None:
        self._text.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def validate(self) -> ManifestStats:
        """Check every line, and that every file is there: the first fault raises, before
        anything is parsed."""
        files = size = 0
        for _line, _fields, n in self.rows(check_files=True):
            files += 1
            size += n
        return ManifestStats(files, size)

    def jobs(self) -> Iterator[tuple[int, ParseJob]]:
        """Each line's job, with its line number, read as it is asked for."""
        for line, fields, _size in self.rows(check_files=False):
            yield line, ParseJob(*fields)

    def rows(self, *, check_files: bool) -> Iterator[tuple[int, _Fields, int]]:
        """(line number, the job's fields, the file's size — 0 unless ``check_files``) for
        each line that names a file."""
        from changeproof.cli.timeparse import parse_instant

        self._text.seek(0)
        reader = csv.reader(self._text, strict=True)
        columns: list[str] | None = None
        end = 0  # the last physical line read: a row starts on the line after it
        base, name = self._base, self.name
        join = os.path.join
        # (column positions, -1 when the column is absent)
        i_scanner = i_file = i_repo = i_when = i_target = i_partial = width = -1
        try:
            for values in reader:
                line, end = end + 1, reader.line_num
                if not "".join(values).strip():
                    continue  # a blank line (or a spreadsheet's row of empty cells)
                if columns is None:
                    columns = self._header(values, line)
                    width = len(columns)
                    pos = {c: i for i, c in enumerate(columns)}.get
                    i_scanner, i_file, i_repo = pos("scanner", -1), pos("file", -1), pos("repo", -1)
                    i_when, i_target = pos("scanned_at", -1), pos("target", -1)
                    i_partial = pos("partial", -1)
                    continue
                if len(values) != width:
                    raise ManifestError(
                        f"{name} line {line}: {len(values)} value(s), but the header names "
                        f"{width} column(s) ({','.join(columns)})",
                        expected="one value per column on every line (an empty value for "
                        "an optional column left out)",
                        hint="quote values that contain commas; nothing was ingested",
                    )
                scanner = values[i_scanner].strip()
                file = values[i_file].strip()
                repo = values[i_repo].strip()
                if not (scanner and file and repo):
                    col = "scanner" if not scanner else "file" if not file else "repo"
                    raise self._error(line, col, "no value", f"a {col} on every line")
                if scanner not in SCANNERS:
                    raise self._error(
                        line,
                        "scanner",
                        f"unknown scanner {scanner!r}",
                        "one of " + ", ".join(SCANNERS),
                    )
                when = target = None
                partial = False
                if i_when >= 0 and (text := values[i_when].strip()):
                    try:
                        when = parse_instant(text, what="scan time")
                    except ChangeproofError as exc:
                        raise self._error(line, "scanned_at", exc.what, exc.expected) from None
                if i_target >= 0:
                    target = values[i_target].strip() or None
                if i_partial >= 0:
                    partial = self._partial(values[i_partial], line)
                path = join(base, file)
                size = self._check_file(path, line) if check_files else 0
                yield line, (scanner, path, None, repo, when, target, partial), size
        except csv.Error as exc:
            raise ManifestError(
                f"{name} line {end + 1}: not valid CSV ({exc})",  # (where the bad row starts)
                expected="CSV with a header row, e.g.\n" + _EXAMPLE,
                hint="nothing was ingested",
            ) from None
        except UnicodeDecodeError:
            raise ManifestError(
                f"{name}: not UTF-8 text (after line {end})",
                expected="a UTF-8 CSV file",
                hint="save it as UTF-8 CSV; nothing was ingested",
            ) from None
        if columns is None:
            raise ManifestError(
                f"{name}: empty (no header row)",
                expected="CSV with a header row, e.g.\n" + _EXAMPLE,
                hint="nothing was ingested",
            )

    def _header(self, values: list[str], line: int) -> list[str]:
        columns = [v.strip().lower().replace("-", "_") for v in values]
        seen: set[str] = set()
        for c in columns:
            if c not in COLUMNS:
                raise self._error(
                    line,
                    None,
                    f"unknown column {c!r} in the header",
                    "columns among " + ", ".join(COLUMNS) + f" (a header row first, e.g.\n"
                    f"{_EXAMPLE})",
                )
            if c in seen:
                raise self._error(line, None, f"column {c!r} named twice in the header", None)
            seen.add(c)
        missing = [c for c in REQUIRED if c not in seen]
        if missing:
            raise self._error(
                line,
                None,
                f"the header has no {', '.join(missing)} column",
                "a header row naming at least scanner, file and repo, e.g.\n" + _EXAMPLE,
            )
        return columns

    def _partial(self, text: str, line: int) -> bool:
        value = text.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise self._error(
            line, "partial", f"{text.strip()!r} is not a yes or no", "true/false, yes/no or 1/0"
        )

    def _check_file(self, path: str, line: int) -> int:
        try:
            st = os.stat(path)  # noqa: PTH116 - (no Path object per line)
        except OSError as exc:
            raise self._error(
                line,
                "file",
                unreadable(path, exc).what,
                None,
                hint="check the path (a relative one is relative to the manifest's folder); "
                "nothing was ingested",
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise self._error(line, "file", unreadable(path, IsADirectoryError()).what, None)
        return st.st_size

    def _error(
        self,
        line: int,
        column: str | None,
        what: str,
        expected: str | None,
        *,
        hint: str | None = None,
    ) -> ManifestError:
        where = f"{self.name} line {line}" + (f", column {column}" if column else "")
        return ManifestError(
            f"{where}: {what}",
            expected=expected,
            hint=hint or "fix that line of the manifest; nothing was ingested",
        )


def _text(raw: BinaryIO | IO[bytes]) -> IO[str]:
    # utf-8-sig: spreadsheets save CSV with a byte-order mark; newline="" as csv requires
    try:
        return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
    except BaseException:
        with contextlib.suppress(OSError):
            raw.close()
        raise
