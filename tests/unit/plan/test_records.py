"""LiveResource keeps its version and first identifier packed in one string (model/live.py):
every value goes back out as it came in."""

from __future__ import annotations

import pytest

from reconciler.model import LiveResource


def test_a_live_record_gives_back_its_version_and_identifier_whatever_they_hold() -> None:
    cases = [
        ("3f1c", "urn:mrn|A-1"),
        ("3f1c", None),
        ("3f1c", "urn:mrn|line\nbreak"),  # an identifier may hold anything
        ("v\n2", "urn:mrn|A-1"),  # a hostile versionId with a newline is kept apart
        ("v\n2", None),
        ("", None),
        ("", "|x"),
    ]
    for version, identifier in cases:
        live = LiveResource("Patient/p", version, ("Organization/o",), identifier)
        assert (live.version_id, live.identifier) == (version, identifier)
        assert live == LiveResource("Patient/p", version, ("Organization/o",), identifier)
    assert LiveResource("Patient/p", "1", ()) != LiveResource("Patient/p", "1", (), "|x")
    with pytest.raises(AttributeError):
        live.ref = "Patient/q"
