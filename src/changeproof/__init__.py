"""changeproof: prove every change that reached production was authorised, reviewed, tested
and deployed per policy — and stop the ones that weren't."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
