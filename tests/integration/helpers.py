"""Seeding through the API and running the CLI in-process against a sandbox process."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli import main
from reconciler.medplum.accounts import get_resource_accounts
from reconciler.medplum.client import MedplumClient
from tests.sandbox_process import ADMIN, AppSandbox


def create_org(client: MedplumClient, name: str = "Org", identifier: str | None = None) -> str:
    body: dict[str, Any] = {"resourceType": "Organization", "name": name}
    if identifier:
        system, value = identifier.split("|")
        body["identifier"] = [{"system": system, "value": value}]
    return "Organization/" + client.create_resource(body)["id"]


def create_patients(
    client: MedplumClient,
    count: int,
    *,
    accounts: list[str] | None = None,
    compartment: int = 0,
    family: str | None = None,
    mrn_prefix: str | None = None,
) -> list[str]:
    """Create patients (and `compartment` Observations/Encounters each) in batch bundles."""
    prefix = mrn_prefix or uuid.uuid4().hex[:8]
    entries = []
    for i in range(count):
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:test:mrn", "value": f"{prefix}-{i}"}],
            "name": [{"family": family or f"Fam{prefix}", "given": [f"G{i}"]}],
        }
        if accounts:
            patient["meta"] = {"accounts": [{"reference": a} for a in accounts]}
        entries.append({"request": {"method": "POST", "url": "Patient"}, "resource": patient})
    refs: list[str] = []
    for start in range(0, len(entries), 1000):
        chunk = entries[start : start + 1000]
        body = client.request(
            "POST", "", json={"resourceType": "Bundle", "type": "batch", "entry": chunk}
        ).body
        refs += [e["response"]["location"] for e in body["entry"]]
    if compartment:
        members = []
        for ref in refs:
            for j in range(compartment):
                if j % 2 == 0:
                    res = {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"text": f"o{j}"},
                        "subject": {"reference": ref},
                    }
                else:
                    res = {
                        "resourceType": "Encounter",
                        "status": "finished",
                        "class": {"code": "AMB"},
                        "subject": {"reference": ref},
                    }
                members.append(
                    {"request": {"method": "POST", "url": res["resourceType"]}, "resource": res}
                )
        for start in range(0, len(members), 1000):
            batch = {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": members[start : start + 1000],
            }
            body = client.request("POST", "", json=batch).body
            assert all(e["response"]["status"] == "201" for e in body["entry"]), body["entry"][0]
    return refs


def demo_data(tmp_path: Path, patients: int, per_patient: int) -> tuple[str, Path]:
    """`sandbox seed` demo data in a file under tmp_path, and a copy of examples/tenants/."""
    import shutil

    from reconciler.sandbox import seed as seeding
    from reconciler.sandbox.store import Store

    data = str(tmp_path / "demo.sqlite")
    store = Store(data)
    seeding.seed(store, patients=patients, per_patient=per_patient)
    store.close()
    manifests = tmp_path / "tenants"
    shutil.copytree(Path(__file__).resolve().parents[2] / "examples" / "tenants", manifests)
    return data, manifests


def seed_store(path: str, patients: int, compartment: int) -> tuple[str, list[str]]:
    """Write an Organization and patients with compartment resources straight into a sandbox
    data file (before its server starts): setup that must not spend a metered quota."""
    from reconciler.sandbox.store import Store

    store = Store(path)
    org_id = str(uuid.uuid4())
    resources: list[dict[str, Any]] = [
        {"resourceType": "Organization", "id": org_id, "name": "Seeded", "meta": {}}
    ]
    refs = []
    for _ in range(patients):
        pid = str(uuid.uuid4())
        refs.append(f"Patient/{pid}")
        resources.append({"resourceType": "Patient", "id": pid, "meta": {}})
        for j in range(compartment):
            resources.append(
                {
                    "resourceType": "Observation",
                    "id": str(uuid.uuid4()),
                    "meta": {},
                    "status": "final",
                    "code": {"text": f"o{j}"},
                    "subject": {"reference": f"Patient/{pid}"},
                }
            )
    store.bulk_insert(resources)
    store.close()
    return f"Organization/{org_id}", refs


def mrn(client: MedplumClient, ref: str) -> str:
    p = client.read_resource(*ref.split("/"))
    ident = p["identifier"][0]
    return f"{ident['system']}|{ident['value']}"


def accounts_by_ref(client: MedplumClient, refs: list[str]) -> dict[str, list[str]]:
    """Every patient's accounts in one batched read (not one request per patient)."""
    found = client.read_many("Patient", [r.split("/", 1)[1] for r in refs])
    accounts = {f"Patient/{p['id']}": get_resource_accounts(p) for p in found}
    assert set(accounts) == set(refs), "patients missing on the server"
    return accounts


def accounts_of(client: MedplumClient, ref: str) -> list[str]:
    return get_resource_accounts(client.read_resource(*ref.split("/")))


def tenant_yaml(
    name: str,
    account: str,
    patients: list[str],
    *,
    membership: str = "authoritative",
    propagate: bool = True,
) -> str:
    lines = [
        "apiVersion: reconciler/v1",
        "kind: Tenant",
        "metadata:",
        f"  name: {name}",
        "spec:",
        f"  account: {account}",
        f"  membership: {membership}",
        f"  propagate: {'true' if propagate else 'false'}",
        "  patients:",
    ]
    lines += [f"    - {p}" for p in patients]
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run_cli(
    sandbox: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    creds: tuple[str, str] = ADMIN,
) -> tuple[int, str, str]:
    """The CLI in-process against `sandbox` as the client `creds`, logs as JSON lines."""
    monkeypatch.setenv("MEDPLUM_BASE_URL", sandbox.url)
    monkeypatch.setenv("MEDPLUM_CLIENT_ID", creds[0])
    monkeypatch.setenv("MEDPLUM_CLIENT_SECRET", creds[1])
    capsys.readouterr()
    code = main([*args, "--log-format", "json"])
    out, err = capsys.readouterr()
    return code, out, err


def log_events(err: str) -> list[dict[str, Any]]:
    """The JSON log events of a run's stderr (`--log-format json`), in order."""
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def run_cli_app(
    sandbox: AppSandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> tuple[int, str, str]:
    """Run the CLI in-process with its client routed onto an AppSandbox (transport + clock)."""
    import reconciler.connect

    def build_client(url: str, client_id: Any, client_secret: Any, **_: Any) -> MedplumClient:
        return sandbox.client((client_id, client_secret))

    monkeypatch.setattr(reconciler.connect, "build_client", build_client)
    return run_cli(sandbox, monkeypatch, capsys, *args)
