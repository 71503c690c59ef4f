"""The floors the benchmark compares us with, measured on the same server in the same minutes
(any server: a sandbox or `--server`), plus the cheapest schedule the cost model allows:

- the direct `$set-accounts` rate: fresh patients of the same compartment size, each call sent
  straight from a pool of threads at our parallelism — synchronously, and with
  `Prefer: respond-async` and a tight poll (20 ms) — changes per second;
- the listing floor: the fewest reads that show the plan's scope (its patients by id, 100 to a
  search, and every member of each tenant by compartment, 1,000 to a page), 4 in flight like
  the plan's reads;
- the cheapest schedule under a quota: the points the calls must cost (the cost model) in
  windows of the quota, the work itself taking what an unmetered run took.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode

import httpx

POLL_S = 0.02


class Direct:
    """A bare client: a token and httpx, nothing of ours (no pacer, no retries)."""

    def __init__(self, url: str, creds: tuple[str, str], pool: int = 32) -> None:
        self.base = url.rstrip("/")
        token = httpx.post(
            f"{self.base}/oauth2/token",
            data={"grant_type": "client_credentials", "client_id": creds[0],
                  "client_secret": creds[1]},
            timeout=60,
        ).json()["access_token"]  # fmt: skip
        self.http = httpx.Client(
            headers={"Authorization": f"Bearer {token}", "X-Medplum": "extended"},
            timeout=120,
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        )

    def close(self) -> None:
        self.http.close()

    def set_accounts(self, patient: str, account: str, *, asynchronous: bool) -> None:
        body = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "accounts", "valueReference": {"reference": account}},
                {"name": "propagate", "valueBoolean": True},
            ],
        }
        headers = {"Prefer": "respond-async"} if asynchronous else {}
        r = self.http.post(
            f"{self.base}/fhir/R4/{patient}/$set-accounts", json=body, headers=headers
        )
        if r.status_code == 202:
            status_url = r.headers["Content-Location"]
            while True:
                time.sleep(POLL_S)
                job = self.http.get(status_url).json()
                if job.get("status") in ("completed", "error", "cancelled"):
                    return
        elif r.status_code != 200:
            raise SystemExit(f"direct $set-accounts answered {r.status_code}: {r.text[:300]}")

    def get(self, path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        r = self.http.get(f"{self.base}/fhir/R4/{path}?{urlencode(params)}")
        if r.status_code != 200:
            raise SystemExit(f"listing answered {r.status_code}: {r.text[:300]}")
        return dict(r.json())


def direct_rate(
    url: str,
    creds: tuple[str, str],
    patients: Sequence[str],
    account: str,
    *,
    parallelism: int,
    asynchronous: bool,
) -> float:
    """Changes per second of bare `$set-accounts` calls on `patients` (fresh ones)."""
    if not patients:
        return 0.0
    direct = Direct(url, creds, pool=parallelism + 2)
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(parallelism) as pool:
            list(pool.map(lambda p: direct.set_accounts(p, account, asynchronous=asynchronous),
                          patients))  # fmt: skip
        return len(patients) / (time.monotonic() - started)
    finally:
        direct.close()


def listing_s(
    url: str, creds: tuple[str, str], patient_ids: Sequence[str], accounts: Sequence[str]
) -> float:
    """The fewest reads that show the plan's scope, 4 in flight: its patients by id and every
    current member of each (authoritative) tenant."""
    direct = Direct(url, creds, pool=6)
    elements = ("_elements", "meta,identifier")

    def by_ids(ids: Sequence[str]) -> None:
        direct.get("Patient", [("_id", ",".join(ids)), elements, ("_count", str(len(ids)))])

    def members(account: str) -> None:
        params = [("_compartment", account), elements, ("_count", "1000"),
                  ("_sort", "_lastUpdated")]  # fmt: skip
        page = direct.get("Patient", params)
        while True:
            nxt = next((link["url"] for link in page.get("link", [])
                        if link.get("relation") == "next"), None)  # fmt: skip
            if not nxt:
                return
            r = direct.http.get(nxt)
            page = r.json()

    try:
        started = time.monotonic()
        chunks = [patient_ids[i : i + 100] for i in range(0, len(patient_ids), 100)]
        with ThreadPoolExecutor(4) as pool:
            jobs = [pool.submit(members, a) for a in accounts]
            jobs += [pool.submit(by_ids, c) for c in chunks]
            for job in jobs:
                job.result()
        return time.monotonic() - started
    finally:
        direct.close()


def cheapest_schedule_s(points: int, quota: int, window_s: float, work_s: float) -> float:
    """The least time `points` can be spent in at `quota` points a window: the windows it needs
    past the first, plus the work itself (what the same apply took with no quota)."""
    windows = max(1, math.ceil(points / quota))
    return (windows - 1) * window_s + work_s


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 2) if denominator else None
