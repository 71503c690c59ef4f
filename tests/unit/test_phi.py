"""phi.py: what `--redact` hides in a line, and what it leaves readable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reconciler import phi, scrub


@pytest.fixture(autouse=True)
def _enabled() -> Iterator[None]:
    phi.enable(b"k")
    yield
    phi.disable()


def h(value: str) -> str:
    return phi.keyed_hash(b"k", value)


def test_references_and_identifiers_are_hashed_configuration_stays() -> None:
    line = (
        "Error: GET http://srv/fhir/R4/Patient/p-1 answered 404; ProjectMembership/m1 of "
        "Practitioner/dr.x; Organization/org-1 AccessPolicy/pol-1 Basic/lock-1 urn:mrn|A-1001"
    )
    assert phi.redact(line) == (
        f"Error: GET http://srv/fhir/R4/Patient/{h('p-1')} answered 404; ProjectMembership/"
        f"{h('m1')} of Practitioner/{h('dr.x')}; Organization/org-1 AccessPolicy/pol-1 "
        f"Basic/lock-1 urn:mrn|{h('A-1001')}"
    )
    once = phi.redact(line)
    assert phi.redact(once) == once  # what is already a hash is left alone


def test_protected_values_are_hashed_where_they_stand_alone() -> None:
    phi.protect(["A-1001", "Rivera", "12", "0f1e0003-0000-4000-8000-000000000001", "a b c d"])
    assert phi.redact("mrn A-1001, name Rivera; 12 patients; x A-10011") == (
        f"mrn {h('A-1001')}, name {h('Rivera')}; 12 patients; x A-10011"
    )  # too short to hide ("12") and a longer token ("A-10011") are not that value
    assert phi.redact("id 0f1e0003-0000-4000-8000-000000000001 and a b c d") == (
        f"id {h('0f1e0003-0000-4000-8000-000000000001')} and {h('a b c d')}"
    )


def test_scrub_applies_it_and_off_means_off() -> None:
    assert scrub.scrub("Patient/p-1") == f"Patient/{h('p-1')}"
    phi.disable()
    assert scrub.scrub("Patient/p-1") == "Patient/p-1"
    phi.protect(["A-1001"])  # ignored while off
    phi.enable(b"k")
    assert phi.redact("A-1001") == "A-1001"
