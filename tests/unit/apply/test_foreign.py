"""The pure part of keeping other writers' changes: which versions are ours, what they lost."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from reconciler.apply.foreign import Correction, Write, Written, find_correction, parse_history

US, THEM = "ClientApplication/us", "ClientApplication/them"
NORTH, SOUTH, LEGACY, FOREIGN = (
    "Organization/north", "Organization/south", "Organization/legacy", "Organization/foreign",
)  # fmt: skip
MANAGED = {NORTH, SOUTH}.__contains__
SYSTEM = "system"  # the author of every $set-accounts version on Medplum 5.1.29


def history(*versions: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Oldest first here; the server sends newest first. None accounts: a deletion. A fourth
    item is the version's lastUpdated."""
    entries = []
    for vid, accounts, author, *stored in versions:
        url = f"Patient/p/_history/{vid}"
        if accounts is None:
            entries.append({"request": {"url": url}, "response": {"status": "410"}})
            continue
        meta = {"versionId": vid, "author": {"reference": author},
                "accounts": [a if isinstance(a, dict) else {"reference": a} for a in accounts]}  # fmt: skip
        if stored:
            meta["lastUpdated"] = stored[0]
        entries.append(
            {"request": {"url": url}, "resource": {"resourceType": "Patient", "meta": meta}}
        )
    return list(reversed(entries))


def check(
    written_lists: list[list[str]], *versions: Any, author: str | None = US, done: str = ""
) -> Any:
    done_by = datetime.fromisoformat(done) if done else None
    writes = [Write("v0", frozenset(w), done_by) for w in written_lists]
    written = Written("Patient/p", writes, True)
    return find_correction(written, parse_history(history(*versions)), MANAGED, author)


def test_an_account_added_between_our_read_and_our_write_is_put_back_at_the_end() -> None:
    found = check(
        [[LEGACY, NORTH]],
        ("v0", [LEGACY], THEM),
        ("v1", [LEGACY, FOREIGN], THEM),  # the other writer, after our re-read
        ("v2", [LEGACY, NORTH], US),  # our write, from the stale read
    )
    assert found == Correction(
        "Patient/p", (FOREIGN,), (), (LEGACY, NORTH, FOREIGN), [LEGACY, NORTH, FOREIGN], "v2"
    )


def test_an_account_removed_between_our_read_and_our_write_is_taken_out_again() -> None:
    found = check(
        [[SOUTH, LEGACY, NORTH]],
        ("v0", [SOUTH, LEGACY], THEM),
        ("v1", [SOUTH], THEM),  # the other writer revoked legacy
        ("v2", [SOUTH, LEGACY, NORTH], US),  # we wrote it back
    )
    assert isinstance(found, Correction)
    assert (found.restore, found.drop, found.keys) == ((), (LEGACY,), (SOUTH, NORTH))


def test_nothing_to_do_when_no_one_else_wrote_or_only_after_us() -> None:
    assert check([[LEGACY, NORTH]], ("v0", [LEGACY], THEM), ("v1", [LEGACY, NORTH], US)) is None
    assert check(
        [[LEGACY, NORTH]],
        ("v0", [LEGACY], THEM),
        ("v1", [LEGACY, NORTH], US),
        ("v2", [NORTH], THEM),  # a later writer removed legacy on purpose: theirs to decide
    ) is None  # fmt: skip


def test_a_later_writer_who_decided_on_the_account_again_is_not_undone() -> None:
    assert check(
        [[LEGACY, NORTH]],
        ("v0", [LEGACY], THEM),
        ("v1", [LEGACY, FOREIGN], THEM),
        ("v2", [LEGACY, NORTH], US),  # lost FOREIGN ...
        ("v3", [LEGACY, NORTH, FOREIGN], THEM),  # ... they put it back ...
        ("v4", [LEGACY, NORTH], THEM),  # ... and removed it again: their decision
    ) is None  # fmt: skip


def test_managed_accounts_are_the_manifests_to_decide() -> None:
    assert check(
        [[LEGACY, NORTH]],
        ("v0", [LEGACY], THEM),
        ("v1", [LEGACY, SOUTH], THEM),  # someone put south on it; the manifests say no
        ("v2", [LEGACY, NORTH], US),
    ) is None  # fmt: skip


