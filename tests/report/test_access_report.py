"""`reconciler report access` (issue 29) on the demo data with one hand-made over-grant: the same
rows in JSON (valid against its schema), CSV (parsed by the csv module) and HTML — the HTML
looked at in a real headless Chromium: no console error, no network request, the matrix as the
JSON says, sorting that works, and a screenshot."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from reconciler.cli import main
from reconciler.sandbox import seed as seeding
from reconciler.sandbox.store import Store
from tests.integration.helpers import run_cli as run
from tests.report.browser import Browser, find_chromium
from tests.sandbox_process import ADMIN, InProcessSandbox

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "tenants"
NURSE_NORTH = "ProjectMembership/0f1e0006-0000-4000-8000-000000000001"
SOUTH = f"Organization/{seeding.ORG_SOUTH}"
CLINIC_STAFF = f"AccessPolicy/{seeding.CLINIC_STAFF_POLICY}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessSandbox, Path]]:
    """The demo data, the examples applied, then a hand-made grant: Nurse North is given
    Southside's records through a copy of the clinic-staff policy no manifest names."""
    tmp = tmp_path_factory.mktemp("report")
    data = str(tmp / "demo.sqlite")
    store = Store(data)
    seeding.seed(store, patients=12, per_patient=1)
    store.close()
    sb = InProcessSandbox(data=data).start()
    manifests = tmp / "tenants"
    shutil.copytree(EXAMPLES, manifests)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDPLUM_BASE_URL", sb.url)
        mp.setenv("MEDPLUM_CLIENT_ID", ADMIN[0])
        mp.setenv("MEDPLUM_CLIENT_SECRET", ADMIN[1])
        assert main(["apply", str(manifests), "--auto-approve", "-q"]) == 0
    admin = sb.client()
    staff = admin.read_resource("AccessPolicy", seeding.CLINIC_STAFF_POLICY)
    copy = admin.create_resource(
        {k: v for k, v in staff.items() if k not in ("id", "meta")} | {"name": "hand-made"}
    )
    nurse = admin.read_resource("ProjectMembership", NURSE_NORTH.split("/")[1])
    nurse["access"] = [*nurse.get("access", []), {
        "policy": {"reference": f"AccessPolicy/{copy['id']}"},
        "parameter": [{"name": "organization", "valueReference": {"reference": SOUTH}}],
    }]  # fmt: skip
    admin.update_resource(nurse)
    yield sb, manifests
    sb.stop()


def report(
    demo: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any, fmt: str, *extra: str
) -> tuple[int, str, str]:
    sb, manifests = demo
    return run(sb, monkeypatch, capsys, "report", "access", str(manifests), "--format", fmt, *extra)


