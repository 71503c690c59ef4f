"""Resource semantics: who sets meta.accounts, versioning, and $set-accounts with propagation.

Follows ../shared/medplum-api.md ("Who sets accounts", "$set-accounts"): replace semantics,
only the difference propagates, compartment resources keep their other accounts.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.sandbox.access import PROJECT_ID, Member
from reconciler.sandbox.compartments import linked_patient, linked_patients
from reconciler.sandbox.outcomes import FhirError, bad_request, forbidden, not_found, outcome
from reconciler.sandbox.store import Resource, Store, accounts_of, new_id

SYSTEM_AUTHOR = {"reference": "system"}

Charge = Callable[[int], None]


@dataclass(frozen=True)
class Caller:
    """Who sends a request: the client (its quota) and the member it runs as (its access)."""

    client_id: str
    member: Member

    @property
    def admin(self) -> bool:
        return self.member.admin

    @property
    def author(self) -> dict[str, str]:
        profile = self.member.membership.get("profile") or {}
        ref = str(profile.get("reference") or f"ClientApplication/{self.client_id}")
        return {"reference": ref, "display": str(profile.get("display") or self.client_id)}


def _no_charge(points: int) -> None:
    return None


def _set_accounts_meta(resource: Resource, accounts: Sequence[str | Resource]) -> None:
    """Strings are references; a dict is a whole Reference, stored as given (Medplum stores
    the `accounts` of $set-accounts whole: a `display` or an identifier-only one survives)."""
    meta = resource.setdefault("meta", {})
    meta.pop("account", None)
    if accounts:
        meta["accounts"] = [dict(a) if isinstance(a, dict) else {"reference": a} for a in accounts]
    else:
        meta.pop("accounts", None)


def _entries(resource: Resource) -> list[Resource]:
    return [dict(e) for e in (resource.get("meta") or {}).get("accounts") or []
            if isinstance(e, dict)]  # fmt: skip


def _explicit_accounts(body: Resource) -> list[str | Resource] | None:
    """The accounts a body gives, each Reference whole (Medplum stores them as given)."""
    meta = body.get("meta") or {}
    if "accounts" not in meta and "account" not in meta:
        return None
    entries: list[str | Resource] = list(_entries(body))
    legacy = meta.get("account")
    if isinstance(legacy, dict) and legacy not in entries:
        entries.append(dict(legacy))
    return entries


class Repository:
    def __init__(self, store: Store) -> None:
        self.store = store

    # --- rendering -------------------------------------------------------------------------

    @staticmethod
    def render(resource: Resource, *, extended: bool) -> Resource:
        # Only `meta` is changed here: a copy of the top level and of meta is enough (a deep
        # copy of every resource of a search was most of the search's time).
        out = dict(resource)
        meta = out["meta"] = dict(resource.get("meta") or {})
        accounts = accounts_of(resource)
        if not extended:
            for key in ("author", "project", "account", "compartment"):
                meta.pop(key, None)
            return out
        meta["project"] = PROJECT_ID
        if accounts:
            meta["account"] = {"reference": accounts[0]}
        compartment = [{"reference": f"Project/{PROJECT_ID}"}]
        compartment += [{"reference": a} for a in accounts]
        if resource.get("resourceType") == "Patient":
            compartment.append({"reference": f"Patient/{resource['id']}"})
        else:
            patients = linked_patients(resource)
            compartment += [{"reference": p} for p in patients if p not in accounts]
        meta["compartment"] = compartment
        return out

    # --- CRUD ------------------------------------------------------------------------------

    def read(self, rtype: str, rid: str) -> Resource:
        resource = self.store.get(rtype, rid)
        if resource is None:
            raise not_found()
        return resource

    def _derived_accounts(self, body: Resource) -> list[str]:
        patient = linked_patient(body)
        if not patient:
            return []
        found = self.store.get("Patient", patient.split("/", 1)[1])
        return accounts_of(found) if found else []

    @staticmethod
    def _check_body(rtype: str, body: Any) -> Resource:
        if not isinstance(body, dict):
            raise bad_request("Invalid JSON body")
        if body.get("resourceType") != rtype:
            raise bad_request("Incorrect resource type")
        return body

    def create(self, rtype: str, body: Any, caller: Caller, *, extended: bool) -> Resource:
        resource = copy.deepcopy(self._check_body(rtype, body))
        explicit = _explicit_accounts(resource)
        compartment = caller.member.policy.compartment
        # An admin's (extended) or any Patient create keeps the given accounts; a member whose
        # policy has a compartment creates into it; otherwise a resource linked to a Patient
        # inherits the Patient's accounts (medplum-api.md, "Who sets accounts").
        accounts: Sequence[str | Resource]
        if explicit is not None and caller.admin and extended:
            accounts = explicit
        elif compartment is not None and not caller.admin:
            accounts = [compartment]
        elif explicit is not None and rtype == "Patient":
            accounts = explicit
        else:
            accounts = self._derived_accounts(resource)
        resource["id"] = new_id()
        meta = {"author": caller.author}
        resource["meta"] = meta
        _set_accounts_meta(resource, accounts)
        with self.store.transaction() as conn:
            return self.store.put(conn, resource)

    def update(
        self,
        rtype: str,
        rid: str,
        body: Any,
        caller: Caller,
        *,
        extended: bool,
        if_match: str | None = None,
    ) -> Resource:
        resource = copy.deepcopy(self._check_body(rtype, body))
        if resource.get("id") not in (None, rid):
            raise bad_request("Incorrect ID")
        explicit = _explicit_accounts(resource)
        with self.store.transaction() as conn:
            existing = self.store.get(rtype, rid)
            if existing is None:
                raise not_found()
            if if_match is not None:
                wanted = if_match.strip().removeprefix("W/").strip('"')
                if wanted != existing["meta"]["versionId"]:
                    raise FhirError(
                        412,
                        outcome("processing", "Precondition Failed", oid="precondition-failed"),
                    )
            if rtype == "ProjectMembership":
                # `project` and `user` are read-only, even for admins (accesspolicy.ts).
                for field in ("project", "user"):
                    if field in existing:
                        resource[field] = existing[field]
                    else:
                        resource.pop(field, None)
            kept: Sequence[str | Resource]
            if explicit is not None and caller.admin and extended:
                kept = explicit
            elif rtype != "Patient" and linked_patient(resource):
                kept = self._derived_accounts(resource)
            else:
                kept = _entries(existing)  # as they were, whole
            resource["id"] = rid
            resource["meta"] = {"author": caller.author}
            _set_accounts_meta(resource, kept)
            return self.store.put(conn, resource)

    def delete(self, rtype: str, rid: str) -> None:
        with self.store.transaction() as conn:
            if not self.store.delete(conn, rtype, rid):
                raise not_found()

    # --- $set-accounts ---------------------------------------------------------------------

    def set_accounts(
        self,
        rtype: str,
        rid: str,
        accounts: Sequence[Resource],
        caller: Caller,
        *,
        propagate: bool,
        cap: int,
        charge: Charge = _no_charge,
        system_author: bool = False,
    ) -> int:
        """Replace the target's accounts; with propagate on a Patient, apply only the difference
        to its compartment (at most `cap` resources). Every write is committed as it happens and
        charged first, so a quota cut leaves what was done in place — like Medplum. Charged like
        Medplum 5.0.10: the write 100, with propagation the compartment search 20 and every
        compartment resource 100 (an async job's own AsyncJob writes are the caller's)."""
        if not caller.admin:
            raise forbidden()
        target = self.store.get(rtype, rid)
        if target is None:
            raise not_found()
        old = accounts_of(target)
        new: list[Resource] = []
        for entry in accounts:
            if entry not in new:
                new.append(dict(entry))
        new_refs = [e.get("reference") for e in new]
        charge(100)
        with self.store.transaction() as conn:
            current = self.store.get(rtype, rid)
            if current is None:
                raise not_found()
            _set_accounts_meta(current, new)
            # 5.0.10 names the caller; 5.1.29 writes through the system repository: "system".
            current["meta"]["author"] = SYSTEM_AUTHOR if system_author else caller.author
            self.store.put(conn, current)
        updated = 1
        if not propagate or rtype != "Patient":
            return updated
        charge(20)  # the compartment search (observed: 120 + 100·k points in all, synchronously)
        # Only the difference propagates, compared by reference (set-accounts.ts).
        additions = [e for e in new if e.get("reference") not in old]
        removals = [a for a in old if a not in new_refs]
        # Like Medplum's set-accounts.ts: every compartment resource is charged a write and
        # counted in resourcesUpdated, changed or not; an unchanged one keeps its version.
        members = self.store.compartment_members(f"Patient/{rid}")[:cap]
        for member in members:
            charge(100)
            updated += 1
            with self.store.transaction() as conn:  # re-read inside: it may have moved since
                fresh = self.store.get(member["resourceType"], member["id"])
                if fresh is None:
                    continue
                have = _entries(fresh)
                want = [e for e in have if e.get("reference") not in removals]
                refs = [e.get("reference") for e in want]
                want += [a for a in additions if a.get("reference") not in refs]
                if want == have:
                    continue
                _set_accounts_meta(fresh, want)
                fresh["meta"]["author"] = SYSTEM_AUTHOR
                self.store.put(conn, fresh)
        return updated


def parse_set_accounts(body: Any) -> tuple[list[Resource], bool]:
    """`Parameters` with repeated `accounts` (valueReference) and optional `propagate`."""
    if body is None or body == b"":
        return [], False
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise bad_request("Expected Parameters")
    accounts: list[Resource] = []
    propagate = False
    for param in body.get("parameter") or []:
        name = param.get("name")
        if name == "accounts":
            value = param.get("valueReference")
            if not isinstance(value, dict):  # Medplum reads it by its declared type
                continue
            accounts.append(dict(value))
        elif name == "propagate":
            propagate = bool(param.get("valueBoolean"))
    return accounts, propagate
