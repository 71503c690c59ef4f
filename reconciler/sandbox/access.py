"""Who a caller is and what it may see: ProjectMemberships and parameterized AccessPolicies,
built the way Medplum builds them (server source `fhir/accesspolicy.ts`; medplum-api.md,
"Tenant access"):

- a membership's effective policy is its legacy `accessPolicy` plus every `access[]` entry;
  each policy's JSON gets its parameters substituted textually (`%name.id` → the id,
  `%name` → the reference or `valueString`), with `%profile` and `%patient` always defined;
- the resource rules of all entries are combined; the `compartment` of the last entry that has
  one is where a member's creates go;
- a membership with neither `access` nor `accessPolicy` gets `resourceType: "*"` — everything
  (fail-open, as Medplum does);
- project-admin types (ProjectMembership, Project, User, …) are never matched by `*`: only
  project admins reach them;
- `criteria` are searches of the rule's type, evaluated with the sandbox's own search; a
  criteria parameter the sandbox cannot search answers 400 naming it (never silently allowed).
Not modelled: `hiddenFields`, `readonlyFields`, `interaction` lists (only `readonly`), IP rules.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qsl

from reconciler.sandbox.outcomes import bad_request
from reconciler.sandbox.store import Resource, Store

PROJECT_ID = "5a4d0b0e-7c1f-4e55-9d1a-000000000001"
PROJECT_NAME = "Sandbox"
ADMIN_TYPES = frozenset(
    {
        "Project",
        "ProjectMembership",
        "User",
        "UserSecurityRequest",
        "Package",
        "PackageRelease",
        "PackageInstallation",
    }
)
DEFAULT_READONLY_TYPES = ("SearchParameter", "StructureDefinition")
MEMBERSHIP_NAMESPACE = uuid.UUID("0f1e0005-0000-4000-8000-000000000000")


def membership_id_for(client_id: str) -> str:
    """The fixed id of a configured client's membership (stable across restarts)."""
    return str(uuid.uuid5(MEMBERSHIP_NAMESPACE, client_id))


@dataclass(frozen=True)
class Rule:
    resource_type: str  # a type, or "*"
    criteria: tuple[tuple[str, str], ...] | None  # search parameters of the criteria
    readonly: bool = False


@dataclass(frozen=True)
class Policy:
    """A membership's effective access. `unrestricted`: '*' with no criteria, not readonly."""

    rules: tuple[Rule, ...]
    compartment: str | None = None

    @property
    def unrestricted(self) -> bool:
        return any(r.resource_type == "*" and r.criteria is None and not r.readonly
                   for r in self.rules)  # fmt: skip

    def rules_for(self, rtype: str) -> list[Rule]:
        if rtype in ADMIN_TYPES:
            return [r for r in self.rules if r.resource_type == rtype]
        return [r for r in self.rules if r.resource_type in (rtype, "*")]

    def can_read_type(self, rtype: str) -> bool:
        return bool(self.rules_for(rtype))

    def can_write_type(self, rtype: str) -> bool:
        return any(not r.readonly for r in self.rules_for(rtype))

    def filters_for(self, rtype: str, *, write: bool = False) -> list[list[tuple[str, str]]] | None:
        """The criteria that bound `rtype`, OR-ed: None = all of the type, [] = none of it."""
        rules = [r for r in self.rules_for(rtype) if not (write and r.readonly)]
        if any(r.criteria is None for r in rules):
            return None
        return [list(r.criteria or ()) for r in rules]


ADMIN_POLICY = Policy(rules=(Rule("*", None),))


@dataclass(frozen=True)
class Member:
    """Who a request runs as: the membership and its effective policy."""

    membership: Resource
    policy: Policy

    @property
    def admin(self) -> bool:
        return self.membership.get("admin") is True

    @property
    def reference(self) -> str:
        return f"ProjectMembership/{self.membership['id']}"

    @property
    def profile(self) -> str:
        return str((self.membership.get("profile") or {}).get("reference") or "")


class PolicyJsonError(ValueError):
    """A parameter made the policy's JSON unreadable (Medplum pastes values unescaped)."""


