"""The access part of a plan in text and markdown (design section 8), and its redaction."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

from reconciler.model import AccessChange, Action, Owners, Plan
from reconciler.plan.entries import entry_summary, managed_entry

_COLORS = {Action.ADD: "\033[32m", Action.REMOVE: "\033[31m", Action.UPDATE: "\033[33m"}
_RESET = "\033[0m"


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def access_line(plan: Plan) -> str:
    return (
        f"Access: {_plural(plan.grants, 'grant')} to add, {_plural(plan.revocations, 'grant')} "
        f"to revoke, on {_plural(len(plan.access_changes), 'membership')}."
    )


def _header(change: AccessChange) -> str:
    who = change.profile or ""
    if change.display:
        who += f' "{change.display}"'
    return f"{change.membership}  ({who.strip()})" if who.strip() else change.membership


def access_lines(plan: Plan, change: AccessChange, color: bool = False) -> Iterator[str]:
    def paint(action: Action, text: str) -> str:
        return f"{_COLORS[action]}{text}{_RESET}" if color and action in _COLORS else text

    names = frozenset((k.policy, k.parameter) for k in plan.managed_access)
    tenants = {account: info.tenant for account, info in plan.managed.items()}
    tenants.update(
        {i.account: i.tenant for c in plan.access_changes for i in (*c.grant, *c.revoke)}
    )

    def managed(entry: str) -> tuple[str, str] | None:
        """(tenant, how the entry differs from the canonical form, if it does)."""
        found = managed_entry(entry, names, Owners.of(tenants))
        if found is None:
            return None
        form = "" if found.canonical else ", another form of its grant"
        if not found.grants:
            form = ", a form that grants nothing"
        return tenants[found.key.account], form

    rows: list[tuple[Action, str, str]] = []
    for entry in (e for e in change.after if e not in change.before):
        owner = managed(entry)
        rows.append((Action.ADD, entry_summary(entry), f"tenant {owner[0] if owner else '?'}"))
    for entry in (e for e in change.before if e not in change.after):
        owner = managed(entry)
        reason = f"tenant {owner[0]}, authoritative{owner[1]}" if owner else "unmanaged"
        rows.append((Action.REMOVE, entry_summary(entry), reason))
    for entry in (e for e in change.after if e in change.before):
        owner = managed(entry)
        reason = f"tenant {owner[0]}, kept{owner[1]}" if owner else "unmanaged, kept"
        rows.append((Action.KEEP, entry_summary(entry), reason))
    width = max((len(text) for _, text, _ in rows), default=0)
    yield f"  {paint(Action.UPDATE, Action.UPDATE.value)} {_header(change)}"
    for action, text, reason in rows:
        yield f"      {paint(action, action.value)} {text.ljust(width)}   ({reason})"
    if len(change.steps) == 2:
        yield "      written twice: the revocation before any account change, the grant after"


def access_markdown(plan: Plan) -> list[str]:
    if not plan.access_changes:
        return []
    lines = [
        f"<details><summary>Access ({_plural(len(plan.access_changes), 'membership')})</summary>",
        "",
        "| Membership | Grant | Revoke |",
        "|---|---|---|",
    ]
    for change in plan.access_changes:
        grant = "<br>".join(f"`{i.key.describe()}` ({i.tenant})" for i in change.grant)
        revoke = "<br>".join(f"`{i.key.describe()}` ({i.tenant})" for i in change.revoke)
        lines.append(f"| `{change.membership}` | {grant} | {revoke} |")
    return [*lines, "", "</details>", ""]


def redact_access(plan: Plan, hide: Callable[[str], str]) -> Plan:
    """Membership and profile references hashed like patient ids (they name people)."""

    def one(change: AccessChange) -> AccessChange:
        rtype, rid = change.membership.split("/", 1)
        profile = None
        if change.profile:
            ptype, _, pid = change.profile.partition("/")
            profile = f"{ptype}/{hide(pid)}"
        return replace(change, membership=f"{rtype}/{hide(rid)}", profile=profile, display=None)

    hidden: dict[str, str] = {}
    for change in plan.access_changes:
        for ref in (change.membership, change.profile):
            if ref and "/" in ref:
                rtype, rid = ref.split("/", 1)
                hidden[ref] = f"{rtype}/{hide(rid)}"
    warnings = list(plan.warnings)
    for ref, shown in hidden.items():  # warnings name memberships too
        warnings = [w.replace(ref, shown) for w in warnings]
    changes = sorted((one(c) for c in plan.access_changes), key=lambda c: c.membership)
    return replace(plan, access_changes=tuple(changes), warnings=tuple(warnings))
