"""One error hierarchy, written for the person reading it.

Every error says what happened, what was expected and what to try next. The CLI prints
``str(error)`` and exits with ``error.exit_code``; tracebacks only with ``--verbose``.
"""

from __future__ import annotations

# Documented exit codes (docs/cli.md): 0 ok/allow, 1 failing results/deny/tampered,
# 2 usage, configuration, input or environment error (never "allow").
EXIT_OK = 0
EXIT_FAIL = 1
EXIT_ERROR = 2


class ChangeproofError(Exception):
    """Base of every error changeproof raises on purpose."""

    exit_code = EXIT_ERROR

    def __init__(self, what: str, *, expected: str | None = None, hint: str | None = None) -> None:
        self.what = what
        self.expected = expected
        self.hint = hint
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = [self.what.rstrip(".") + "."]
        if self.expected:
            parts.append("Expected " + self.expected.rstrip(".") + ".")
        if self.hint:
            parts.append("Try: " + self.hint.rstrip(".") + ".")
        return " ".join(parts)


class ConfigError(ChangeproofError):
    """The settings file or a command-line option is wrong."""


class UsageError(ChangeproofError):
    """A command was called with arguments that cannot work."""


class SourceError(ChangeproofError):
    """A system of record (git, a forge, a file) could not be read as expected."""


class InputFormatError(SourceError):
    """A file given to ingest is not what its kind says."""


class EvidenceError(ChangeproofError):
    """Evidence is malformed or inconsistent."""


class StoreError(ChangeproofError):
    """The database could not be opened, migrated, locked or written."""


class LockerError(ChangeproofError):
    """The evidence locker could not be written or read."""


class NotFoundError(ChangeproofError):
    """Something the command needs does not exist in the store."""
