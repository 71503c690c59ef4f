"""apply/verify.py, apply/lock.py and importer.py against the sandbox app."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from reconciler.apply.lock import ApplyLock, force_unlock
from reconciler.apply.verify import Expectation, find_stragglers, repair
from reconciler.errors import ApplyRefused, ReconcilerError
from reconciler.importer import write_manifest
from reconciler.manifest import load_manifests
from reconciler.medplum.client import MedplumClient
from tests.integration.helpers import create_org, create_patients, mrn

# --- verify ---------------------------------------------------------------------------------


def test_stragglers_found_in_batches_and_repaired(client: MedplumClient) -> None:
    org, old = create_org(client), create_org(client)
    a, b = create_patients(client, 2, compartment=3, accounts=[old])
    client.set_accounts(a, [org], propagate=True)  # a's compartment follows
    client.set_accounts(b, [org])  # b's does not: 3 stragglers still in `old`, not in `org`
    expect = Expectation(must_have=frozenset({org}), must_not=frozenset({old}))
    stragglers, read = find_stragglers(client, {a: expect, b: expect})
    assert read == 6
    assert {s.patient for s in stragglers} == {b} and len(stragglers) == 3
    assert all(s.have == (old,) and s.want == (org,) for s in stragglers)
    assert repair(client, stragglers, parallelism=2) == 3
    assert find_stragglers(client, {a: expect, b: expect}) == ([], 6)


# --- lock -----------------------------------------------------------------------------------


def test_lock_is_exclusive_released_and_an_expired_one_taken_over(client: MedplumClient) -> None:
    first = ApplyLock(client, plan_digest="sha256:a", ttl_s=600)
    first.acquire()
    second = ApplyLock(client, plan_digest="sha256:b", ttl_s=600)
    with pytest.raises(ApplyRefused, match="another apply holds the lock") as info:
        second.acquire()
    assert info.value.args[0].endswith(f"reconciler force-unlock {first.info.id}")  # type: ignore[union-attr]
    first.release()
    second.acquire()  # free again
    second.release()
    stale = ApplyLock(client, plan_digest="sha256:c", ttl_s=0.05)
    stale.acquire()
    stale._stop.set()  # a crashed apply: never renewed, never released
    time.sleep(0.1)
    taker = ApplyLock(client, plan_digest="sha256:d", ttl_s=600)
    taker.acquire()  # expired: taken over with If-Match on the version it saw
    assert taker.info is not None and stale.info is not None
    assert taker.info.id == stale.info.id and taker.info.run == taker.run_id
    stale.release()  # the old holder must not delete a lock it lost
    assert client.read_resource("Basic", taker.info.id)["id"] == taker.info.id
    taker.release()


def test_force_unlock_removes_only_lock_records(client: MedplumClient) -> None:
    other = client.create_resource({"resourceType": "Basic", "code": {"text": "not a lock"}})
    with pytest.raises(ApplyRefused, match="is not a reconciler apply lock"):
        force_unlock(client, other["id"])
    lock = ApplyLock(client, plan_digest="sha256:e")
    lock.acquire()
    lock._stop.set()
    assert lock.info is not None
    assert force_unlock(client, lock.info.id).id == lock.info.id
    after = ApplyLock(client, plan_digest="sha256:f")
    after.acquire()  # the lock is free again
    after.release()


# --- import ---------------------------------------------------------------------------------


def test_import_lists_by_identifier_when_unique_else_by_id(
    client: MedplumClient, tmp_path: Path
) -> None:
    org = create_org(client, "Imported Clinic")
    refs = create_patients(client, 3, accounts=[org])
    out = io.StringIO()
    assert write_manifest(client, org, out, identifier_system="urn:test:mrn") == (3, "identifier")
    path = tmp_path / "imported.yaml"
    path.write_text(out.getvalue())
    (tenant,) = load_manifests([str(path)]).tenants  # a valid manifest
    assert tenant.name == "imported-clinic"
    assert sorted(s.value for s in tenant.patients) == sorted(mrn(client, r) for r in refs)
    # A duplicate identifier elsewhere on the server makes identifiers ambiguous: ids instead.
    dup = client.read_resource(*refs[0].split("/"))
    client.create_resource({"resourceType": "Patient", "identifier": dup["identifier"]})
    out = io.StringIO()
    assert write_manifest(client, org, out, identifier_system="urn:test:mrn") == (3, "id")
    assert sorted(
        line.strip("- \n") for line in out.getvalue().splitlines() if "Patient/" in line
    ) == sorted(refs)


def test_import_of_an_account_without_members_is_an_error(client: MedplumClient) -> None:
    org = create_org(client)
    with pytest.raises(ReconcilerError, match="has no member patients"):
        write_manifest(client, org, io.StringIO())


def test_release_never_raises_and_says_how_to_clear_a_lock_it_could_not_remove(
    client: MedplumClient,
) -> None:
    lock = ApplyLock(client, plan_digest="sha256:gone")
    lock.acquire()
    lock._stop.set()
    assert lock.info is not None
    lock_id = lock.info.id
    # The server is gone: one quick DELETE (a second Ctrl-C), no retries, a line to act on.
    lock.client = MedplumClient("http://127.0.0.1:9", "c", "s3cr3t-x", timeout=1, max_retries=0)
    started = time.monotonic()
    note = lock.release(quick=True)
    assert time.monotonic() - started < 5
    assert note is not None and note.startswith(f"The apply lock Basic/{lock_id} was not released")
    assert note.endswith(f"or remove it with: reconciler force-unlock {lock_id}")
