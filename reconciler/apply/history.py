"""`reconciler history`: the applies (and `verify --repair` runs) this tool recorded, newest
first, read back from the AuditEvents it writes (apply/audit.py). Counts only, as written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reconciler.apply.audit import AUDIT_SYSTEM
from reconciler.medplum.client import MedplumClient

ACTIONS = ("apply", "verify-repair")
# The counts a person reads first, in this order (the record holds more; JSON has them all).
HEADLINE = (
    ("patients_updated", "patient", "updated"),
    ("resources_updated", "resource", "updated"),
    ("accounts_added", "account", "added"),
    ("accounts_removed", "account", "removed"),
    ("grants_added", "grant", "added"),
    ("grants_revoked", "grant", "revoked"),
    ("patients_failed", "patient", "failed"),
    ("memberships_failed", "membership", "failed"),
)


@dataclass(frozen=True)
class Run:
    """One AuditEvent the tool wrote, as the server holds it."""

    id: str
    recorded: str
    action: str
    succeeded: bool
    outcome: str  # the summary it wrote: "apply complete", "apply failed: …"
    client: str  # who the server says wrote it (meta.author), else "unknown"
    plan_digest: str = ""
    manifests_digest: str = ""
    tool_version: str = ""
    git_commit: str = ""
    ci_run_url: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, resource: dict[str, Any]) -> Run:
        details: dict[str, str] = {}
        for entity in resource.get("entity") or []:
            for detail in (entity or {}).get("detail") or []:
                if isinstance(detail, dict) and isinstance(detail.get("type"), str):
                    details[detail["type"]] = str(detail.get("valueString") or "")
        counts = {k: int(v) for k, v in details.items() if v.isdigit()}
        action = next(
            (c.get("code") for c in resource.get("subtype") or []
             if isinstance(c, dict) and c.get("system") == AUDIT_SYSTEM),
            "apply",
        )  # fmt: skip
        author = (resource.get("meta") or {}).get("author") or {}
        return cls(
            id=str(resource.get("id") or ""),
            recorded=str(resource.get("recorded") or ""),
            action=str(action),
            succeeded=str(resource.get("outcome")) == "0",
            outcome=str(resource.get("outcomeDesc") or ""),
            client=str(author.get("reference") or author.get("display") or "unknown"),
            plan_digest=details.get("plan_digest", ""),
            manifests_digest=details.get("manifests_digest", ""),
            tool_version=details.get("tool_version", ""),
            git_commit=details.get("git_commit", ""),
            ci_run_url=details.get("ci_run_url", ""),
            counts=counts,
        )

    @property
    def headline(self) -> list[str]:
        return [
            f"{self.counts[k]:,} {noun if self.counts[k] == 1 else noun + 's'} {verb}"
            for k, noun, verb in HEADLINE
            if self.counts.get(k)
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": f"AuditEvent/{self.id}",
            "recorded": self.recorded,
            "action": self.action,
            "succeeded": self.succeeded,
            "outcome": self.outcome,
            "client": self.client,
            "plan_digest": self.plan_digest,
            "manifests_digest": self.manifests_digest,
            "tool_version": self.tool_version,
            "git_commit": self.git_commit,
            "ci_run_url": self.ci_run_url,
            "counts": dict(sorted(self.counts.items())),
        }


def read_history(client: MedplumClient, limit: int) -> list[Run]:
    """The last `limit` runs, newest first: one search, sorted by the server."""
    result = client.request(
        "GET",
        "AuditEvent",
        params=[
            ("subtype", ",".join(f"{AUDIT_SYSTEM}|{a}" for a in ACTIONS)),
            ("_sort", "-_lastUpdated"),
            ("_count", str(limit)),
        ],
    )
    entries = (result.body or {}).get("entry") or []
    runs = [Run.of(e["resource"]) for e in entries if isinstance(e.get("resource"), dict)]
    return sorted(runs, key=lambda r: r.recorded, reverse=True)[:limit]
