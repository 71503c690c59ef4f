"""The access review as one self-contained HTML page: it opens offline and can be attached to an
audit ticket — no external script, font, image or CDN; a Content-Security-Policy of hashes
lets only its own style and script run, so it makes no network request at all. Everything
taken from the server is escaped. A matrix of members by tenants (a colour and a symbol per
status, so it reads without colour too), a sortable and filterable table of every row, and the
header a reviewer cites."""

from __future__ import annotations

import base64
import hashlib
from html import escape
from pathlib import Path

from reconciler.plan.render import plural
from reconciler.report.model import OUTSIDE, AccessReport, Row, Status

SYMBOLS = {
    Status.OK: "✓",
    Status.MISSING: "✗",
    Status.EXTRA: "▲",
    Status.UNRESTRICTED: "⚠",
}
MEANING = {
    Status.OK: "the server lets it see what the manifests give it, and no more",
    Status.MISSING: "the manifests grant it, the server does not (or not all of it)",
    Status.EXTRA: "the server lets it see what the manifests do not give it",
    Status.UNRESTRICTED: "no policy, a * rule, or a project admin: it sees everything",
}

ASSETS = Path(__file__).resolve().parent / "assets"
STYLE = (ASSETS / "access-report.css").read_text(encoding="utf-8")
SCRIPT = (ASSETS / "access-report.js").read_text(encoding="utf-8")

STATUS_ORDER = {s: i for i, s in enumerate((Status.EXTRA, Status.UNRESTRICTED, Status.MISSING,
                                            Status.OK))}  # fmt: skip


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _who(row: Row) -> str:
    name = escape(row.display or row.profile or row.membership)
    tags = " (admin)" if row.admin else ""
    tags += " (this report's client)" if row.this_client else ""
    return f"{name}{escape(tags)}<br><small>{escape(row.membership)}</small>"


def _counts(row: Row) -> str:
    if not row.seen:
        return '<span class="note">nothing counted</span>'
    return "<br>".join(
        f"{escape(t)} {row.seen[t]:,}&#8239;/&#8239;{row.totals.get(t, 0):,}"
        for t in sorted(row.seen)
    )


def _grant_note(row: Row) -> str:
    if row.tenant is None:
        return "beyond every tenant"
    return "granted" if row.granted else "not granted"


def _matrix(report: AccessReport) -> str:
    tenants = [*report.header.tenants, None]
    by_member: dict[str, dict[str | None, Row]] = {}
    for row in report.rows:
        by_member.setdefault(row.membership, {})[row.tenant] = row
    head = "".join(f"<th>{escape(t if t is not None else OUTSIDE)}</th>" for t in tenants)
    lines = [
        f'<table class="matrix" id="matrix"><thead><tr><th>Member</th>{head}</tr></thead><tbody>'
    ]
    for membership, cells in by_member.items():
        first = next(iter(cells.values()))
        tds = []
        for tenant in tenants:
            found = cells.get(tenant)
            if found is None:
                tds.append("<td></td>")
                continue
            row, s = found, found.status
            tds.append(
                f'<td class="cell s-{s.value}" data-membership="{escape(membership)}" '
                f'data-tenant="{escape(row.tenant_label)}" data-status="{s.value}" '
                f'title="{escape(row.reason)}"><span class="sym" aria-hidden="true">'
                f'{SYMBOLS[s]}</span>{s.value}<br><small class="g">{_grant_note(row)}</small></td>'
            )
        lines.append(f'<tr><td class="who">{_who(first)}</td>{"".join(tds)}</tr>')
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _rows_table(report: AccessReport) -> str:
    columns = ["Member", "Tenant", "Granted by the manifests", "Configured", "Seen / held",
               "Status", "Why"]  # fmt: skip
    head = "".join(f'<th><button type="button">{c}</button></th>' for c in columns)
    lines = [f'<table id="rows-table"><thead><tr>{head}</tr></thead><tbody>']
    for row in report.rows:
        s = row.status
        granted = "yes (" + ", ".join(row.policies) + ")" if row.granted else "no"
        lines.append(
            f'<tr data-status="{s.value}" data-membership="{escape(row.membership)}" '
            f'data-tenant="{escape(row.tenant_label)}">'
            f'<td class="who" data-key="{escape(row.display or row.membership)}">{_who(row)}</td>'
            f"<td>{escape(row.tenant_label)}</td><td>{escape(granted)}</td>"
            f"<td>{escape(row.configured.value)}</td><td>{_counts(row)}</td>"
            f'<td data-key="{STATUS_ORDER[s]}-{s.value}"><span class="badge s-{s.value}">'
            f'<span class="sym" aria-hidden="true">{SYMBOLS[s]}</span>{s.value}</span></td>'
            f"<td>{escape(row.reason)}</td></tr>"
        )
    lines.append("</tbody></table>")
    return "\n".join(lines)


def render_html(report: AccessReport) -> str:
    data = report.to_json()
    h, counts = report.header, data["counts"]
    meta = [
        ("Server", h.server), ("Client", h.client), ("Created (UTC)", h.created_at),
        ("Tool", h.tool_version), ("Manifests digest", h.manifests_digest),
        ("Report digest", data["report_digest"]),
        ("Resource types counted", ", ".join(h.types)),
    ]  # fmt: skip
    meta_html = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in meta)
    count_items = [
        ("memberships", counts["memberships"]), ("tenants", counts["tenants"]),
        ("rows", counts["rows"]), *((s.value, counts[s.value]) for s in Status),
    ]  # fmt: skip
    statuses = {s.value for s in Status}
    counts_html = "".join(
        f'<li class="{"s-" + k if k in statuses else ""}"><b>{v:,}</b>{escape(k)}</li>'
        for k, v in count_items
    )
    legend = "".join(
        f'<li><span class="badge s-{s.value}"><span class="sym" aria-hidden="true">{SYMBOLS[s]}'
        f"</span>{s.value}</span> {escape(MEANING[s])}</li>"
        for s in Status
    )
    options = "".join(f'<option value="{s.value}">{s.value}</option>' for s in Status)
    failing = len(report.failing)
    verdict = (
        "Every row is ok."
        if not failing
        else f"{plural(failing, 'row')} need a reviewer's attention (not ok)."
    )
    csp = (
        f"default-src 'none'; style-src {_hash(STYLE)}; script-src {_hash(SCRIPT)}; "
        "img-src 'none'; form-action 'none'; base-uri 'none'"
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{escape(csp)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Access review · {escape(h.server)} · {escape(h.created_at)}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>Access review: who can see which tenant's records</h1>
<p class="sub">Counted on the server on behalf of each member (X-Medplum-On-Behalf-Of), against
what the tenant manifests give them. {escape(verdict)}</p>
<dl class="meta">{meta_html}</dl>
<ul class="counts">{counts_html}</ul>
</header>
<section>
<h2>Members &times; tenants</h2>
<div class="card">
<ul class="legend">{legend}</ul>
{_matrix(report)}
<p class="note">Hover a cell for the reason; click it to list that member's rows below.</p>
</div>
</section>
<section>
<h2>Every row</h2>
<div class="card">
<div class="controls">
<input id="filter" type="search" placeholder="Filter: member, tenant, policy…"
 aria-label="Filter rows">
<select id="status-filter" aria-label="Status"><option value="">every status</option>
{options}</select>
<span id="shown" class="note"></span>
</div>
{_rows_table(report)}
</div>
</section>
<footer>{escape(h.tool_version)} · report digest {escape(data["report_digest"])}</footer>
<script>{SCRIPT}</script>
</body>
</html>
"""
