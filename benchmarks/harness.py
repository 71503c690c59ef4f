"""What every benchmark scenario shares: the seeded data (ids, the sandbox seed, manifests),
the two kinds of target (a sandbox process of our own, or a server we do not own), and running
the CLI against one with its wall time, requests and peak RSS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from reconciler.sandbox.store import Store

CLIENT = ("bench-admin", "bench-secret")
NAMESPACE = uuid.UUID("b3c40000-0000-4000-8000-000000000000")
TENANTS = ("alpha", "beta", "gamma")


@dataclass
class Run:
    name: str
    wall_s: float
    requests: int
    peak_rss_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --- data -------------------------------------------------------------------------------------


def org_id(t: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"org-{t}"))


def patient_id(i: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"patient-{i}"))


def live_tenant(i: int) -> int:
    return i % 3


def wanted_tenant(i: int, fraction: float) -> int:
    """Every 1/fraction-th patient moves to the next tenant: one account added, one removed."""
    step = max(1, round(1 / fraction)) if fraction > 0 else 0
    return (i + 1) % 3 if step and i % step == 0 else i % 3


class SandboxIds:
    """The ids the sandbox seed writes (uuid5); a seeded remote copy (`remote.Seeded`) answers
    the same two questions from what the server assigned."""

    org_id = staticmethod(org_id)
    patient_id = staticmethod(patient_id)


class Ids(Protocol):
    def org_id(self, t: int) -> str: ...
    def patient_id(self, i: int) -> str: ...


def seed(path: Path, patients: int, per_patient: int) -> None:
    store = Store(str(path))

    def resources() -> Any:
        for t, name in enumerate(TENANTS):
            yield {"resourceType": "Organization", "id": org_id(t), "name": name, "meta": {}}
        for i in range(patients):
            pid = patient_id(i)
            accounts = [{"reference": f"Organization/{org_id(live_tenant(i))}"}]
            yield {
                "resourceType": "Patient",
                "id": pid,
                "meta": {"accounts": accounts},
                "identifier": [{"system": "urn:bench:mrn", "value": f"B-{i}"}],
            }
            for j in range(per_patient):
                yield {
                    "resourceType": "Observation" if j % 2 == 0 else "Encounter",
                    "id": str(uuid.uuid5(NAMESPACE, f"r-{i}-{j}")),
                    "meta": {"accounts": accounts},
                    "status": "final" if j % 2 == 0 else "finished",
                    "subject": {"reference": f"Patient/{pid}"},
                }

    batch: list[dict[str, Any]] = []
    for resource in resources():
        batch.append(resource)
        if len(batch) >= 20_000:
            store.bulk_insert(batch)
            batch = []
    store.bulk_insert(batch)
    store.close()


FLOOR_FROM = str(uuid.uuid5(NAMESPACE, "floor-from"))
FLOOR_TO = str(uuid.uuid5(NAMESPACE, "floor-to"))
FLOOR_KINDS = ("sync-before", "async-before", "sync-after", "async-after")


def floor_patient_id(kind: str, i: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"floor-{kind}-{i}"))


def seed_floor_patients(path: Path, kinds: Sequence[str], count: int, per_patient: int) -> None:
    """Fresh patients for the direct-rate floors, like the scenario's (the same compartment
    size), in an organisation of their own that no manifest names (FLOOR_FROM)."""
    store = Store(str(path))
    accounts = [{"reference": f"Organization/{FLOOR_FROM}"}]
    batch: list[dict[str, Any]] = [
        {"resourceType": "Organization", "id": org, "name": org, "meta": {}}
        for org in (FLOOR_FROM, FLOOR_TO)
    ]
    for kind in kinds:
        for i in range(count):
            pid = floor_patient_id(kind, i)
            batch.append({"resourceType": "Patient", "id": pid, "meta": {"accounts": accounts}})
            for j in range(per_patient):
                batch.append({
                    "resourceType": "Observation" if j % 2 == 0 else "Encounter",
                    "id": str(uuid.uuid5(NAMESPACE, f"floor-{kind}-{i}-{j}")),
                    "meta": {"accounts": accounts},
                    "status": "final" if j % 2 == 0 else "finished",
                    "subject": {"reference": f"Patient/{pid}"},
                })  # fmt: skip
    store.bulk_insert(batch)
    store.close()


def write_manifests(directory: Path, patients: int, fraction: float, ids: Ids | None = None) -> int:
    ids = ids or SandboxIds()
    directory.mkdir(parents=True, exist_ok=True)
    members: list[list[str]] = [[], [], []]
    changes = 0
    for i in range(patients):
        t = wanted_tenant(i, fraction)
        changes += t != live_tenant(i)
        members[t].append(f"    - Patient/{ids.patient_id(i)}\n")
    for t, name in enumerate(TENANTS):
        with (directory / f"{name}.yaml").open("w") as fh:
            fh.write(
                f"apiVersion: reconciler/v1\nkind: Tenant\nmetadata:\n  name: {name}\n"
                f"spec:\n  account: Organization/{ids.org_id(t)}\n  patients:\n"
            )
            fh.writelines(members[t])
    return changes


# --- processes --------------------------------------------------------------------------------


class Sandbox:
    def __init__(self, data: Path, *flags: str) -> None:
        cmd = [
            sys.executable,
            "-m",
            "reconciler",
            "sandbox",
            "serve",
            "--port",
            "0",
            "--data",
            str(data),
            "--client",
            ":".join([*CLIENT, "admin"]),
            *flags,
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("Sandbox listening on "):
            raise SystemExit(f"sandbox did not start: {line!r}")
        self.url = line.removeprefix("Sandbox listening on ")
        self.creds = CLIENT

    def stats(self, reset: bool = False) -> dict[str, Any]:
        if reset:
            return dict(httpx.post(f"{self.url}/sandbox/stats").json())
        return dict(httpx.get(f"{self.url}/sandbox/stats").json())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@dataclass
class Remote:
    """A server the benchmark does not own (`--server URL`): no /sandbox/stats there, so
    requests are counted by the client (the CLI's `requests sent` event, pymedplum's hook)."""

    url: str
    creds: tuple[str, str]


Target = Sandbox | Remote


def run_cli(sb: Target, name: str, *args: str) -> tuple[Run, str, str]:
    env = {
        **os.environ,
        "MEDPLUM_BASE_URL": sb.url,
        "MEDPLUM_CLIENT_ID": sb.creds[0],
        "MEDPLUM_CLIENT_SECRET": sb.creds[1],
    }
    counted_here = isinstance(sb, Sandbox)
    if isinstance(sb, Sandbox):
        sb.stats(reset=True)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args, "--log-format", "json"]
        + ([] if counted_here else ["-v"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    out, err = proc.communicate()
    wall = time.monotonic() - started
    rss = _RSS.get(proc.pid)
    if isinstance(sb, Sandbox):
        requests = int(sb.stats().get("requests", 0)) - 1  # minus the stats call itself
    else:
        sent = [e for e in events(err) if e.get("event") == "requests sent"]
        requests = int(sent[-1]["requests"]) if sent else -1
    if proc.returncode not in (0, 2):
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{out[-2000:]}\n{err[-2000:]}")
    return Run(name, wall, requests, rss), out, err


_RSS: dict[int, float] = {}


def install_rss_hook() -> None:
    """Popen reaps its child in communicate(); wrap _try_wait to read the child's rusage."""
    original = subprocess.Popen._try_wait  # type: ignore[attr-defined]

    def try_wait(self: subprocess.Popen[str], wait_flags: int) -> tuple[int, int]:
        try:
            pid, status, usage = os.wait4(self.pid, wait_flags)
        except ChildProcessError:
            return original(self, wait_flags)  # type: ignore[no-any-return]
        if pid:
            _RSS[pid] = usage.ru_maxrss / 1024
        return pid, status

    subprocess.Popen._try_wait = try_wait  # type: ignore[attr-defined]


def events(stderr: str) -> list[dict[str, Any]]:
    out = []
    for line in stderr.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
