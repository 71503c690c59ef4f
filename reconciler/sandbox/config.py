"""How a sandbox behaves: its clients, and the latency, faults, jobs and quota it simulates."""

from __future__ import annotations

from dataclasses import dataclass, field

# Roles: admin (a project admin), member (no policy: everything but admin types), reader
# (a read-only policy on every type: what a pull request's CI job plans with — it cannot read
# ProjectMemberships, which only admins may, nor write anything).
DEFAULT_CLIENTS = {
    "sandbox-admin": ("sandbox-secret", "admin"),
    "sandbox-member": ("sandbox-secret", "member"),
    "sandbox-reader": ("sandbox-secret", "reader"),
}
READ_ONLY_POLICY = "0f1e0004-0000-4000-8000-0000000000f0"  # the reader role's AccessPolicy


@dataclass
class Config:
    clients: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(DEFAULT_CLIENTS))
    latency_ms: float = 0.0
    spike_ms: float = 0.0  # an extra delay on a fraction (spike_rate) of requests
    spike_rate: float = 0.0
    faults: list[tuple[int, float]] = field(default_factory=list)
    fault_jobs: bool = False
    retry_after: float | None = None
    job_delay_ms: float = 0.0
    job_fail_rate: float = 0.0
    job_fail_after_writes: int | None = None  # a job dies after this many writes (no rollback)
    propagate_cap: int = 1000
    max_search_offset: int | None = None
    fhir_quota: int | None = None
    client_quotas: dict[str, int] = field(default_factory=dict)  # client id -> points
    quota_window_s: float = 60.0
    token_ttl_s: int = 3600
    seed: int | None = None
    set_accounts_author: str = "caller"  # "system": like Medplum 5.1.29
