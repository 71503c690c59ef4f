"""Re-planning one resource or membership from a fresh read, with the manifests' rules: what
apply does when a patient, resource or membership moved between the plan and its write."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.model import (
    AccessChange,
    AccountInfo,
    Change,
    LiveMembership,
    LiveResource,
    LiveState,
    Tenant,
)
from reconciler.plan.access import AccessRules, access_rules, desired_entries
from reconciler.plan.access import change_for as access_change_for
from reconciler.plan.planner import managed_accounts, replan


@dataclass(frozen=True)
class Replanner:
    tenants: Sequence[Tenant]
    live: LiveState
    managed: dict[str, AccountInfo]
    rules: AccessRules

    def change(self, fresh: LiveResource) -> Change | None:
        """The change a resource (patient or other) needs now; None: nothing left to do."""
        return replan(fresh, self.tenants, self.live, self.managed)

    def access(self, fresh: LiveMembership) -> AccessChange | None:
        return access_change_for(fresh, desired_entries(fresh, self.rules), self.rules)


def replanner(tenants: Sequence[Tenant], live: LiveState) -> Replanner:
    return Replanner(tenants, live, managed_accounts(tenants, live), access_rules(tenants, live))
