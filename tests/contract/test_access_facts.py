"""The server facts the access proof relies on (issue 25; medplum-api.md, "Compartments,
parameters and admin reach", observed on 5.0.10 and 5.1.29): compartments match by id; access
parameters grant by value; values are pasted into policies unescaped; on-behalf-of counts see
exactly a member's tenant, per type and in a batch. Runs against the sandbox in `make test`
and against any Medplum with `make contract`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from reconciler.medplum.client import MedplumClient
from tests.contract.conftest import Target
from tests.contract.test_contract import org, patients


@dataclass
class Member:
    """A ClientApplication with its membership, made with Medplum's admin API."""

    membership: str
    client_id: str
    secret: str


def new_member(target: Target, client: MedplumClient, name: str) -> Member:
    me = client.request("GET", client.base_url + "auth/me").body
    project = me["project"]["id"]
    created = client.request(
        "POST", client.base_url + f"admin/projects/{project}/client",
        json={"name": f"{name}-{target.run}", "description": "reconciler contract"},
    ).body  # fmt: skip
    found = list(
        client.search_all("ProjectMembership", [("profile", f"ClientApplication/{created['id']}")])
    )
    assert len(found) == 1, found
    return Member(f"ProjectMembership/{found[0]['id']}", created["id"], created["secret"])


def set_access(client: MedplumClient, member: Member, entries: list[dict[str, Any]]) -> None:
    current = client.read_resource(*member.membership.split("/"))
    client.update_resource({**current, "access": entries}, if_match=current["meta"]["versionId"])


def tenant_policy(target: Target, client: MedplumClient, *types: str) -> str:
    body = {
        "resourceType": "AccessPolicy",
        "name": f"contract-tenant-{target.run}",
        "compartment": {"reference": "%organization"},
        "resource": [
            {"resourceType": t, "criteria": f"{t}?_compartment=%organization"} for t in types
        ],
    }
    return "AccessPolicy/" + client.create_resource(body)["id"]


def grant(policy: str, **value: Any) -> dict[str, Any]:
    return {"policy": {"reference": policy}, "parameter": [{"name": "organization", **value}]}


def test_compartments_match_by_id_whatever_the_type_case_or_version(target: Target) -> None:
    client = target.client()
    x = org(target, client, "byid")
    xid = x.split("/", 1)[1]
    forms = [x, f"Practitioner/{xid}", f"Organization/{xid.upper()}", f"{x}/_history/1"]
    outside = [f"{target.url.rstrip('/')}/fhir/R4/{x}"]  # an absolute URL is in no compartment
    for i, form in enumerate([*forms, *outside]):
        patients(target, client, 1, f"byid{i}", accounts=[form])
    params = [("identifier", ",".join(f"{target.system}|byid{i}-0" for i in range(5)))]
    assert client.count("Patient", [*params, ("_compartment", x)]) == len(forms)


def test_parameters_grant_by_value_and_a_version_grants_nothing(target: Target) -> None:
    client = target.client()
    x = org(target, client, "param")
    xid = x.split("/", 1)[1]
    patients(target, client, 2, "param", accounts=[x])
    patients(target, client, 1, "paramother", accounts=[org(target, client, "other")])
    policy = tenant_policy(target, client, "Patient")
    member = new_member(target, client, "param")
    query = [("identifier", ",".join(f"{target.system}|{p}" for p in
                                     ("param-0", "param-1", "paramother-0")))]  # fmt: skip
    for value, sees in [
        ({"valueReference": {"reference": x}}, 2),
        ({"valueString": x}, 2),
        ({"valueString": xid}, 2),
        ({"valueReference": {"reference": f"{x}/_history/1"}}, 0),
    ]:
        set_access(client, member, [grant(policy, **value)])
        assert client.count("Patient", query, on_behalf_of=member.membership) == sees, value


def test_parameter_values_are_pasted_into_the_policy_unescaped(target: Target) -> None:
    client = target.client()
    policy = tenant_policy(target, client, "Patient")
    member = new_member(target, client, "quote")
    set_access(client, member, [grant(policy, valueString='x"y')])
    r = httpx.post(
        target.url.rstrip("/") + "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": member.client_id,
              "client_secret": member.secret},
    )  # fmt: skip
    assert r.status_code == 400, r.text
    assert "Expected ',' or '}'" in r.text


def test_on_behalf_of_counts_per_type_and_in_a_batch(target: Target) -> None:
    client = target.client()
    x, y = org(target, client, "obo-x"), org(target, client, "obo-y")
    (px,) = patients(target, client, 1, "obox", accounts=[x])
    (py,) = patients(target, client, 1, "oboy", accounts=[y])
    for ref in (px, py):
        client.create_resource({"resourceType": "Observation", "status": "final",
                                "code": {"text": target.run}, "subject": {"reference": ref}})  # fmt: skip
    member = new_member(target, client, "obo")
    set_access(client, member, [grant(tenant_policy(target, client, "Patient", "Observation"),
                                      valueReference={"reference": x})])  # fmt: skip
    mine_patients = [("identifier", f"{target.system}|obox-0,{target.system}|oboy-0")]
    mine_obs = [("subject", f"{px},{py}")]
    as_member = member.membership
    assert client.count("Patient", mine_patients, on_behalf_of=as_member) == 1
    assert client.count("Observation", mine_obs, on_behalf_of=as_member) == 1
    assert (
        client.count("Observation", [*mine_obs, ("_compartment", y)], on_behalf_of=as_member) == 0
    )
    counts = client.count_many(
        [("Patient", mine_patients), ("Observation", mine_obs),
         ("Observation", [*mine_obs, ("_compartment", x)]), ("Encounter", [])],
        on_behalf_of=as_member,
    )  # fmt: skip
    assert counts == [1, 1, 1, 0]  # a type outside its policy: it sees none (403 → 0)


def test_a_non_admin_cannot_act_on_behalf_of_anyone(target: Target) -> None:
    client = target.client()
    member = new_member(target, client, "plain")
    set_access(client, member, [grant(tenant_policy(target, client, "Patient"),
                                      valueReference={"reference": org(target, client, "nb")})])  # fmt: skip
    plain = MedplumClient(target.url, member.client_id, member.secret)
    with pytest.raises(Exception) as info:
        plain.count("Patient", on_behalf_of=member.membership)
    assert getattr(info.value, "status", None) in (400, 403)  # 5.0.10: 403; 5.1.29: 400
