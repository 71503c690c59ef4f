"""What the sandbox's access checks cost: a member's searches and reads against an admin's
equivalent, over N seeded patients (default 100,000). Prints figures; asserts nothing on time.

    python benchmarks/member_search.py [--patients N] [--data FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler.sandbox import seed as seeding
from reconciler.sandbox.store import Store
from tests.sandbox_process import InProcessSandbox


def best_ms(
    client: httpx.Client, path: str, params: dict[str, str], n: int = 5
) -> tuple[float, Any]:
    best = float("inf")
    body: Any = None
    for _ in range(n):
        started = time.monotonic()
        r = client.get(path, params=params)
        r.raise_for_status()
        best = min(best, time.monotonic() - started)
        body = r.json()
    shown = body.get("total", len(body.get("entry", []))) if isinstance(body, dict) else None
    return round(best * 1000, 1), shown


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--data", default=None)
    options = parser.parse_args()
    data = options.data or str(Path(tempfile.mkdtemp()) / "members.sqlite")
    if not Path(data).exists():
        started = time.monotonic()
        store = Store(data)
        seeding.seed(store, patients=options.patients, per_patient=0)
        store.close()
        print(f"seeded {options.patients:,} patients in {time.monotonic() - started:.1f} s")
    sb = InProcessSandbox(data=data).start()

    def client(creds: tuple[str, str]) -> httpx.Client:
        return httpx.Client(
            base_url=f"{sb.url}/fhir/R4/",
            headers={"Authorization": f"Bearer {sb.token(creds)}"},
            timeout=120,
        )

    admin = client(("sandbox-admin", "sandbox-secret"))
    north = f"Organization/{seeding.ORG_NORTH}"
    membership = admin.get("ProjectMembership/0f1e0006-0000-4000-8000-000000000001").json()
    membership["access"] = [
        {
            "policy": {"reference": f"AccessPolicy/{seeding.CLINIC_STAFF_POLICY}"},
            "parameter": [{"name": "organization", "valueReference": {"reference": north}}],
        }
    ]
    admin.put(f"ProjectMembership/{membership['id']}", json=membership).raise_for_status()
    nurse = client(("north-nurse", "north-nurse-secret"))
    patient = f"Patient/{seeding.named_patient_id(3)}"
    in_north = {"_compartment": north}
    rows = [
        ("admin: count, _compartment=north", admin, "Patient", {"_summary": "count", **in_north}),
        ("member: count (its policy)", nurse, "Patient", {"_summary": "count"}),
        ("admin: page of 100, _compartment=north", admin, "Patient", {"_count": "100", **in_north}),
        ("member: page of 100 (its policy)", nurse, "Patient", {"_count": "100"}),
        ("admin: read", admin, patient, {}),
        ("member: read", nurse, patient, {}),
    ]  # fmt: skip
    for label, who, path, params in rows:
        ms, shown = best_ms(who, path, params)
        print(f"{label:40s} {ms:8.1f} ms   ({shown})")
    sb.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
