"""apply/verify.py against the sandbox app: stragglers found in batches and repaired."""

from __future__ import annotations

from reconciler.apply.verify import Expectation, find_stragglers, repair
from reconciler.medplum.client import MedplumClient
from tests.integration.helpers import create_org, create_patients


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
