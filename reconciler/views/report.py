"""`reconciler report access` as JSON (schemas/access-report.schema.json), CSV (one row per
line, stable columns, a header line: opens in a spreadsheet) or HTML (views/report_html.py)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable

from reconciler.report.model import AccessReport, Row

FIXED_COLUMNS = (
    "membership", "profile", "display", "user", "admin", "this_client", "tenant", "account",
    "granted", "policies", "configured", "status", "reason",
)  # fmt: skip


def csv_columns(report: AccessReport) -> list[str]:
    """The fixed columns, then a seen and a total column per resource type, in type order."""
    per_type = [f"{t} {what}" for t in report.header.types for what in ("seen", "total")]
    return [*FIXED_COLUMNS, *per_type]


def _csv_row(row: Row, types: tuple[str, ...]) -> list[str]:
    data = row.to_json()
    cells = []
    for column in FIXED_COLUMNS:
        value = data[column]
        if column == "tenant":
            value = row.tenant_label
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, list):
            value = " ".join(value)
        cells.append(str(value))
    for rtype in types:
        counted = rtype in row.seen
        cells += [
            str(row.seen[rtype]) if counted else "",
            str(row.totals.get(rtype, "")) if counted else "",
        ]
    return cells


def render_csv(report: AccessReport) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_columns(report))
    for row in report.rows:
        writer.writerow(_csv_row(row, report.header.types))
    return buffer.getvalue()


def render_json(report: AccessReport) -> str:
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n"


def renderers() -> dict[str, Callable[[AccessReport], str]]:
    from reconciler.views.report_html import render_html

    return {"html": render_html, "csv": render_csv, "json": render_json}


REPORT_FORMATS = ("html", "csv", "json")
