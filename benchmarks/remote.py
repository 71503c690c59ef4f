"""The benchmark's scenario on a server it does not own (`reconcile.py --server URL`).

It cannot write a data file there, so it seeds over HTTP: three fresh Organizations and the
patients (then their Observations/Encounters) in `batch` Bundles, every resource tagged with an
identifier system unique to the run. It records the id of everything it created, deletes exactly
those at the end (unless asked to keep them) and nothing else: its manifests name only its own
Organizations as accounts, so the reconciler's scope cannot reach anything else on the server.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from reconciler import scrub
from reconciler.medplum import MedplumClient

BATCH_ENTRIES = 200  # ~60 KB a Bundle: well under Medplum's default 1 MB JSON body limit
SEED_WORKERS = 4


@dataclass
class Created:
    """What this run created on the server, in creation order: the only things it deletes."""

    refs: list[tuple[str, str]] = field(default_factory=list)

    def add(self, resource_type: str, resource_id: str) -> None:
        self.refs.append((resource_type, resource_id))


@dataclass
class Seeded:
    """One seeded copy of the scenario: patient index → id, tenant index → Organization id."""

    label: str
    orgs: list[str]
    patients: dict[int, str]
    resources: int

    def org_id(self, t: int) -> str:
        return self.orgs[t]

    def patient_id(self, i: int) -> str:
        return self.patients[i]


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def post_batch(client: MedplumClient, entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One `batch` Bundle; every entry must succeed (the benchmark stops otherwise)."""
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": list(entries)}
    body = client.request("POST", "", json=bundle).body
    answers = body.get("entry") if isinstance(body, dict) else None
    if not isinstance(answers, list) or len(answers) != len(entries):
        raise SystemExit(f"the server answered a batch of {len(entries)} entries unexpectedly")
    for answer in answers:
        status = str((answer.get("response") or {}).get("status", ""))
        if not status[:3].isdigit() or int(status[:3]) >= 300:
            outcome = (answer.get("response") or {}).get("outcome") or {}
            text = "; ".join(
                str(i.get("details", {}).get("text") or i.get("diagnostics") or i.get("code"))
                for i in outcome.get("issue") or []
            )
            # The client registered its secret and token: a server echoing them gets `***`.
            raise SystemExit(
                scrub.scrub(f"a batch entry failed with {status}: {text or 'no details'}")
            )
    return answers


def created_id(answer: dict[str, Any]) -> str:
    """The id of a created entry: from the returned resource, else from `location`
    (`Patient/<id>` or `…/Patient/<id>/_history/<version>`)."""
    resource = answer.get("resource")
    if isinstance(resource, dict) and resource.get("id"):
        return str(resource["id"])
    parts = str((answer.get("response") or {}).get("location", "")).split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2 or not parts[-1]:
        raise SystemExit("a created batch entry carries neither the resource nor a location")
    return parts[-1]


def create_all(
    client: MedplumClient,
    resources: Sequence[dict[str, Any]],
    created: Created,
) -> list[str]:
    """Create `resources` in batches (several in flight), in order; return their ids."""
    entries = [
        {"resource": r, "request": {"method": "POST", "url": r["resourceType"]}} for r in resources
    ]

    def send(part: Sequence[dict[str, Any]]) -> list[str]:
        return [created_id(a) for a in post_batch(client, part)]

    ids: list[str] = []
    with ThreadPoolExecutor(SEED_WORKERS) as pool:
        # map() keeps the order; a failed batch raises here after the others finish, and
        # what they created is still recorded below for the clean-up.
        results = pool.map(send, chunks(entries, BATCH_ENTRIES))
        try:
            for part_ids in results:
                ids.extend(part_ids)
        finally:
            for resource, rid in zip(resources, ids, strict=False):
                created.add(resource["resourceType"], rid)
    return ids


def seed(
    client: MedplumClient,
    *,
    run_id: str,
    label: str,
    tenants: Sequence[str],
    indices: Iterable[int],
    per_patient: int,
    live_tenant: Callable[[int], int],
    created: Created,
) -> Seeded:
    """Three Organizations, then the patients with their live accounts, then each patient's
    Observations/Encounters carrying the same accounts (as the sandbox seed writes them)."""
    system = f"urn:reconciler-bench:{run_id}"
    orgs = create_all(
        client,
        [
            {
                "resourceType": "Organization",
                "name": f"reconciler bench {run_id} {label} {name}",
                "identifier": [{"system": system, "value": f"{label}-org-{name}"}],
            }
            for name in tenants
        ],
        created,
    )
    order = list(indices)

    def accounts(i: int) -> dict[str, Any]:
        return {"accounts": [{"reference": f"Organization/{orgs[live_tenant(i)]}"}]}

    patient_ids = create_all(
        client,
        [
            {
                "resourceType": "Patient",
                "meta": accounts(i),
                "identifier": [{"system": system, "value": f"{label}-B-{i}"}],
            }
            for i in order
        ],
        created,
    )
    patients = dict(zip(order, patient_ids, strict=True))
    linked = [
        {
            "resourceType": "Observation" if j % 2 == 0 else "Encounter",
            "meta": accounts(i),
            "status": "final" if j % 2 == 0 else "finished",
            **({"code": {"text": "bench"}} if j % 2 == 0 else {"class": {"code": "AMB"}}),
            "subject": {"reference": f"Patient/{patients[i]}"},
        }
        for i in order
        for j in range(per_patient)
    ]
    create_all(client, linked, created)
    return Seeded(label, orgs, patients, len(linked))


def delete_created(client: MedplumClient, created: Created) -> int:
    """Delete what this run created, newest first (compartment resources before their
    patients, patients before their Organizations); nothing else. Returns how many."""
    refs = list(reversed(created.refs))
    entries = [{"request": {"method": "DELETE", "url": f"{t}/{i}"}} for t, i in refs]
    with ThreadPoolExecutor(SEED_WORKERS) as pool:
        list(pool.map(lambda part: post_batch(client, part), chunks(entries, BATCH_ENTRIES)))
    created.refs.clear()
    return len(refs)


def probe_latency(client: MedplumClient, path: str, samples: int = 20) -> dict[str, float]:
    """Sequential reads of one small resource: the round trip every naive request pays."""
    client.request("GET", path)  # the token fetch and connection set-up are not measured
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        client.request("GET", path)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "samples": samples,
        "median_ms": round(statistics.median(times), 1),
        "p90_ms": round(times[int(0.9 * (samples - 1))], 1),
        "min_ms": round(times[0], 1),
    }


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]
