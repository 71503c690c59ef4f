"""Renderers: golden text, JSON against plan.schema.json, markdown cap, redaction, plan files."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from reconciler.errors import PlanFileError
from reconciler.model import AccountInfo, Change, Membership, Plan, Step
from reconciler.plan.jsonform import digest_of, plan_to_json
from reconciler.plan.planfile import load_plan, looks_like_plan, save_plan
from reconciler.plan.render import redact, render_json, render_markdown, render_text
from reconciler.schemas import load_schema

N, S, L, R = (
    "Organization/northside",
    "Organization/southside",
    "Organization/legacy",
    "Organization/research",
)
MANAGED = {
    N: AccountInfo("northside", Membership.AUTHORITATIVE, True),
    S: AccountInfo("southside", Membership.AUTHORITATIVE, True),
    R: AccountInfo("research", Membership.ADDITIVE, False),
}


def change(
    pid: str, before: tuple[str, ...], after: tuple[str, ...], ident: str | None = None
) -> Change:
    add = tuple(a for a in after if a not in before)
    remove = tuple(a for a in before if a not in after)
    return Change(
        ref=f"Patient/{pid}",
        version_id="9a2b",
        identifier=ident,
        before=before,
        after=after,
        add=add,
        remove=remove,
        tenants=tuple(sorted({MANAGED[a].tenant for a in add + remove})),
        steps=(Step(after, True),),
    )


P1 = change("p1", (S, L), (L, N), "http://hospital.example/mrn|A-1001")
PLAN = Plan(
    changes=(P1,),
    managed=MANAGED,
    server="http://127.0.0.1:8103/",
    created_at="2026-11-25T00:00:00Z",
    manifest_files=("examples/tenants/northside.yaml",),
    manifest_digest="sha256:" + "0" * 64,
)


def test_text_golden() -> None:
    assert render_text(PLAN) == (
        "Reconciler will perform the following changes:\n"
        "\n"
        "  ~ Patient/p1  (identifier http://hospital.example/mrn|A-1001)\n"
        "      + Organization/northside   (tenant northside)\n"
        "      - Organization/southside   (tenant southside, authoritative)\n"
        "        Organization/legacy      (unmanaged, kept)\n"
        "      meta.account changes: Organization/southside -> Organization/legacy\n"
        "\n"
        "Per tenant:\n"
        "  northside  +1 -0\n"
        "  southside  +0 -1\n"
        "\n"
        "Plan: 1 patient to update, 1 account to add, 1 account to remove.\n"
    )


def test_text_no_changes_and_plurals() -> None:
    assert render_text(Plan(changes=())) == "No changes. Live accounts match the manifests.\n"
    two = Plan(changes=(P1, change("p2", (), (N, R))), managed=MANAGED)
    assert (
        render_text(two).splitlines()[-1]
        == "Plan: 2 patients to update, 3 accounts to add, 1 account to remove."
    )


def test_text_colour_only_when_asked() -> None:
    assert "\033[" not in render_text(PLAN)
    assert "\033[32m+\033[0m" in render_text(PLAN, color=True)


def test_json_matches_design_and_schema() -> None:
    data = json.loads(render_json(PLAN))
    jsonschema.Draft202012Validator(load_schema("plan.schema.json")).validate(data)
    assert data["format_version"] == "1" and data["server"] == "http://127.0.0.1:8103/"
    assert data["changes"] == [
        {
            "patient": "Patient/p1",
            "version_id": "9a2b",
            "identifier": "http://hospital.example/mrn|A-1001",
            "before": [S, L],
            "after": [L, N],
            "add": [N],
            "remove": [S],
            "tenants": ["northside", "southside"],
            "steps": [{"accounts": [L, N], "propagate": True}],
        }
    ]
    assert data["summary"] == {"patients": 1, "add": 1, "remove": 1}
    assert data["plan_digest"] == digest_of(data)
    body = {k: v for k, v in data.items() if k != "plan_digest"}
    import hashlib

    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert data["plan_digest"] == "sha256:" + hashlib.sha256(canonical).hexdigest()


def test_markdown_summary_first_and_capped() -> None:
    md = render_markdown(PLAN)
    lines = md.splitlines()
    assert lines[2] == "**Plan: 1 patient to update, 1 account to add, 1 account to remove.**"
    assert "<details><summary>Changes (1 patient)</summary>" in md and md.rstrip().endswith(
        "</details>"
    )
    assert (
        "| `Patient/p1` | http://hospital.example/mrn\\|A-1001 | `Organization/northside` | `Organization/southside` | northside, southside |"
        in md
    )
    many = Plan(changes=tuple(change(f"p{i:05d}", (), (N,)) for i in range(3000)), managed=MANAGED)
    capped = render_markdown(many)
    assert len(capped) <= 65_000
    shown = capped.count("| `Patient/")
    assert 0 < shown < 3000
    assert (
        f"_… {3000 - shown:,} more changes not shown (limit 65,000 characters); see the JSON plan._"
        in capped
    )
    assert (
        render_markdown(Plan(changes=())).splitlines()[2]
        == "No changes. Live accounts match the manifests."
    )


def test_redact_hides_ids_and_identifier_values() -> None:
    hidden = redact(PLAN, b"k1")
    for text in (render_text(hidden), render_json(hidden), render_markdown(hidden)):
        assert "p1" not in text.replace("Patient/redacted", "") and "A-1001" not in text
        assert "http://hospital.example/mrn|redacted-" in text.replace("\\|", "|")
    one = redact(PLAN, b"k1").changes[0].ref
    assert one == redact(PLAN, b"k1").changes[0].ref  # stable for one key
    assert one != redact(PLAN, b"k2").changes[0].ref  # unrelated across keys
    import hashlib

    plain = "redacted-" + hashlib.sha256(b"p1").hexdigest()[:12]  # not an unkeyed hash
    assert plain not in render_text(redact(PLAN, b"k1"))


def test_an_identifier_value_holding_a_bar_is_hashed_whole() -> None:
    piped = replace(PLAN, changes=(change("p9", (S,), (N,), "urn:mrn|A|1009"),))
    hidden = redact(piped, b"k1")
    (one,) = hidden.changes
    assert one.identifier is not None and one.identifier.startswith("urn:mrn|redacted-")
    assert "A|1009" not in render_text(hidden) and "1009" not in render_text(hidden)


def test_save_and_load_round_trip_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    save_plan(PLAN, str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert looks_like_plan(str(path))
    loaded = load_plan(str(path))
    assert loaded.changes == PLAN.changes and loaded.managed == PLAN.managed
    assert json.loads(path.read_text()) == plan_to_json(PLAN)
    assert plan_to_json(loaded) == plan_to_json(PLAN)


def test_edited_or_corrupt_plans_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    save_plan(PLAN, str(path))
    data = json.loads(path.read_text())
    data["changes"][0]["after"].append("Organization/evil")
    path.write_text(json.dumps(data))
    with pytest.raises(PlanFileError, match="plan_digest does not match its content"):
        load_plan(str(path))
    path.write_text('{"format_version": "1", "changes": ')
    with pytest.raises(PlanFileError, match="invalid JSON"):
        load_plan(str(path))
    path.write_text(json.dumps({**data, "format_version": "9"}))
    with pytest.raises(PlanFileError, match="unsupported plan format_version '9'"):
        load_plan(str(path))
    del data["summary"]
    path.write_text(json.dumps(data))
    with pytest.raises(
        PlanFileError, match=r"corrupt plan: \(top level\): 'summary' is a required property"
    ):
        load_plan(str(path))


def test_streamed_json_equals_the_document_and_its_digest() -> None:
    import io

    from reconciler.plan.jsonform import plan_digest, write_plan_json

    for plan in (PLAN, Plan(changes=()), redact(PLAN, b"k")):
        buffer = io.StringIO()
        write_plan_json(plan, buffer)
        assert json.loads(buffer.getvalue()) == plan_to_json(plan)
        assert plan_digest(plan) == plan_to_json(plan)["plan_digest"]


def test_colour_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.plan.render import use_color

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(True) is True and use_color(False) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert use_color(True) is False
