"""Scenario data for the reliability suite: tenants, patients with unmanaged accounts and
compartments, and the exact state the manifests ask for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.medplum.accounts import get_resource_accounts
from reconciler.medplum.client import MedplumClient
from tests.integration.helpers import create_org, create_patients, tenant_yaml, write


@dataclass
class Scenario:
    manifests: str
    north: str
    south: str
    legacy: str
    patients: list[str]  # every patient of the scenario
    desired: dict[str, list[str]]  # patient → accounts after a converged apply (as a set)
    before: dict[str, list[str]]  # patient → accounts before

    def allowed(self) -> set[str]:
        return {self.north, self.south, self.legacy}


def build(client: MedplumClient, tmp_path: Path, n: int = 30, compartment: int = 2) -> Scenario:
    """Half the patients join north (keeping the unmanaged legacy account), a third of the
    south members leave it; the rest stay as they are."""
    north, south, legacy = create_org(client), create_org(client), create_org(client)
    plain = create_patients(client, n, accounts=[legacy], compartment=compartment)
    southern = create_patients(client, n // 2, accounts=[south, legacy], compartment=compartment)
    joiners = plain[: n // 2]
    leavers = southern[: n // 6]
    stayers = southern[n // 6 :]
    manifests = write(
        tmp_path,
        "tenants.yaml",
        tenant_yaml("north", north, joiners) + "---\n" + tenant_yaml("south", south, stayers),
    )
    before = {p: [legacy] for p in plain} | {p: [south, legacy] for p in southern}
    desired = dict(before)
    for p in joiners:
        desired[p] = [legacy, north]
    for p in leavers:
        desired[p] = [legacy]
    return Scenario(manifests, north, south, legacy, plain + southern, desired, before)


def state(client: MedplumClient, refs: list[str]) -> dict[str, list[str]]:
    found = client.read_many("Patient", [r.split("/")[1] for r in refs])
    return {f"Patient/{r['id']}": get_resource_accounts(r) for r in found}


def assert_invariants(client: MedplumClient, scenario: Scenario) -> set[str]:
    """Never an unmanaged account lost, never an account the plan did not contain, in patients
    and their compartments. Returns the patients that are not (yet) as desired."""
    now = state(client, scenario.patients)
    behind = set()
    for ref, accounts in now.items():
        assert scenario.legacy in accounts, f"{ref} lost its unmanaged account: {accounts}"
        assert set(accounts) <= scenario.allowed(), (
            f"{ref} carries an unplanned account: {accounts}"
        )
        assert set(accounts) in (set(scenario.before[ref]), set(scenario.desired[ref])), (
            ref,
            accounts,
        )
        if set(accounts) != set(scenario.desired[ref]):
            behind.add(ref)
    for resource in client.read_compartments(scenario.patients):
        accounts = get_resource_accounts(resource)
        assert set(accounts) <= scenario.allowed(), (resource["id"], accounts)
        assert scenario.legacy in accounts, (resource["id"], accounts)
    return behind


def unlock(run: Any, sb: Any, lock_id: str) -> int:
    """force-unlock a dead run's lock: live on the server's clock (it was renewed within its
    TTL before the kill), so it takes --force and a 'yes' (design section 11)."""
    import io
    import sys

    saved, sys.stdin = sys.stdin, io.StringIO("yes\n")
    try:
        code: int = run(sb, "force-unlock", lock_id, "--force")[0]
    finally:
        sys.stdin = saved
    return code
