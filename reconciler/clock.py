"""Timestamps the tool writes (plans, lock records, audit events): one format, UTC, `Z`."""

from __future__ import annotations

from datetime import UTC, datetime

ISO_MILLIS = "%Y-%m-%dT%H:%M:%S.%fZ"


def iso_utc(moment: datetime | None = None, *, millis: bool = True) -> str:
    moment = moment or datetime.now(UTC)
    if millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_utc(value: str) -> datetime:
    """Our own format, or any ISO 8601 time with a zone (a lock edited by hand, a server's
    `meta.lastUpdated`); a time without a zone is read as UTC."""
    try:
        return datetime.strptime(value, ISO_MILLIS).replace(tzinfo=UTC)
    except ValueError:
        moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
