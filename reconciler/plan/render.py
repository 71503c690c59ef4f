"""Plan → text, markdown or JSON. Renderers only read the plan."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from dataclasses import replace

from reconciler.model import Action, Change, Plan
from reconciler.phi import keyed_hash
from reconciler.plan.estimate import estimate_line
from reconciler.plan.jsonform import write_plan_json
from reconciler.plan.render_access import (
    access_line,
    access_lines,
    access_markdown,
    redact_access,
)

NO_CHANGES = "No changes. Live accounts match the manifests."
MARKDOWN_LIMIT = 65_000

_COLORS = {Action.ADD: "\033[32m", Action.REMOVE: "\033[31m", Action.UPDATE: "\033[33m"}
_RESET = "\033[0m"


def plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def summary_line(plan: Plan) -> str:
    what = plural(len(plan.changes), "patient")
    if plan.resource_changes:  # design section 9: said only when other resources change
        what += f" and {plural(len(plan.resource_changes), 'other resource')}"
    return (
        f"Plan: {what} to update, "
        f"{plural(plan.added, 'account')} to add, {plural(plan.removed, 'account')} to remove."
    )


def tenant_rows(plan: Plan) -> list[tuple[str, int, int, int, int]]:
    """Per tenant: (name, accounts added, removed, access grants, revocations)."""
    counts: dict[str, list[int]] = {}
    for change in (*plan.changes, *plan.resource_changes):
        for index, accounts in ((0, change.add), (1, change.remove)):
            for account in accounts:
                found = plan.owners.owner(account)
                if found is not None:
                    counts.setdefault(found[1].tenant, [0, 0, 0, 0])[index] += 1
    for access in plan.access_changes:
        for index, items in ((2, access.grant), (3, access.revoke)):
            for item in items:
                counts.setdefault(item.tenant, [0, 0, 0, 0])[index] += 1
    return [(name, *values) for name, values in sorted(counts.items())]  # type: ignore[misc]


def tenant_lines(plan: Plan) -> list[str]:
    rows = tenant_rows(plan)
    if not rows:
        return []
    width = max(len(r[0]) for r in rows)
    lines = ["Per tenant:"]
    for name, add, remove, grants, revokes in rows:
        line = f"  {name.ljust(width)}  +{add:,} -{remove:,}"
        if grants or revokes:
            line += f"   access +{grants:,} -{revokes:,}"
        lines.append(line)
    return [*lines, ""]


def use_color(stream_isatty: bool) -> bool:
    return stream_isatty and not os.environ.get("NO_COLOR")


def _reason(plan: Plan, account: str, action: Action) -> str:
    found = plan.owners.owner(account)
    if found is None:
        return "unmanaged, kept"
    canonical, info = found
    if canonical != account:  # Medplum files compartments by id: this entry is that account
        alias = f"alias of tenant {info.tenant}'s account"
        return alias if action is Action.REMOVE else f"{alias}, kept"
    if action is Action.REMOVE:
        return f"tenant {info.tenant}, {info.membership.value}"
    if action is Action.KEEP:
        return f"tenant {info.tenant}, kept"
    return f"tenant {info.tenant}" + ("" if info.propagate else ", not propagated")


def change_lines(plan: Plan, change: Change, color: bool = False) -> list[str]:
    def paint(action: Action, text: str) -> str:
        return f"{_COLORS[action]}{text}{_RESET}" if color and action in _COLORS else text

    header = f"  {paint(Action.UPDATE, Action.UPDATE.value)} {change.ref}"
    if change.identifier:
        header += f"  (identifier {change.identifier})"
    rows: list[tuple[Action, str]] = [(Action.ADD, a) for a in change.add]
    rows += [(Action.REMOVE, a) for a in change.remove]
    rows += [(Action.KEEP, a) for a in change.after if a not in change.add]
    width = max(len(a) for _, a in rows)
    lines = [header]
    for action, account in rows:
        symbol = paint(action, action.value)
        lines.append(f"      {symbol} {account.ljust(width)}   ({_reason(plan, account, action)})")
    if change.primary_changes and change.before:
        # Medplum keeps meta.account = first account; moving it can promote an unmanaged one.
        new = change.after[0] if change.after else "none"
        lines.append(f"      meta.account changes: {change.before[0]} -> {new}")
    if len(change.steps) == 2:
        lines.append(
            "      two $set-accounts calls: propagating changes first, then the rest "
            "without propagation"
        )
    return lines


_YELLOW = "\033[33m"


def warning_prefix(color: bool) -> str:
    """`Warning:`, yellow where colour is on (a terminal, no NO_COLOR, no --no-color)."""
    return f"{_YELLOW}Warning:{_RESET}" if color else "Warning:"


def _preamble(plan: Plan, color: bool = False) -> Iterator[str]:
    if plan.target:
        yield f"Target: {plan.target}"
        if plan.targets:
            yield f"Only the tenants {', '.join(plan.targets)} (--target)"
        yield ""
    for warning in plan.warnings:
        yield f"{warning_prefix(color)} {warning}"
    if plan.warnings:
        yield ""


def _totals(plan: Plan) -> Iterator[str]:
    yield from tenant_lines(plan)
    yield summary_line(plan)
    if plan.access_changes:
        yield access_line(plan)
    if plan.estimate is not None:
        yield estimate_line(plan.estimate)


def iter_summary(plan: Plan) -> Iterator[str]:
    """What `plan --out` prints: counts per tenant and in all, never a patient (the saved
    file holds the plan; `show` renders it)."""
    yield from _preamble(plan)
    if plan.is_empty:
        yield NO_CHANGES
        return
    yield from _totals(plan)


def iter_text(plan: Plan, *, color: bool = False) -> Iterator[str]:
    """The text plan, line by line (a 100,000-patient plan is never one string)."""
    yield from _preamble(plan, color)
    if plan.is_empty:
        yield NO_CHANGES
        return
    yield "Reconciler will perform the following changes:"
    yield ""
    for change in plan.changes:
        yield from change_lines(plan, change, color)
        yield ""
    for resource_change in plan.resource_changes:
        yield from change_lines(plan, resource_change, color)
        yield ""
    for access_change in plan.access_changes:
        yield from access_lines(plan, access_change, color)
        yield ""
    yield from _totals(plan)


def render_text(plan: Plan, *, color: bool = False) -> str:
    return "".join(line + "\n" for line in iter_text(plan, color=color))


def render_json(plan: Plan) -> str:
    buffer = io.StringIO()
    write_plan_json(plan, buffer)
    return buffer.getvalue()


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _removed(plan: Plan, change: Change) -> str:
    cells = []
    for account in change.remove:
        cell = f"`{_md(account)}`"
        if plan.owners.is_alias(account):
            cell += f" (alias of {_md(str(plan.owners.canonical(account)))})"
        cells.append(cell)
    return "<br>".join(cells)


def _markdown_head(plan: Plan) -> list[str]:
    head = ["### Medplum tenancy plan", ""]
    if plan.target:
        head += [f"Target: `{plan.target}`", ""]
    if plan.is_empty:
        return [*head, *(f"> :warning: {w}\n" for w in plan.warnings), NO_CHANGES, ""]
    head += [f"**{summary_line(plan)}**", ""]
    if plan.access_changes:
        head += [f"**{access_line(plan)}**", ""]
    per_tenant = tenant_rows(plan)
    if per_tenant:
        head += [
            "| Tenant | Accounts added | Accounts removed | Access granted | Access revoked |",
            "|---|---|---|---|---|",
            *(f"| {n} | {a:,} | {r:,} | {g:,} | {v:,} |" for n, a, r, g, v in per_tenant),
            "",
        ]
    for warning in plan.warnings:
        head += [f"> :warning: {warning}", ""]
    if plan.estimate is not None:
        head += [estimate_line(plan.estimate), ""]
    return head


def render_markdown_summary(plan: Plan) -> str:
    """The markdown of `plan --out`: the counts, no patient."""
    return "\n".join(_markdown_head(plan))


def render_markdown(plan: Plan, *, limit: int = MARKDOWN_LIMIT) -> str:
    head = _markdown_head(plan)
    if plan.is_empty:
        return "\n".join(head)
    open_details = [
        f"<details><summary>Changes ({plural(len(plan.changes), 'patient')})</summary>",
        "",
        "| Patient | Identifier | Add | Remove | Tenants |",
        "|---|---|---|---|---|",
    ]
    close = ["", "</details>", ""]
    text = "\n".join(head + open_details) + "\n"
    reserve = 200 + len("\n".join(close))
    shown = 0
    used = len(text)
    rows: list[str] = []
    for change in plan.changes:
        row = (
            f"| `{change.ref}` | {_md(change.identifier or '')} | "
            f"{'<br>'.join(f'`{a}`' for a in change.add)} | "
            f"{_removed(plan, change)} | {', '.join(change.tenants)} |"
        )
        if used + len(row) + 1 + reserve > limit:
            break
        rows.append(row)
        used += len(row) + 1
        shown += 1
    text += "\n".join(rows) + "\n"
    left = len(plan.changes) - shown
    if left:
        text += (
            f"\n_… {plural(left, 'more change')} not shown (limit {limit:,} characters); "
            "see the JSON plan._\n"
        )
    text += "\n".join(close)
    if plan.resource_changes:
        text += "\n".join(
            [
                f"<details><summary>Other resources ({len(plan.resource_changes):,})</summary>",
                "",
                "| Resource | Add | Remove | Tenants |",
                "|---|---|---|---|",
                *(
                    f"| `{c.ref}` | {'<br>'.join(f'`{a}`' for a in c.add)} | "
                    f"{_removed(plan, c)} | {', '.join(c.tenants)} |"
                    for c in plan.resource_changes
                ),
                "",
                "</details>",
                "",
            ]
        )
    return text + "\n".join(access_markdown(plan))


def redact(plan: Plan, key: bytes) -> Plan:
    """Replace patient, membership and profile ids and identifier values with keyed hashes
    (HMAC-SHA256): stable for one key, unrelated across keys, and — unlike a plain hash of a
    short medical record number — not reversible by trying every value without the key."""

    def _hash(value: str) -> str:
        return keyed_hash(key, value)  # the same hash as every other redacted line (phi.py)

    def one(change: Change) -> Change:
        rtype, rid = change.ref.split("/", 1)
        identifier = None
        if change.identifier:
            system, _, value = change.identifier.partition("|")  # a value may hold a "|"
            identifier = f"{system}|{_hash(value)}"
        return replace(change, ref=f"{rtype}/{_hash(rid)}", identifier=identifier)

    changes = sorted((one(c) for c in plan.changes), key=lambda c: c.ref)
    resources = sorted((one(c) for c in plan.resource_changes), key=lambda c: c.ref)
    return redact_access(
        replace(plan, changes=tuple(changes), resource_changes=tuple(resources)), _hash
    )


RENDERERS: dict[str, Callable[[Plan], str]] = {
    "text": render_text,
    "json": render_json,
    "markdown": render_markdown,
}
