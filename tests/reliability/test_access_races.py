"""Tenant access under races and crashes: a membership written by someone else between apply's
read and its write (412 → re-read and re-plan: the other writer's entry survives), and kill -9
between revocations and grants (no membership ever holds more than its current plus desired
grants, and the next apply converges)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx

from reconciler.model import AccessKey, entry_json
from tests.reliability.conftest import FIGURES, finish, run_process, run_through
from tests.reliability.helpers import unlock
from tests.reliability.test_crash import wait_for
from tests.sandbox_process import AppSandbox

Run = Any
BILLING = {
    "resourceType": "AccessPolicy",
    "name": "billing",
    "resource": [{"resourceType": "Invoice"}],
}


def _setup(client: Any, n: int) -> tuple[str, str, str, list[str], dict[str, Any]]:
    north = "Organization/" + client.create_resource({"resourceType": "Organization"})["id"]
    south = "Organization/" + client.create_resource({"resourceType": "Organization"})["id"]
    policy = "AccessPolicy/" + client.create_resource(
        {"resourceType": "AccessPolicy", "name": "staff", "compartment": {"reference": "%organization"},
         "resource": [{"resourceType": "Patient", "criteria": "Patient?_compartment=%organization"}]}
    )["id"]  # fmt: skip
    # An unmanaged entry whose policy exists (a member whose policy is missing cannot log in).
    unmanaged = {"policy": {"reference": "AccessPolicy/" + client.create_resource(BILLING)["id"]}}
    refs = []
    for i in range(n):
        m = client.create_resource(
            {"resourceType": "ProjectMembership",
             "user": {"reference": f"ClientApplication/race-{i}"},
             "profile": {"reference": f"Practitioner/race-{i}"},
             "access": [AccessKey(policy, "organization", north).entry(), unmanaged]}
        )  # fmt: skip
        refs.append(f"ProjectMembership/{m['id']}")
    return north, south, policy, refs, unmanaged


def _manifests(tmp_path: Path, north: str, south: str, policy: str, refs: list[str]) -> str:
    """Every member moves from north to south (authoritative both)."""
    text = ""
    for name, account, members in (("north", north, []), ("south", south, refs)):
        text += (
            f"---\napiVersion: reconciler/v1\nkind: Tenant\nmetadata: {{name: {name}}}\n"
            f"spec:\n  account: {account}\n  access:\n    - policy: {policy}\n      members:"
            + ("".join(f"\n        - {r}" for r in members) if members else " []")
            + "\n"
        )
    path = tmp_path / "tenants.yaml"
    path.write_text(text)
    return str(path)


class RacingTransport(httpx.BaseTransport):
    """Before apply's first PUT of a membership goes through, another admin adds an unmanaged
    entry to it: apply's If-Match must fail (412), and the re-plan must keep that entry."""

    def __init__(self, inner: httpx.BaseTransport, other: Any) -> None:
        self.inner = inner
        self.other = other
        self.raced: set[str] = set()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "PUT" and "/ProjectMembership/" in path:
            rid = path.rsplit("/", 1)[1]
            if rid not in self.raced:
                self.raced.add(rid)
                current = self.other.read_resource("ProjectMembership", rid)
                extra = {"policy": {"reference": f"AccessPolicy/foreign-{rid[:8]}"}}
                self.other.update_resource({**current, "access": [*current["access"], extra]})
        return self.inner.handle_request(request)


def test_a_412_rereads_and_replans_and_the_other_writers_entry_survives(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    sb = AppSandbox()
    admin = sb.client()
    north, south, policy, refs, unmanaged = _setup(admin, 4)
    manifests = _manifests(tmp_path, north, south, policy, refs)
    racing = RacingTransport(sb.transport, sb.client())
    code, out, err = run_through(
        racing, sb, monkeypatch, capsys, "apply", manifests, "--auto-approve", "--no-verify"
    )
    assert code == 0, out + err
    assert "Access updated: 4 grants added, 4 grants revoked, on 4 memberships." in out
    assert len(racing.raced) == 4
    for ref in refs:
        entries = admin.read_resource(*ref.split("/"))["access"]
        rid = ref.split("/")[1]
        assert entries == [
            unmanaged,
            {"policy": {"reference": f"AccessPolicy/foreign-{rid[:8]}"}},
            AccessKey(policy, "organization", south).entry(),
        ]
    sb.stop()


def test_kill_9_between_revocations_and_grants_never_over_exposes_and_converges(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory("--latency-ms", "15")
    client = sb.client()
    north, south, policy, refs, unmanaged = _setup(client, 40)
    manifests = _manifests(tmp_path, north, south, policy, refs)
    north_entry = entry_json(AccessKey(policy, "organization", north).entry())
    south_entry = entry_json(AccessKey(policy, "organization", south).entry())
    allowed = {north_entry, south_entry, entry_json(unmanaged)}

    def entries() -> dict[str, list[str]]:
        return {
            f"ProjectMembership/{m['id']}": [entry_json(e) for e in m.get("access") or []]
            for m in client.read_many("ProjectMembership", [r.split("/")[1] for r in refs])
        }

    proc = run_process(sb, "apply", manifests, "--auto-approve", "--allow-mass-grant",
                       "--parallelism", "2", "--lock-ttl", "2s", "--timeout", "1")  # fmt: skip
    # Kill it once some revocations landed (each member is written twice: revoke, then grant).
    wait_for(lambda: sum(north_entry not in e for e in entries().values()) >= 3, step=0.01)
    proc.send_signal(signal.SIGKILL)
    code, _, _ = finish(proc)
    assert code == -signal.SIGKILL
    FIGURES["apply processes killed"] += 1
    state = entries()
    assert len(state) == len(refs)
    for ref, held in state.items():
        assert set(held) <= allowed, (ref, held)  # never anything but current + desired
        assert held, (ref, "left with no access: fail-open")
        assert not (north_entry in held and south_entry in held), (ref, "both tenants at once")
    unfinished = [r for r, held in state.items() if south_entry not in held]
    assert unfinished, "the kill came too late to test anything"
    (lock,) = client.search_all(
        "Basic", {"identifier": "https://github.com/medplum-tenancy-reconciler/lock|apply"}
    )
    assert unlock(run, sb, lock["id"]) == 0  # the dead run's lock, removed by hand
    code, out, _ = run(sb, "plan", manifests, "--format", "json", "--no-estimate")
    assert code == 0
    assert {c["membership"] for c in json.loads(out)["access_changes"]} == set(unfinished)
    code, out, err = run(sb, "apply", manifests, "--auto-approve", "--allow-mass-grant")
    assert code == 0, err
    assert all(held == [entry_json(unmanaged), south_entry] for held in entries().values())
    code, out, _ = run(sb, "verify", manifests, "--access")
    assert code == 0 and "0 mismatches" in out, out
