"""plan/entries.py and plan/versions.py: the one access-entry parser, the one moved check."""

from __future__ import annotations

from reconciler.plan.entries import EntryParameter, ParsedEntry, entry_summary, parse_entry
from reconciler.plan.versions import DURING_APPLY, SINCE_PLAN, moved


def test_entries_parse_from_text_or_mapping_and_keep_every_parameter_form() -> None:
    entry = {
        "policy": {"reference": "AccessPolicy/p"},
        "parameter": [
            {"name": "organization", "valueReference": {"reference": "Organization/o"}},
            {"name": "site", "valueString": "north"},
            {"valueString": "no name: skipped"},
            "not a parameter",
        ],
    }
    expected = ParsedEntry(
        "AccessPolicy/p",
        (
            EntryParameter("organization", reference="Organization/o"),
            EntryParameter("site", string="north"),
        ),
    )
    assert parse_entry(entry) == expected
    assert parse_entry('{"policy": {"reference": "AccessPolicy/p"}}') == ParsedEntry(
        "AccessPolicy/p", ()
    )
    assert parse_entry("not json") is None
    assert parse_entry("[1, 2]") is None
    assert parse_entry({"policy": "AccessPolicy/p"}) == ParsedEntry(None, ())


def test_summaries_show_what_each_parameter_holds() -> None:
    text = (
        '{"parameter":[{"name":"organization","valueReference":{"reference":"Organization/o"}},'
        '{"name":"site","valueString":"north"}],"policy":{"reference":"AccessPolicy/p"}}'
    )
    assert entry_summary(text) == "AccessPolicy/p  organization=Organization/o  site=north"
    assert entry_summary('{"parameter": []}') == "?"
    assert entry_summary("{broken") == "{broken"


def test_moved_says_deleted_or_changed_and_since_when() -> None:
    assert moved("v1", "v1", since=SINCE_PLAN) is None
    assert moved("v1", None, since=DURING_APPLY) == "deleted during apply"
    assert moved("v1", "v2", since=SINCE_PLAN) == "changed since the plan (version v1, now v2)"