def _substitute(policy: Resource, params: list[Resource]) -> Resource:
    """Like Medplum's buildAccessPolicyResources: a non-empty `valueString` replaces `%name`
    as it is — not escaped, so a `"` breaks the JSON; else a `valueReference` replaces
    `%name.id` with its id (the segment after the type) and `%name` with the reference."""
    text = json.dumps(policy)
    for param in params:
        name = param.get("name")
        if not isinstance(name, str) or not name:
            continue
        string = param.get("valueString")
        if isinstance(string, str) and string:
            text = text.replace(f"%{name}", string)
        elif isinstance(param.get("valueReference"), dict):
            ref = str(param["valueReference"].get("reference") or "")
            parts = ref.split("/")
            text = text.replace(f"%{name}.id", parts[1] if len(parts) > 1 else "undefined")
            text = text.replace(f"%{name}", ref)
    try:
        substituted: Resource = json.loads(text)
    except json.JSONDecodeError as exc:
        # Node's JSON.parse wording for the usual case: a `"` ends the string early.
        raise PolicyJsonError(
            f"Expected ',' or '}}' after property value in JSON at position {exc.pos}"
        ) from None
    return substituted


def _criteria(rtype: str, criteria: str) -> tuple[tuple[str, str], ...]:
    ctype, _, query = criteria.partition("?")
    if ctype != rtype:
        raise bad_request(f"Invalid AccessPolicy criteria (type {ctype!r} is not {rtype!r})")
    params = tuple(parse_qsl(query, keep_blank_values=True))
    from reconciler.sandbox import search

    search.parse([rtype], list(params), system_level=False)  # 400 names what it cannot search
    return params


def build_policy(store: Store, membership: Resource) -> Policy:
    access: list[Resource] = []
    if isinstance(membership.get("accessPolicy"), dict):
        access.append({"policy": membership["accessPolicy"]})
    access += [a for a in membership.get("access") or [] if isinstance(a, dict)]
    profile = membership.get("profile") or {}
    rules: list[Rule] = []
    compartment: str | None = None
    for entry in access:
        ref = str((entry.get("policy") or {}).get("reference") or "")
        rtype, _, rid = ref.partition("/")
        original = store.get(rtype, rid) if rtype == "AccessPolicy" and rid else None
        if original is None:
            raise bad_request(
                "Cannot authenticate: Invalid access policy configuration. Please contact your "
                "administrator to update your project membership."
            )
        params = [p for p in entry.get("parameter") or [] if isinstance(p, dict)]
        params.append({"name": "profile", "valueReference": profile})
        if not any(p.get("name") == "patient" for p in params):
            params.append({"name": "patient", "valueReference": profile})
        policy = _substitute(original, params)
        if isinstance(policy.get("compartment"), dict) and policy["compartment"].get("reference"):
            compartment = str(policy["compartment"]["reference"])
        for item in policy.get("resource") or []:
            if not isinstance(item, dict) or not isinstance(item.get("resourceType"), str):
                continue
            target = item["resourceType"]
            criteria = item.get("criteria")
            parsed = _criteria(target, criteria) if isinstance(criteria, str) else None
            rules.append(Rule(target, parsed, bool(item.get("readonly"))))
    if not access:
        rules.append(Rule("*", None))  # Medplum's legacy fail-open: no policy sees everything
    for rtype in DEFAULT_READONLY_TYPES:
        if not any(r.resource_type == rtype for r in rules):
            rules.append(Rule(rtype, None, readonly=True))
    if membership.get("admin") is True:
        rules = [r for r in rules if r.resource_type not in ADMIN_TYPES]
        rules.append(Rule("ProjectMembership", None))
    return Policy(rules=tuple(rules), compartment=compartment)


def member_of(store: Store, membership: Resource) -> Member:
    if (
        membership.get("admin") is True
        and not membership.get("access")
        and not membership.get("accessPolicy")
    ):
        # The common case (admin clients): everything, without reading any policy.
        return Member(membership, Policy(rules=(Rule("*", None), Rule("ProjectMembership", None))))
    return Member(membership, build_policy(store, membership))


def policy_resource(policy: Policy) -> Resource:
    """The effective policy as an AccessPolicy resource (what `/auth/me` shows)."""
    from urllib.parse import urlencode

    resources: list[Resource] = []
    for rule in policy.rules:
        item: Resource = {"resourceType": rule.resource_type}
        if rule.criteria is not None:
            item["criteria"] = f"{rule.resource_type}?{urlencode(rule.criteria)}"
        if rule.readonly:
            item["readonly"] = True
        resources.append(item)
    body: Resource = {"resourceType": "AccessPolicy", "resource": resources}
    if policy.compartment:
        body["compartment"] = {"reference": policy.compartment}
    return body
