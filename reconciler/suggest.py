""" "Did you mean …?" for a mistyped key, flag, command, tenant or value (difflib's ratio)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate nearest to `word`, if one is near enough to be a likely typo."""
    pool = sorted(set(candidates))
    found = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if not found and word.lower() != word:
        found = difflib.get_close_matches(word.lower(), pool, n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(word: str, candidates: Iterable[str], *, quote: str = "'") -> str:
    """`"; did you mean 'propagate'?"`, or `""` when nothing is close."""
    found = closest(word, candidates)
    return f"; did you mean {quote}{found}{quote}?" if found else ""