def test_json_csv_and_an_over_grant(
    demo: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    code, out, err = report(demo, monkeypatch, capsys, "json", "--detailed-exitcode")
    assert code == 2, err  # a row is not ok
    data = json.loads(out)
    jsonschema.validate(
        data, json.loads((ROOT / "schemas" / "access-report.schema.json").read_text())
    )
    rows = data["rows"]
    assert data["tenants"] == ["northside", "research-registry", "southside"]
    memberships = {r["membership"] for r in rows}
    assert len(rows) == len(memberships) * 4  # three tenants and "outside every tenant"
    assert data["counts"]["rows"] == len(rows) and data["counts"]["memberships"] == len(memberships)
    by = {(r["membership"], r["tenant"]): r for r in rows}
    extra = by[(NURSE_NORTH, "southside")]
    assert (extra["status"], extra["granted"], extra["configured"]) == (
        "extra",
        False,
        "unmanaged entry",
    )
    assert extra["seen"]["Patient"] == extra["totals"]["Patient"] > 0
    patients = extra["seen"]["Patient"]
    assert f"sees {patients:,} of {patients:,} Patients" in extra["reason"]
    assert "through an unmanaged entry (AccessPolicy/" in extra["reason"]
    own = by[(NURSE_NORTH, "northside")]
    assert (own["status"], own["granted"], own["configured"], own["policies"]) == (
        "ok", True, "managed entry", [CLINIC_STAFF],
    )  # fmt: skip
    assert own["seen"] == own["totals"]
    assert by[(NURSE_NORTH, None)]["status"] == "ok"
    admin = next(r for r in rows if r["this_client"])
    assert (admin["status"], admin["configured"]) == ("unrestricted", "project admin")
    member = next(r for r in rows if r["display"] == "sandbox-member")  # no policy at all
    assert (member["status"], member["configured"]) == ("unrestricted", "no policy: everything")
    assert "the report names members (not redacted" in err
    assert f"Report digest {data['report_digest']}." in err
    # CSV: one line per row, the same rows in the same order, the same values.
    code, text, _ = report(demo, monkeypatch, capsys, "csv")
    assert code == 0
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == len(rows)
    for line, row in zip(table, rows, strict=True):
        assert line["membership"] == row["membership"]
        assert line["tenant"] == (row["tenant"] or "(outside every tenant)")
        assert (line["status"], line["configured"], line["reason"]) == (
            row["status"], row["configured"], row["reason"],
        )  # fmt: skip
        assert line["granted"] == ("yes" if row["granted"] else "no")
        for rtype in data["types"]:
            assert line[f"{rtype} seen"] == str(row["seen"].get(rtype, ""))
            assert line[f"{rtype} total"] == str(row["totals"].get(rtype, ""))


def test_redacted_report_names_nobody(
    demo: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("RECONCILER_REDACT_KEY", "r" * 32)
    code, out, err = report(demo, monkeypatch, capsys, "json", "--redact")
    assert code == 0
    rows = json.loads(out)["rows"]
    for name in (
        "Nurse North",
        "north-nurse",
        NURSE_NORTH.split("/")[1],
        "0f1e0002-0000-4000-8000-000000000011",
    ):
        assert name not in out + err
    assert all(r["membership"].startswith("ProjectMembership/redacted-") for r in rows)
    assert {r["status"] for r in rows} == {"ok", "extra", "unrestricted"}  # same findings
    assert "not redacted" not in err


@pytest.mark.timeout(120)
def test_html_in_a_real_browser(
    demo: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any, tmp_path: Path
) -> None:
    chromium = find_chromium()
    if chromium is None and os.environ.get("RECONCILER_REQUIRE_BROWSER"):
        pytest.fail("RECONCILER_REQUIRE_BROWSER is set (.ci/run installed Chromium) but none found")
    if chromium is None:
        pytest.skip(
            "no Chromium here (.ci/run installs Debian's chromium; apt-get install chromium)"
        )
    data = json.loads(report(demo, monkeypatch, capsys, "json")[1])
    page = tmp_path / "access.html"
    code, out, _ = report(demo, monkeypatch, capsys, "html", "--out", str(page))
    assert (code, out) == (0, "")
    html = page.read_text()
    assert "src=" not in html and "href=" not in html and "@import" not in html  # nothing fetched
    browser = Browser(chromium, tmp_path / "profile")
    try:
        browser.open(page.as_uri())
        cells = browser.evaluate(
            "JSON.stringify([...document.querySelectorAll('td.cell')].map("
            "c => [c.dataset.membership, c.dataset.tenant, c.dataset.status]))"
        )
        assert sorted(map(tuple, json.loads(cells))) == sorted(
            (r["membership"], r["tenant"] or "(outside every tenant)", r["status"])
            for r in data["rows"]
        )
        order = "JSON.stringify([...document.querySelectorAll('#rows-table tbody tr')].map(r => r.dataset.status))"
        browser.evaluate("document.querySelectorAll('#rows-table th button')[5].click()")
        ascending = json.loads(browser.evaluate(order))
        rank = {"extra": 0, "unrestricted": 1, "missing": 2, "ok": 3}
        assert ascending == sorted(ascending, key=rank.__getitem__) and ascending[0] == "extra"
        browser.evaluate("document.querySelectorAll('#rows-table th button')[5].click()")
        assert json.loads(browser.evaluate(order)) == ascending[::-1]
        browser.evaluate("var f = document.getElementById('status-filter'); f.value = 'extra';"
                         "f.dispatchEvent(new Event('change'))")  # fmt: skip
        visible = browser.evaluate(
            "[...document.querySelectorAll('#rows-table tbody tr')].filter(r => !r.hidden).length"
        )
        assert visible == data["counts"]["extra"]
        browser.evaluate("var f = document.getElementById('status-filter'); f.value = '';"
                         "f.dispatchEvent(new Event('change')); window.scrollTo(0, 0)")  # fmt: skip
        shot = tmp_path / "access-report.png"
        browser.screenshot(shot)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        assert browser.errors() == []
        assert browser.requests() == [page.as_uri()]  # the page itself, nothing else
    finally:
        browser.close()
