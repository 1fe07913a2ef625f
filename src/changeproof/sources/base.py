"""The seam every source implements: a name, declared capabilities, and ``collect``."""

from __future__ import annotations

from typing import Protocol


class Source(Protocol):
    """A system of record. Declares what it can serve instead of stubbing what it cannot."""

    name: str
    capabilities: frozenset[str]
