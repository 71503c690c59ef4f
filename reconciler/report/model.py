"""The access review as data: one row per membership and tenant, plus one per membership for
what it sees outside every tenant; the header a reviewer cites."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

FORMAT_VERSION = 1
OUTSIDE = "(outside every tenant)"


class Status(StrEnum):
    OK = "ok"  # the server lets it see what the manifests give it, and no more
    MISSING = "missing"  # the manifests grant it, the server does not (or not all of it)
    EXTRA = "extra"  # the server lets it see what the manifests do not give it
    UNRESTRICTED = "unrestricted"  # fail-open (no policy, a * rule) or a project admin


class Configured(StrEnum):
    MANAGED = "managed entry"
    UNMANAGED = "unmanaged entry"
    LEGACY = "legacy accessPolicy"
    NO_POLICY = "no policy: everything"
    ADMIN = "project admin"
    NONE = "none"


@dataclass(frozen=True)
class Row:
    membership: str
    profile: str
    display: str
    user: str
    admin: bool
    tenant: str | None  # None: what it sees outside every tenant
    account: str
    granted: bool
    policies: tuple[str, ...]  # the manifests' policies granting it this tenant
    configured: Configured
    status: Status
    reason: str
    seen: dict[str, int] = field(default_factory=dict)  # type -> counted as the member
    totals: dict[str, int] = field(default_factory=dict)  # type -> the tenant holds
    this_client: bool = False  # the report's own client (an admin by necessity)

    @property
    def tenant_label(self) -> str:
        return self.tenant if self.tenant is not None else OUTSIDE

    def to_json(self) -> dict[str, Any]:
        return {
            "membership": self.membership,
            "profile": self.profile,
            "display": self.display,
            "user": self.user,
            "admin": self.admin,
            "this_client": self.this_client,
            "tenant": self.tenant,
            "account": self.account,
            "granted": self.granted,
            "policies": list(self.policies),
            "configured": self.configured.value,
            "status": self.status.value,
            "reason": self.reason,
            "seen": dict(sorted(self.seen.items())),
            "totals": dict(sorted(self.totals.items())),
        }


@dataclass(frozen=True)
class Header:
    server: str
    client: str
    created_at: str
    tool_version: str
    manifests_digest: str
    tenants: tuple[str, ...]
    types: tuple[str, ...]


@dataclass(frozen=True)
class AccessReport:
    header: Header
    rows: tuple[Row, ...]

    @property
    def memberships(self) -> list[str]:
        return list(dict.fromkeys(r.membership for r in self.rows))

    def counts(self) -> dict[str, int]:
        found = {s.value: 0 for s in Status}
        for row in self.rows:
            found[row.status.value] += 1
        return found

    @property
    def failing(self) -> list[Row]:
        """Rows that fail a review; the report's own client is listed but never fails it."""
        return [r for r in self.rows if r.status is not Status.OK and not r.this_client]

    def body_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.rows]

    def digest(self) -> str:
        """sha256 of the rows' canonical JSON: what a reviewer cites."""
        body = json.dumps(self.body_json(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(body.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        h = self.header
        return {
            "format_version": FORMAT_VERSION,
            "server": h.server,
            "client": h.client,
            "created_at": h.created_at,
            "tool_version": h.tool_version,
            "manifests_digest": h.manifests_digest,
            "tenants": list(h.tenants),
            "types": list(h.types),
            "counts": {
                "memberships": len(self.memberships),
                "tenants": len(h.tenants),
                "rows": len(self.rows),
                **self.counts(),
            },
            "report_digest": self.digest(),
            "rows": self.body_json(),
        }

    def redacted(self, hide: Any) -> AccessReport:
        """Member, profile and user identifiers and names replaced by keyed hashes."""

        def one(row: Row) -> Row:
            kind, _, rid = row.membership.partition("/")
            ptype, _, pid = row.profile.partition("/")
            return replace(
                row,
                membership=f"{kind}/{hide(rid)}",
                profile=f"{ptype}/{hide(pid)}" if pid else "",
                display=hide(row.display) if row.display else "",
                user=hide(row.user) if row.user else "",
            )

        return replace(self, rows=tuple(one(r) for r in self.rows))
