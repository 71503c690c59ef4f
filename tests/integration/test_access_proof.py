"""Over-exposure that plan and verify must not miss (issue 25; design section 11), each attack
through the CLI against a sandbox seeded with the demo data, which files compartments by id and
grants parameters by value like Medplum 5.0.10 and 5.1.29."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.apply.lock import ApplyLock
from reconciler.medplum.accounts import get_resource_accounts
from reconciler.medplum.client import MedplumClient
from reconciler.sandbox import seed as seeding
from reconciler.sandbox.store import Store
from tests.conftest import resign
from tests.sandbox_process import InProcessSandbox

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tenants"
POLICY = f"AccessPolicy/{seeding.CLINIC_STAFF_POLICY}"
NORTH = f"Organization/{seeding.ORG_NORTH}"
SOUTH = f"Organization/{seeding.ORG_SOUTH}"
RESEARCH = f"Organization/{seeding.ORG_RESEARCH}"
NURSE_NORTH = "ProjectMembership/0f1e0006-0000-4000-8000-000000000001"
DESK_NORTH = "ProjectMembership/0f1e0006-0000-4000-8000-000000000002"
Cli = Any


@pytest.fixture
def demo(make_sandbox: Any, tmp_path: Path, cli: Cli) -> tuple[InProcessSandbox, Path]:
    """The demo data with the examples applied: every member sees exactly its tenant."""
    data = str(tmp_path / "demo.sqlite")
    store = Store(data)
    seeding.seed(store, patients=24, per_patient=2)
    store.close()
    manifests = tmp_path / "tenants"
    shutil.copytree(EXAMPLES, manifests)
    sb = make_sandbox(data=data)
    code, _, err = cli(sb, "apply", str(manifests), "--auto-approve")
    assert code == 0, err
    return sb, manifests


def count(sb: InProcessSandbox, rtype: str = "Patient", *, as_member: str | None = None,
          compartment: str | None = None) -> int:  # fmt: skip
    headers = {"Authorization": f"Bearer {sb.token()}"}
    if as_member:
        headers["X-Medplum-On-Behalf-Of"] = as_member
    params = {"_summary": "count", **({"_compartment": compartment} if compartment else {})}
    r = httpx.get(f"{sb.url}/fhir/R4/{rtype}", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def patient(client: MedplumClient, *accounts: str, family: str = "Alias") -> str:
    body = {"resourceType": "Patient", "name": [{"family": family}],
            "meta": {"accounts": [{"reference": a} for a in accounts]}}  # fmt: skip
    return "Patient/" + client.create_resource(body)["id"]


def entry(account: str, *, string: bool = False, policy: str = POLICY) -> dict[str, Any]:
    value = {"valueString": account} if string else {"valueReference": {"reference": account}}
    return {"policy": {"reference": policy}, "parameter": [{"name": "organization", **value}]}


def add_entries(client: MedplumClient, membership: str, *entries: dict[str, Any]) -> None:
    current = client.read_resource(*membership.split("/"))
    client.update_resource({**current, "access": [*current.get("access", []), *entries]})


# --- an account is its id ---------------------------------------------------------------------


def test_aliases_of_an_account_are_that_account_for_plan_apply_and_access(
    demo: Any, cli: Cli
) -> None:
    sb, manifests = demo
    client = sb.client()
    north_id = seeding.ORG_NORTH
    members = count(sb, compartment=NORTH)
    aliases = [
        f"Practitioner/{north_id}",  # another type, the same id
        f"Organization/{north_id.upper()}",  # another case
        f"Organization/{north_id}/_history/1",  # a version
    ]
    strays = [patient(client, a) for a in aliases]
    # Medplum files them under north: north's staff see them, and so does a compartment search.
    assert count(sb, compartment=NORTH) == members + 3
    assert count(sb, as_member=NURSE_NORTH) == members + 3
    # Not aliases: an absolute URL and a display-only entry are in no compartment.
    url = patient(client, f"http://elsewhere.example/fhir/R4/{NORTH}")
    assert count(sb, compartment=NORTH) == members + 3
    code, out, _ = cli(sb, "plan", str(manifests), "--no-estimate")
    assert code == 0
    for ref, alias in zip(strays, aliases, strict=True):
        block = out.split(f"  ~ {ref}\n", 1)[1].split("\n\n", 1)[0]
        assert block.splitlines() == [
            f"      - {alias}   (alias of tenant northside's account)",
            f"      meta.account changes: {alias} -> none",
        ], block
    assert url not in out
    assert "Plan: 3 patients to update, 0 accounts to add, 3 accounts to remove." in out
    code, out, _ = cli(sb, "plan", str(manifests), "--format", "json", "--no-estimate")
    changes = {c["patient"]: c for c in json.loads(out)["changes"]}
    assert changes[strays[0]]["aliases"] == {aliases[0]: NORTH}
    assert changes[strays[0]]["remove"] == [aliases[0]] and changes[strays[0]]["tenants"] == [
        "northside"
    ]
    code, out, err = cli(sb, "apply", str(manifests), "--auto-approve")
    assert code == 0, err
    assert all(get_resource_accounts(client.read_resource(*r.split("/"))) == [] for r in strays)
    assert count(sb, as_member=NURSE_NORTH) == members
    code, out, _ = cli(sb, "plan", str(manifests), "--detailed-exitcode", "-q")
    assert code == 0 and out.splitlines()[-1] == "No changes. Live accounts match the manifests."


def test_a_members_alias_is_enough_and_an_additive_tenant_keeps_aliases(
    demo: Any, cli: Cli
) -> None:
    sb, manifests = demo
    client = sb.client()
    # Ana (A-1001) is a Northside member: carrying north's id in upper case, she is in north.
    ana = f"Patient/{seeding.named_patient_id(1)}"
    accounts = get_resource_accounts(client.read_resource(*ana.split("/")))
    shouted = [f"Organization/{seeding.ORG_NORTH.upper()}" if a == NORTH else a for a in accounts]
    client.set_accounts(ana, shouted)
    # Research Registry is additive: an alias of its account on a non-member stays.
    kept = patient(client, f"Practitioner/{seeding.ORG_RESEARCH}")
    code, out, _ = cli(sb, "plan", str(manifests), "--detailed-exitcode", "-q", "--no-estimate")
    assert code == 0, out
    assert ana not in out and kept not in out


def test_two_tenants_whose_accounts_share_an_id_fail_validation(tmp_path: Path, cli: Cli) -> None:
    from reconciler.cli import main

    one = "apiVersion: reconciler/v1\nkind: Tenant\nmetadata: {name: %s}\nspec:\n  account: %s\n  patients: []\n"
    path = tmp_path / "t.yaml"
    path.write_text(one % ("a", "Organization/abc") + "---\n" + one % ("b", "Practitioner/ABC"))
    assert main(["validate", str(path)]) == 1


# --- an access parameter is its value ---------------------------------------------------------


def test_value_string_grants_are_managed_grants_found_revoked_and_proven(
    demo: Any, cli: Cli
) -> None:
    sb, manifests = demo
    client = sb.client()
    south_patients = count(sb, compartment=SOUTH)
    add_entries(client, DESK_NORTH, entry(SOUTH, string=True))  # "Organization/<south>"
    add_entries(client, NURSE_NORTH, entry(seeding.ORG_SOUTH, string=True))  # the bare id
    assert count(sb, as_member=DESK_NORTH, compartment=SOUTH) == south_patients > 0
    code, out, _ = cli(sb, "verify", str(manifests), "--access", "--detailed-exitcode")
    assert code == 2
    lines = out.splitlines()
    assert (
        f"  {DESK_NORTH}: holds {POLICY}  organization={SOUTH}, which tenant southside does not grant it"
        in lines
    )
    assert any(
        line.startswith(f"  {NURSE_NORTH}: sees {south_patients} Patients of tenant southside")
        and line.endswith(
            f"through a managed entry no tenant grants it ({POLICY}  organization={SOUTH})"
        )
        for line in lines
    ), out
    code, out, _ = cli(sb, "plan", str(manifests), "--no-estimate")
    assert f"      - {POLICY}  organization={SOUTH}" in out
    assert f"      - {POLICY}  organization={seeding.ORG_SOUTH}" in out
    assert "(tenant southside, authoritative, another form of its grant)" in out
    assert "Access: 0 grants to add, 2 grants to revoke, on 2 memberships." in out
    code, _, err = cli(sb, "apply", str(manifests), "--auto-approve")
    assert code == 0, err
    assert count(sb, as_member=DESK_NORTH, compartment=SOUTH) == 0
    code, out, _ = cli(sb, "verify", str(manifests), "--access")
    assert code == 0 and "0 mismatches" in out


def test_a_parameter_value_holding_a_quote_is_never_written(demo: Any, cli: Cli) -> None:
    sb, manifests = demo
    client = sb.client()
    odd = {"policy": {"reference": POLICY},
           "parameter": [{"name": "organization", "valueString": 'x"y'}]}  # fmt: skip
    nurse = client.read_resource(*NURSE_NORTH.split("/"))
    client.update_resource({**nurse, "access": [odd]})  # an admin may write it; Medplum does
    # Like Medplum, the member can no longer sign in: the policy is no longer JSON.
    r = httpx.post(f"{sb.url}/oauth2/token", data={"grant_type": "client_credentials",
                   "client_id": "north-nurse", "client_secret": "north-nurse-secret"})  # fmt: skip
    assert r.status_code == 400 and "Expected ',' or '}'" in r.json()["error_description"]
    versions = client.read_resource(*NURSE_NORTH.split("/"))["meta"]["versionId"]
    code, out, err = cli(sb, "apply", str(manifests), "--auto-approve")
    assert code == 1 and out == ""
    assert any(
        line.startswith(f"Error: {NURSE_NORTH}: access entry {POLICY}  organization=")
        and 'holding " or \\, which Medplum pastes into the policy unescaped' in line
        for line in err.splitlines()
    ), err
    assert client.read_resource(*NURSE_NORTH.split("/"))["meta"]["versionId"] == versions


# --- a tenant policy is judged by what it grants -----------------------------------------------


@pytest.mark.parametrize(
    ("policy", "parameter", "problem"),
    [
        (
            {"compartment": {"reference": "%organization"},
             "resource": [{"resourceType": "Patient", "criteria": "Patient?_compartment=%organization"},
                          {"resourceType": "Observation"}]},
            "organization",
            "rule 2 (Observation) grants every Observation in the project, whatever the tenant",
        ),
        (
            {"name": "%organization staff", "compartment": {"reference": "Organization/fixed"},
             "resource": [{"resourceType": "Patient"}]},
            "organization",
            "has compartment 'Organization/fixed', not %organization",
        ),
        (None, "o", "has compartment '%organization', not %o"),
    ],
)  # fmt: skip
def test_policies_that_grant_more_than_the_tenant_are_refused(
    demo: Any, cli: Cli, policy: dict[str, Any] | None, parameter: str, problem: str
) -> None:
    sb, manifests = demo
    client = sb.client()
    ref = POLICY
    if policy is not None:
        ref = (
            "AccessPolicy/"
            + client.create_resource({"resourceType": "AccessPolicy", **policy})["id"]
        )
    north = manifests / "northside.yaml"
    north.write_text(
        north.read_text()
        .replace(f"policy: {POLICY}", f"policy: {ref}")
        .replace("parameter: organization", f"parameter: {parameter}")
    )
    code, out, err = cli(sb, "plan", str(manifests))
    assert code == 1 and out == ""
    assert any(problem in line and "(tenant 'northside')" in line for line in err.splitlines()), err


# --- verify proves "no more" -------------------------------------------------------------------


def test_verify_access_counts_every_type_and_names_the_unmanaged_entry(demo: Any, cli: Cli) -> None:
    sb, manifests = demo
    client = sb.client()
    everything = client.create_resource(
        {"resourceType": "AccessPolicy", "name": "all-patients",
         "resource": [{"resourceType": "Patient"}, {"resourceType": "Observation"}]}
    )  # fmt: skip
    add_entries(client, NURSE_NORTH, {"policy": {"reference": f"AccessPolicy/{everything['id']}"}})
    south = count(sb, compartment=SOUTH)
    south_obs = count(sb, "Observation", compartment=SOUTH)
    code, out, _ = cli(sb, "verify", str(manifests), "--access")
    assert code == 1
    lines = out.splitlines()
    via = f"through an unmanaged entry (AccessPolicy/{everything['id']})"
    assert f"  {NURSE_NORTH}: sees {south} Patients of tenant southside {via}" in lines
    assert f"  {NURSE_NORTH}: sees {south_obs} Observations of tenant southside {via}" in lines
    total = count(sb)
    north = count(sb, compartment=NORTH)
    assert (
        f"  {NURSE_NORTH}: sees {total} Patients in all, expected {north} (the Patients of "
        f"northside): {total - north} more {via}"
    ) in lines
    assert "Checked access of 5 memberships to 3 tenants:" in out


def test_orphans_are_found_and_repaired_under_the_lock_with_an_audit_record(
    demo: Any, cli: Cli
) -> None:
    sb, manifests = demo
    client = sb.client()
    # A patient in no tenant whose Observation carries north: north's staff can read it.
    stray = patient(client, family="Nobody")
    obs = client.create_resource(
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
         "subject": {"reference": stray}, "meta": {"accounts": [{"reference": NORTH}]}}
    )  # fmt: skip
    ref = f"Observation/{obs['id']}"
    assert get_resource_accounts(client.read_resource("Observation", obs["id"])) == [NORTH]
    code, out, _ = cli(sb, "verify", str(manifests), "--detailed-exitcode")
    assert code == 2
    assert (
        f"  {ref} ({stray}): carries {NORTH} (tenant northside), which its patient does not"
    ) in out.splitlines()
    audits = len(list(client.search_all("AuditEvent", [])))
    code, out, err = cli(sb, "verify", str(manifests), "--repair")
    assert code == 0, out + err
    assert "Repaired 1 of 1." in out and "apply lock taken" in err
    assert get_resource_accounts(client.read_resource("Observation", obs["id"])) == []
    events = list(client.search_all("AuditEvent", []))
    assert len(events) == audits + 1
    assert any(e["subtype"][0]["code"] == "verify-repair" for e in events)
    assert list(client.search_all("Basic", [])) == []  # the lock is released
    assert cli(sb, "verify", str(manifests))[0] == 0


def test_repair_goes_toward_the_manifests_and_leaves_a_drifted_patient_to_apply(
    demo: Any, cli: Cli
) -> None:
    sb, manifests = demo
    client = sb.client()
    chloe = f"Patient/{seeding.named_patient_id(3)}"  # a Northside member with Observations
    client.set_accounts(chloe, [])  # removed out of band, without propagation
    compartment = [r for r in client.read_compartments([chloe])]
    assert compartment and all(NORTH in get_resource_accounts(r) for r in compartment)
    code, out, _ = cli(sb, "verify", str(manifests), "--repair")
    assert code == 1
    assert f"  {chloe}: +{NORTH}" in out.splitlines()
    assert "run reconciler apply" in out
    # Its compartment was left alone: verify does not strip a tenant from a member's data.
    assert all(NORTH in get_resource_accounts(r) for r in client.read_compartments([chloe]))
    code, out, _ = cli(sb, "plan", str(manifests), "--no-estimate")
    assert f"  ~ {chloe}" in out


def test_access_repair_obeys_the_grant_guard_and_the_lock(
    demo: Any, cli: Cli, tmp_path: Path
) -> None:
    sb, manifests = demo
    client = sb.client()
    refs = []
    for i in range(15):
        m = client.create_resource(
            {"resourceType": "ProjectMembership", "user": {"reference": f"ClientApplication/x{i}"},
             "profile": {"reference": f"Practitioner/x{i}"}, "access": [entry(RESEARCH)]}
        )  # fmt: skip
        refs.append(f"ProjectMembership/{m['id']}")
    north = manifests / "northside.yaml"
    north.write_text(north.read_text() + "".join(f"        - {r}\n" for r in refs))
    before = {r: client.read_resource(*r.split("/"))["meta"]["versionId"] for r in refs}
    code, out, err = cli(sb, "verify", str(manifests), "--access", "--repair")
    assert code == 1
    assert err.splitlines()[-1] == (
        "Error: refusing to repair: the repair grants access to 15 memberships (more than 10; "
        "--allow-mass-grant to proceed); nothing was changed"
    )
    assert {r: client.read_resource(*r.split("/"))["meta"]["versionId"] for r in refs} == before
    # Another apply holds the lock: the repair waits for nobody.
    other = ApplyLock(sb.client(), plan_digest="sha256:other")
    other.acquire()
    code, out, err = cli(sb, "verify", str(manifests), "--access", "--repair", "--allow-mass-grant")
    assert code == 1 and "another apply holds the lock" in err.splitlines()[-1], out + err
    assert other.release() is None
    code, out, err = cli(sb, "verify", str(manifests), "--access", "--repair", "--allow-mass-grant")
    assert code == 0, out + err
    assert "Repaired access of 15 of 15 memberships: 15 grants added, 0 grants revoked." in out


# --- saved plans write only what they show -----------------------------------------------------


def test_a_saved_plan_that_would_write_other_than_it_shows_is_refused(
    demo: Any, cli: Cli, tmp_path: Path
) -> None:
    sb, manifests = demo
    client = sb.client()
    north = manifests / "northside.yaml"
    north.write_text(
        north.read_text() + "        - ProjectMembership/0f1e0006-0000-4000-8000-000000000005\n"
    )
    plan_file = tmp_path / "plan.json"
    assert cli(sb, "plan", str(manifests), "--out", str(plan_file))[0] == 0
    data = json.loads(plan_file.read_text())
    change = data["access_changes"][0]
    granted = next(e for e in change["after"] if e not in change["before"])
    # Shows organization=north (the reference), writes a grant of south (Medplum takes the
    # valueString first).
    granted["parameter"][0]["valueString"] = SOUTH
    for step in change["steps"]:
        step["access"] = change["after"]
    plan_file.write_text(json.dumps(resign(data)))  # even by someone who has the key
    version = client.read_resource(*change["membership"].split("/"))["meta"]["versionId"]
    code, _, err = cli(sb, "apply", str(plan_file))
    assert code == 1
    assert "an entry it writes is not the canonical entry of its grant" in err
    assert client.read_resource(*change["membership"].split("/"))["meta"]["versionId"] == version


def test_a_saved_plan_whose_kept_entries_were_edited_writes_nothing(
    demo: Any, cli: Cli, tmp_path: Path
) -> None:
    sb, manifests = demo
    client = sb.client()
    north = manifests / "northside.yaml"
    north.write_text(
        north.read_text() + "        - ProjectMembership/0f1e0006-0000-4000-8000-000000000005\n"
    )
    plan_file = tmp_path / "plan.json"
    assert cli(sb, "plan", str(manifests), "--out", str(plan_file))[0] == 0
    data = json.loads(plan_file.read_text())
    change = data["access_changes"][0]
    # An unmanaged "everything" entry slipped into before and after: it looks kept, not granted.
    foreign = {"policy": {"reference": "AccessPolicy/all"}}
    change["before"].append(foreign)
    change["after"].append(foreign)
    for step in change["steps"]:
        step["access"].append(foreign)
    plan_file.write_text(json.dumps(resign(data)))
    version = client.read_resource(*change["membership"].split("/"))["meta"]["versionId"]
    code, out, err = cli(sb, "apply", str(plan_file))
    assert code == 1 and out == ""
    # Re-derived from its manifests, the membership's change is not the one the plan says.
    assert f"{change['membership']}: not the change its manifests give it" in err
    assert client.read_resource(*change["membership"].split("/"))["meta"]["versionId"] == version
