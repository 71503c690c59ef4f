"""A membership's rows of the access review, from what is known of it (pure): what the
manifests give it, its entries, and what the server let it see when counting on its behalf.
The rules are those of `verify --access` (apply/verify_access.py), put per tenant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.apply.verify_access import EntryDrift, MemberAccess, Sight, union_of, via_of
from reconciler.plan.access import AccessRules
from reconciler.plan.render import plural
from reconciler.report.model import Configured, Row, Status


@dataclass(frozen=True)
class Known:
    """Everything the rows of one membership are computed from."""

    member: MemberAccess
    sight: Sight
    types: Sequence[str]  # the types counted for it
    drift: Sequence[EntryDrift]  # its managed entries missing or not granted
    this_client: bool = False


def _unrestricted(member: MemberAccess) -> str:
    if member.live.admin:
        return "a project admin: it can read and change every membership and policy"
    if member.live.unrestricted:
        return "no access policy: Medplum lets it see everything in the project"
    if member.star:
        return f"sees every resource in the project through {member.star}"
    return ""


def _seen_text(rtype: str, seen: int, total: int) -> str:
    return f"sees {seen:,} of {plural(total, rtype)}"


def member_rows(
    known: Known,
    rules: AccessRules,
    accounts: Sequence[str],
    totals: Mapping[tuple[str, str], int],
) -> list[Row]:
    member, sight = known.member, known.sight
    live = member.live
    why_open = _unrestricted(member)
    declared = rules.declared.get(live.reference, [])

    def row(tenant: str | None, account: str, **fields: object) -> Row:
        base: dict[str, object] = {
            "membership": live.reference, "profile": live.profile or "",
            "display": live.display or "", "user": live.user or "", "admin": live.admin,
            "tenant": tenant, "account": account, "this_client": known.this_client,
        }  # fmt: skip
        base.update(fields)
        return Row(**base)  # type: ignore[arg-type]

    rows: list[Row] = []
    for account in accounts:
        tenant = rules.owners[account].name
        granted = account in member.given
        policies = tuple(sorted({k.policy for k in declared if k.account == account}))
        given_types = {t: [a for a, ts in member.given.items() if t in ts] for t in known.types}
        seen = {t: sight.by_tenant.get((t, account), 0) for t in known.types}
        total = {t: totals.get((t, account), 0) for t in known.types}
        shared = {
            t: totals.get((t, f"{account}&{union_of(given_types[t])}"), 0) if given_types[t] else 0
            for t in known.types
        }
        holds = any(
            (k := rules.key_of(e)) is not None and k.account == account for e in live.entries
        )
        configured = Configured.MANAGED if holds else Configured.NONE
        if live.admin:
            configured = Configured.ADMIN
        elif live.unrestricted:
            configured = Configured.NO_POLICY
        lacks = [d for d in known.drift if d.tenant == tenant and d.missing]
        undeclared = [d for d in known.drift if d.tenant == tenant and not d.missing]
        more = [t for t in known.types if seen[t] > shared[t]]
        if not holds and more and configured is Configured.NONE:
            configured = Configured.LEGACY if live.access_policy else Configured.UNMANAGED
        if why_open:
            status, reason = Status.UNRESTRICTED, why_open
        elif sight.error is not None:  # fail closed: it could not be shown to see no more
            status, reason = Status.EXTRA, f"could not be counted as the member: {sight.error}"
        elif granted:
            short = [t for t in known.types if seen[t] < total[t]
                     and t in member.plain.get(account, frozenset())]  # fmt: skip
            if lacks:
                status, reason = Status.MISSING, f"lacks {lacks[0].key.describe()}"
            elif short:
                status = Status.MISSING
                reason = "; ".join(_seen_text(t, seen[t], total[t]) for t in short)
            else:
                status, reason = Status.OK, "sees the tenant's data the manifests give it"
        elif undeclared:
            status = Status.EXTRA
            reason = f"holds {undeclared[0].key.describe()}, which the manifests do not grant"
        elif more:
            status = Status.EXTRA
            reason = "; ".join(_seen_text(t, seen[t], total[t]) for t in more)
            reason += f" through {via_of(member, account)}"
        else:
            status, reason = Status.OK, "sees none of the tenant's data beyond its own tenants'"
        rows.append(row(tenant, account, granted=granted, policies=policies,
                        configured=configured, status=status, reason=reason, seen=seen,
                        totals=total))  # fmt: skip
    # Outside every tenant: what it sees in all less what it sees in any tenant; the
    # manifests never give that (the totals column: what the project holds outside them).
    outside = {t: sight.in_all.get(t, 0) - sight.in_tenants.get(t, 0) for t in known.types}
    held = {t: totals.get((t, ""), 0) - totals.get((t, union_of(accounts)), 0)
            for t in known.types}  # fmt: skip
    beyond = [t for t in known.types if outside[t] > 0]
    if why_open:
        status, reason = Status.UNRESTRICTED, why_open
    elif sight.error is not None:
        status, reason = Status.EXTRA, f"could not be counted as the member: {sight.error}"
    elif beyond:
        status = Status.EXTRA
        reason = "; ".join(_seen_text(t, outside[t], held[t]) for t in beyond)
        reason += f" that are in no tenant, through {via_of(member, None)}"
    else:
        status, reason = Status.OK, "sees nothing outside the tenants"
    configured = (
        Configured.ADMIN if live.admin else Configured.NO_POLICY if live.unrestricted
        else Configured.LEGACY if live.access_policy and beyond
        else Configured.UNMANAGED if member.unmanaged and beyond else Configured.NONE
    )  # fmt: skip
    rows.append(row(None, "", granted=False, policies=(), configured=configured, status=status,
                    reason=reason, seen=outside, totals=held))  # fmt: skip
    return rows
