"""`reconciler import`: write a Tenant manifest listing an account's live members, so adopting the
tool on an existing project starts from `No changes.`"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TextIO

from reconciler.errors import ReconcilerError
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.reads import PAGE_SIZE, chunks
from reconciler.model import account_id, parameter_id
from reconciler.plan.entries import parse_entry

# No relative $schema path would hold wherever the file is written: say how to get the schema.
SCHEMA_MODELINE = (
    "# Editor validation: `reconciler schema tenant > tenant.schema.json`, then add\n"
    "# `# yaml-language-server: $schema=<path to tenant.schema.json>` as the first line."
)


def slug(text: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "tenant"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def members(client: MedplumClient, account: str) -> Iterator[tuple[str, list[str]]]:
    """(patient id, its `system|value` identifiers) for every member, paged by cursor."""
    params = [("_compartment", account), ("_elements", "identifier")]
    for patient in client.search_all("Patient", params, sort_by_last_updated=True):
        tokens = [
            f"{i.get('system') or ''}|{i['value']}"
            for i in patient.get("identifier") or []
            if isinstance(i, dict) and i.get("value")
        ]
        yield str(patient["id"]), tokens


def _all_unique_on_server(client: MedplumClient, tokens: list[str]) -> bool:
    """Does every identifier match exactly one patient? Checked a page of tokens at a time so
    100,000 members never hold 100,000 resources at once."""
    for chunk in chunks(tokens, PAGE_SIZE):
        matches = client.search_by_identifiers("Patient", chunk, elements=["id"])
        if any(len(matches.get(t, [])) != 1 for t in chunk):
            return False
    return True


def write_manifest(
    client: MedplumClient,
    account: str,
    out: TextIO,
    *,
    name: str | None = None,
    identifier_system: str | None = None,
    membership: str = "authoritative",
    access: bool = False,
    resource_types: tuple[str, ...] = (),
) -> tuple[int, str]:
    """Write the manifest; return (members, "identifier" or "id" — how patients are listed)."""
    rtype, rid = account.split("/", 1)
    if name is None:
        resource = client.read_resource(rtype, rid)
        name = slug(str(resource.get("name") or rid))
    listed = list(members(client, account))
    grants = current_grants(client, account) if access else {}
    others = [
        f"{rtype}/{r['id']}"
        for rtype in resource_types
        for r in client.search_all(
            rtype, [("_compartment", account), ("_elements", "id")], sort_by_last_updated=True
        )
    ]
    if not listed and not grants and not others:
        raise ReconcilerError(
            f"{account} has no member patients"
            + (" and no access grants" if access else "")
            + "; there is nothing to import"
        )
    by: str = "id"
    chosen: list[str] = []
    if identifier_system is not None:
        prefix = identifier_system + "|"
        chosen = [next((t for t in tokens if t.startswith(prefix)), "") for _, tokens in listed]
        # Each must also be unique on the whole server, or the selector would be ambiguous.
        unique_here = all(chosen) and len(set(chosen)) == len(chosen)
        if unique_here and _all_unique_on_server(client, chosen):
            by = "identifier"
    out.write(f"{SCHEMA_MODELINE}\n")
    out.write(f"# Imported from {account}: {len(listed):,} members listed by {by}.\n")
    out.write("apiVersion: reconciler/v1\nkind: Tenant\nmetadata:\n")
    out.write(f"  name: {name}\nspec:\n  account: {account}\n  membership: {membership}\n")
    out.write("  propagate: true\n  patients:" + ("\n" if listed else " []\n"))
    for (pid, _), token in zip(listed, chosen or [""] * len(listed), strict=True):
        if by == "identifier":
            out.write(f"    - identifier: {_quote(token)}\n")
        else:
            out.write(f"    - Patient/{pid}\n")
    if others:
        out.write("  resources:\n")
        out.writelines(f"    - {ref}\n" for ref in others)
    elif resource_types:  # asked for, and none there: say so rather than print nothing
        out.write(f"  # resources: no {' or '.join(resource_types)} carries {account} yet\n")
    if grants:
        out.write("  access:\n")
        for (policy, parameter), refs in sorted(grants.items()):
            out.write(f"    - policy: {policy}\n      parameter: {parameter}\n      members:\n")
            out.writelines(f"        - {ref}\n" for ref in refs)
    return len(listed), by


def current_grants(client: MedplumClient, account: str) -> dict[tuple[str, str], list[str]]:
    """(policy, parameter) -> memberships whose `access` entries reference `account`."""
    grants: dict[tuple[str, str], list[str]] = {}
    for membership in client.search_all("ProjectMembership", []):
        ref = f"ProjectMembership/{membership['id']}"
        for entry in membership.get("access") or []:
            parsed = parse_entry(entry)
            if parsed is None or parsed.policy is None:
                continue
            for param in parsed.parameters:
                # By value, as Medplum grants (model/accounts.py): a valueString, another type,
                # another case all name this account.
                if param.value and parameter_id(param.value)[0] == account_id(account):
                    members = grants.setdefault((parsed.policy, param.name), [])
                    if ref not in members:
                        members.append(ref)
    return grants
