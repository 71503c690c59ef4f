"""The one "has it moved since we read it" check, for saved plans (since the plan) and for
apply's re-read right before each write (during apply). Pure."""

from __future__ import annotations


def moved(planned: str, now: str | None, *, since: str) -> str | None:
    """Why a resource planned at version `planned` may not be written as planned: it is gone
    (`now` None) or at another version; None when it is where the plan left it."""
    if now is None:
        return f"deleted {since}"
    if now != planned:
        return f"changed {since} (version {planned}, now {now})"
    return None


SINCE_PLAN = "since the plan"
DURING_APPLY = "during apply"