def test_a_version_we_cannot_prove_ours_is_never_used_to_grant() -> None:
    # The other writer wrote exactly our list (and so removed FOREIGN on purpose); our own
    # write then changed nothing and made no version. Its author says it is not ours.
    versions = (
        ("v0", [LEGACY], THEM),
        ("v1", [LEGACY, FOREIGN], THEM),
        ("v2", [LEGACY, NORTH], THEM),
    )
    assert check([[LEGACY, NORTH]], *versions) is None
    # Where apply cannot tell whose a version is (no author to compare), it reports what may
    # have been lost instead of writing: putting an account back is a grant.
    found = check([[LEGACY, NORTH]], *versions, author=None)
    assert found == (
        f"another writer's change to {FOREIGN} may have been overwritten; neither the server's "
        "author nor its times show which versions are apply's own"
    )


def test_two_steps_and_whole_entries_are_kept_as_they_were() -> None:
    display = {"reference": FOREIGN, "display": "Foreign clinic"}
    found = check(
        [[LEGACY, NORTH, SOUTH], [LEGACY, NORTH]],  # add first, then remove (two steps)
        ("v0", [LEGACY, SOUTH], THEM),
        ("v1", [LEGACY, SOUTH, display], THEM),
        ("v2", [LEGACY, NORTH, SOUTH], US),
        ("v3", [LEGACY, NORTH], US),
    )
    assert isinstance(found, Correction)
    assert found.entries == [LEGACY, NORTH, display]


def test_a_history_that_does_not_reach_our_read_or_a_deleted_resource() -> None:
    found = check([[NORTH]], ("v7", [LEGACY], THEM), ("v8", [NORTH], US))
    assert isinstance(found, str) and "does not reach" in found
    assert check([[NORTH]], ("v0", [LEGACY], THEM), ("v1", [NORTH], US), ("v2", None, THEM)) is None


def test_our_own_correction_is_not_mistaken_for_a_revived_account() -> None:
    written = Written(
        "Patient/p",
        [Write("v0", frozenset({LEGACY, NORTH})), Write("v2", frozenset({LEGACY, NORTH, FOREIGN}))],
        True,
    )
    versions = history(
        ("v0", [LEGACY], THEM),
        ("v1", [LEGACY, FOREIGN], THEM),
        ("v2", [LEGACY, NORTH], US),
        ("v3", [LEGACY, NORTH, FOREIGN], US),  # the correction: computed from v2
    )
    assert find_correction(written, parse_history(versions), MANAGED, US) is None


# --- Medplum 5.1.29: every $set-accounts version's author is `system` -----------------------


def test_without_an_author_our_version_is_shown_by_its_list_and_when_it_was_stored() -> None:
    found = check(
        [[LEGACY, NORTH]],
        ("v0", [LEGACY], THEM, "2026-12-01T10:00:00.000Z"),
        ("v1", [LEGACY, FOREIGN], SYSTEM, "2026-12-01T10:00:01.100Z"),  # another $set-accounts
        ("v2", [LEGACY, NORTH], SYSTEM, "2026-12-01T10:00:01.300Z"),  # ours
        done="2026-12-01T10:00:01+00:00",  # our answer's Date: whole seconds, stored by then+1s
    )
    assert isinstance(found, Correction) and found.restore == (FOREIGN,)


def test_a_version_stored_after_our_write_was_done_is_not_ours() -> None:
    found = check(
        [[LEGACY, NORTH]],
        ("v0", [LEGACY], THEM, "2026-12-01T10:00:00.000Z"),
        ("v1", [LEGACY, FOREIGN], SYSTEM, "2026-12-01T10:00:05.000Z"),
        ("v2", [LEGACY, NORTH], SYSTEM, "2026-12-01T10:00:09.000Z"),  # too late to be ours
        done="2026-12-01T10:00:03+00:00",
    )
    assert found is None  # no version of ours overwrote anything: nothing to correct


def test_without_an_author_or_a_time_nothing_is_put_back_on_a_guess() -> None:
    found = check(
        [[LEGACY, NORTH]],
        ("v0", [LEGACY], THEM),
        ("v1", [LEGACY, FOREIGN], SYSTEM),
        ("v2", [LEGACY, NORTH], SYSTEM),
    )
    assert isinstance(found, str) and "may have been overwritten" in found


def test_a_version_of_another_named_client_is_never_ours() -> None:
    found = check(
        [[LEGACY, NORTH]],
        ("v0", [LEGACY], THEM, "2026-12-01T10:00:00.000Z"),
        ("v1", [LEGACY, NORTH], THEM, "2026-12-01T10:00:00.500Z"),  # exactly our list, theirs
        done="2026-12-01T10:00:01+00:00",
    )
    assert found is None
