"""The JSON form of a plan (format 1): what `--format json` prints and `--out` saves.

`plan_digest` is the sha256 of the canonical JSON (sorted keys, no spaces) of everything else,
so an edited or corrupted plan is refused. Readers ignore unknown optional fields.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, TextIO

from reconciler.model import (
    AccessChange,
    AccessItem,
    AccessKey,
    AccessStep,
    AccountInfo,
    Change,
    Estimate,
    MassGrant,
    MassRemoval,
    Membership,
    Owners,
    Phase,
    Plan,
    Step,
    entry_json,
)
from reconciler.plan.signing import sign

FORMAT_VERSION = "1"


def canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_of(data: dict[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k not in ("plan_digest", "signature")}
    return "sha256:" + hashlib.sha256(canonical(body)).hexdigest()


def change_to_json(change: Change, owners: Owners[AccountInfo] | None = None) -> dict[str, Any]:
    """A change as JSON; with `owners`, the entries that are another form of a managed
    account are named in `aliases` (entry → the account it is, model/accounts.py)."""
    aliases = {}
    if owners is not None:
        aliases = {
            e: owners.canonical(e)
            for e in dict.fromkeys((*change.before, *change.after))
            if owners.is_alias(e)
        }
    return {
        "patient": change.ref,
        "version_id": change.version_id,
        "identifier": change.identifier,
        "before": list(change.before),
        "after": list(change.after),
        "add": list(change.add),
        "remove": list(change.remove),
        "tenants": list(change.tenants),
        "steps": [s.to_json() for s in change.steps],
        **({"aliases": aliases} if aliases else {}),
    }


def resource_change_to_json(
    change: Change, owners: Owners[AccountInfo] | None = None
) -> dict[str, Any]:
    data = change_to_json(change, owners)
    return {"resource": data.pop("patient"), **data}


def _change_from_json(c: dict[str, Any], key: str) -> Change:
    return Change(
        ref=c[key],
        version_id=c["version_id"],
        identifier=c.get("identifier"),
        before=tuple(c["before"]),
        after=tuple(c["after"]),
        add=tuple(c["add"]),
        remove=tuple(c["remove"]),
        tenants=tuple(c["tenants"]),
        steps=tuple(Step(tuple(s["accounts"]), bool(s["propagate"])) for s in c["steps"]),
    )


def access_change_to_json(change: AccessChange) -> dict[str, Any]:
    return {
        "membership": change.membership,
        "version_id": change.version_id,
        "profile": change.profile,
        "display": change.display,
        "before": [json.loads(e) for e in change.before],
        "after": [json.loads(e) for e in change.after],
        "grant": [i.to_json() for i in change.grant],
        "revoke": [i.to_json() for i in change.revoke],
        "steps": [s.to_json() for s in change.steps],
    }


def access_change_from_json(c: dict[str, Any]) -> AccessChange:
    def items(rows: list[dict[str, Any]]) -> tuple[AccessItem, ...]:
        return tuple(
            AccessItem(r["policy"], r["parameter"], r["account"], r["tenant"]) for r in rows
        )

    return AccessChange(
        membership=c["membership"],
        version_id=c["version_id"],
        profile=c.get("profile"),
        display=c.get("display"),
        before=tuple(entry_json(e) for e in c["before"]),
        after=tuple(entry_json(e) for e in c["after"]),
        grant=items(c["grant"]),
        revoke=items(c["revoke"]),
        steps=tuple(
            AccessStep(tuple(entry_json(e) for e in s["access"]), Phase(s["phase"]))
            for s in c["steps"]
        ),
    )


def _header(plan: Plan) -> dict[str, Any]:
    """Everything but `changes` and `plan_digest`, in output order."""
    data: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "server": plan.server,
        **({"target": plan.target} if plan.target else {}),
        **({"targets": list(plan.targets)} if plan.targets else {}),
        "created_at": plan.created_at,
        "manifests": {"digest": plan.manifest_digest, "files": list(plan.manifest_files)},
        "summary": {"patients": len(plan.changes), "add": plan.added, "remove": plan.removed},
        "accounts": {
            ref: {
                "tenant": info.tenant,
                "membership": info.membership.value,
                "propagate": info.propagate,
            }
            for ref, info in sorted(plan.managed.items())
        },
    }
    if plan.warnings:
        data["warnings"] = list(plan.warnings)
    if plan.mass_removals or plan.mass_grants:
        data["guard"] = {}
        if plan.mass_removals:
            data["guard"]["mass_removals"] = [m.to_json() for m in plan.mass_removals]
        if plan.mass_grants:
            data["guard"]["mass_grants"] = [m.to_json() for m in plan.mass_grants]
    if plan.estimate is not None:
        data["estimate"] = plan.estimate.to_json()
    if plan.resource_changes:
        data["summary"]["resources"] = len(plan.resource_changes)
        data["resource_changes"] = [
            resource_change_to_json(c, plan.owners)
            for c in sorted(plan.resource_changes, key=lambda c: c.ref)
        ]
    if plan.access_changes:
        data["summary"].update(
            memberships=len(plan.access_changes),
            grants=plan.grants,
            revocations=plan.revocations,
        )
    if plan.managed_access:
        data["managed_access"] = [
            {"policy": k.policy, "parameter": k.parameter, "account": k.account}
            for k in plan.managed_access
        ]
    if plan.access_changes:
        data["access_changes"] = [
            access_change_to_json(c)
            for c in sorted(plan.access_changes, key=lambda c: c.membership)
        ]
    return data


def _sorted_changes(plan: Plan) -> list[Change]:
    return sorted(plan.changes, key=lambda c: c.ref)


def plan_digest(plan: Plan) -> str:
    """The digest of the canonical JSON, fed change by change (no whole document in memory):
    sorted keys and no spaces, exactly what `digest_of(plan_to_json(plan))` computes."""
    header = _header(plan)
    sha = hashlib.sha256()
    sha.update(b"{")
    for i, key in enumerate(sorted([*header, "changes"])):
        if i:
            sha.update(b",")
        sha.update(canonical(key) + b":")
        if key != "changes":
            sha.update(canonical(header[key]))
            continue
        sha.update(b"[")
        for j, change in enumerate(_sorted_changes(plan)):
            if j:
                sha.update(b",")
            sha.update(canonical(change_to_json(change, plan.owners)))
        sha.update(b"]")
    sha.update(b"}")
    return "sha256:" + sha.hexdigest()


def write_plan_json(plan: Plan, out: TextIO, *, key: bytes | None = None) -> None:
    """Write the JSON plan change by change: a 100,000-patient plan is never one string."""
    header = _header(plan)
    out.write("{\n")
    for field, value in header.items():
        text = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
        out.write(f"  {json.dumps(field)}: {text},\n")
    out.write('  "changes": [')
    for j, change in enumerate(_sorted_changes(plan)):
        out.write(",\n    " if j else "\n    ")
        out.write(json.dumps(change_to_json(change, plan.owners), ensure_ascii=False))
    out.write("\n  ],\n" if plan.changes else "],\n")
    digest = plan_digest(plan)
    signature = sign(digest, key) if key is not None else plan.signature
    if not signature:
        out.write(f'  "plan_digest": {json.dumps(digest)}\n}}\n')
        return
    out.write(f'  "plan_digest": {json.dumps(digest)},\n')
    out.write(f'  "signature": {json.dumps(signature)}\n}}\n')


def summary_json(plan: Plan) -> dict[str, Any]:
    """What `plan --out --format json` prints: the counts and the digest, no patient."""
    header = _header(plan)
    keep = ("format_version", "server", "target", "targets", "summary", "warnings")
    return {**{k: header[k] for k in keep if k in header}, "plan_digest": plan_digest(plan)}


def plan_to_json(plan: Plan) -> dict[str, Any]:
    data = _header(plan)
    data["changes"] = [change_to_json(c, plan.owners) for c in _sorted_changes(plan)]
    data["plan_digest"] = digest_of(data)
    return data


def plan_from_json(data: dict[str, Any]) -> Plan:
    """Build a Plan from already-validated JSON (see planfile.load_plan)."""
    changes = tuple(_change_from_json(c, "patient") for c in data["changes"])
    managed = {
        ref: AccountInfo(info["tenant"], Membership(info["membership"]), bool(info["propagate"]))
        for ref, info in (data.get("accounts") or {}).items()
    }
    return Plan(
        changes=changes,
        managed=managed,
        server=data["server"],
        target=str(data.get("target") or ""),
        targets=tuple(data.get("targets") or ()),
        created_at=data["created_at"],
        manifest_files=tuple(data["manifests"]["files"]),
        manifest_digest=data["manifests"]["digest"],
        signature=str(data.get("signature") or ""),
        warnings=tuple(data.get("warnings") or ()),
        mass_removals=tuple(
            MassRemoval(
                str(m["tenant"]), int(m["remove"]), int(m["members"]), m.get("what", "members")
            )
            for m in (data.get("guard") or {}).get("mass_removals") or []
        ),
        mass_grants=tuple(
            MassGrant(str(m["tenant"]), int(m["add"]), int(m["members"]), m.get("what", "patients"))
            for m in (data.get("guard") or {}).get("mass_grants") or []
        ),
        estimate=Estimate.from_json(data["estimate"]) if data.get("estimate") else None,
        access_changes=tuple(access_change_from_json(c) for c in data.get("access_changes") or []),
        resource_changes=tuple(
            _change_from_json(c, "resource") for c in data.get("resource_changes") or []
        ),
        managed_access=tuple(
            AccessKey(k["policy"], k["parameter"], k["account"])
            for k in data.get("managed_access") or []
        ),
    )
