"""plan/render_access.py: the access part of the text and markdown plans, and its redaction."""

from __future__ import annotations

import hashlib
import hmac

from reconciler.model import (
    AccessChange,
    AccessItem,
    AccessKey,
    AccessStep,
    AccountInfo,
    Membership,
    Phase,
    Plan,
    entry_json,
)
from reconciler.plan.render_access import access_line, access_lines, access_markdown, redact_access

P = "AccessPolicy/staff"
N, S, R = "Organization/north", "Organization/south", "Organization/research"
BILLING = entry_json({"policy": {"reference": "AccessPolicy/billing"}})


def entry(account: str) -> str:
    return entry_json(AccessKey(P, "organization", account).entry())


MOVE = AccessChange(
    membership="ProjectMembership/m1",
    version_id="v1",
    profile="Practitioner/d1",
    display="Dr. North",
    before=(entry(N), BILLING, entry(R)),
    after=(BILLING, entry(R), entry(S)),
    grant=(AccessItem(P, "organization", S, "south"),),
    revoke=(AccessItem(P, "organization", N, "north"),),
    steps=(
        AccessStep((BILLING, entry(R)), Phase.REVOKE),
        AccessStep((BILLING, entry(R), entry(S)), Phase.GRANT),
    ),
)
PLAN = Plan(
    changes=(),
    managed={
        a: AccountInfo(t, Membership.AUTHORITATIVE, True)
        for a, t in ((N, "north"), (S, "south"), (R, "research"))
    },
    access_changes=(MOVE,),
    managed_access=tuple(AccessKey(P, "organization", a) for a in (N, R, S)),
    warnings=("ProjectMembership/m1 is a project admin: …",),
)


def test_a_membership_block_names_grants_revocations_and_what_is_kept() -> None:
    assert list(access_lines(PLAN, MOVE)) == [
        '  ~ ProjectMembership/m1  (Practitioner/d1 "Dr. North")',
        "      + AccessPolicy/staff  organization=Organization/south      (tenant south)",
        "      - AccessPolicy/staff  organization=Organization/north      (tenant north, authoritative)",
        "        AccessPolicy/billing                                     (unmanaged, kept)",
        "        AccessPolicy/staff  organization=Organization/research   (tenant research, kept)",
        "      written twice: the revocation before any account change, the grant after",
    ]
    assert access_line(PLAN) == "Access: 1 grant to add, 1 grant to revoke, on 1 membership."


def test_colour_only_on_the_symbols() -> None:
    lines = list(access_lines(PLAN, MOVE, color=True))
    assert lines[0].startswith("  \033[33m~\033[0m ProjectMembership/m1")
    assert lines[1].startswith("      \033[32m+\033[0m AccessPolicy/staff")
    assert lines[2].startswith("      \033[31m-\033[0m AccessPolicy/staff")


def test_markdown_table_of_memberships() -> None:
    assert access_markdown(Plan(changes=())) == []
    assert access_markdown(PLAN) == [
        "<details><summary>Access (1 membership)</summary>",
        "",
        "| Membership | Grant | Revoke |",
        "|---|---|---|",
        "| `ProjectMembership/m1` | `AccessPolicy/staff  organization=Organization/south` (south) "
        "| `AccessPolicy/staff  organization=Organization/north` (north) |",
        "",
        "</details>",
        "",
    ]


def test_redaction_hashes_membership_and_profile_everywhere_and_drops_the_name() -> None:
    def hide(value: str) -> str:
        return "redacted-" + hmac.new(b"k", value.encode(), hashlib.sha256).hexdigest()[:12]

    hidden = redact_access(PLAN, hide)
    (change,) = hidden.access_changes
    assert change.membership == f"ProjectMembership/{hide('m1')}"
    assert change.profile == f"Practitioner/{hide('d1')}"
    assert change.display is None
    assert hidden.warnings == (f"ProjectMembership/{hide('m1')} is a project admin: …",)
    assert all("m1" not in line and "d1" not in line for line in access_lines(hidden, change))
