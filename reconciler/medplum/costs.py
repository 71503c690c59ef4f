"""What Medplum charges against the FHIR quota, in points (medplum-api.md, "What a
`$set-accounts` really costs", observed on 5.0.10; server source `fhir/fhirquota.ts`): a read 1,
a history read 10, a search 20, a write 100; `$set-accounts` with `propagate` on a patient with
k compartment resources 120 + 100·k synchronously (the write, a compartment search, a write per
resource) and 320 + 100·k with `Prefer: respond-async` (the job's AsyncJob is created and
updated: two writes more). One model for the estimate, the pacer and the executor's choice."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

READ = 1
HISTORY = 10
SEARCH = 20
WRITE = 100
JOB_OVERHEAD = 2 * WRITE  # the AsyncJob resource: created, then updated when it ends
PROPAGATE_CAP = 1000  # Medplum propagates to at most this many compartment resources
# The largest compartment apply sends synchronously: 200 writes take a few seconds on Medplum,
# far from an HTTP timeout and under the propagation cap; larger ones go through a job.
SYNC_MAX_COMPARTMENT = 200


def set_accounts_cost(compartment: int, *, propagate: bool, asynchronous: bool) -> int:
    """One `$set-accounts` on a patient with `compartment` resources."""
    if not propagate:
        return WRITE
    points = WRITE + SEARCH + WRITE * min(max(0, compartment), PROPAGATE_CAP)
    return points + JOB_OVERHEAD if asynchronous else points


def request_cost(method: str, path: str, body: Any = None) -> int:
    """What one FHIR request is charged, by its shape (a batch: the sum of its entries)."""
    if method == "GET":
        parts = [p for p in urlsplit(path).path.split("/") if p]
        if parts and parts[-1] == "status" and "job" in parts:
            return READ  # an async job's status
        if parts and parts[-1] == "_history":
            return HISTORY
        # `Type/id` is a read; a type, `_search` or the base is a search.
        if len(parts) >= 2 and parts[-2][:1].isupper() and not parts[-1].startswith(("_", "$")):
            return READ
        return SEARCH
    if method == "POST" and isinstance(body, Mapping) and body.get("resourceType") == "Bundle":
        total = 0
        for entry in body.get("entry") or []:
            request = entry.get("request") if isinstance(entry, Mapping) else None
            if isinstance(request, Mapping):
                kind, url = str(request.get("method", "GET")), str(request.get("url", ""))
                total += request_cost(kind, url) if kind == "GET" else WRITE
        return total
    if method == "POST" and urlsplit(path).path.rstrip("/").endswith("/_search"):
        return SEARCH
    return WRITE
