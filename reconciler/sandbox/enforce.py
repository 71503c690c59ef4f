"""Access-policy enforcement for one request (the policies are built in sandbox/access.py):
which types and rows a search may see, and whether a read or write of one resource is
allowed — 404 outside the policy, as if it did not exist; 403 when readable but not writable."""

from __future__ import annotations

from reconciler.sandbox import search
from reconciler.sandbox.access import ADMIN_TYPES
from reconciler.sandbox.fhir import Caller
from reconciler.sandbox.outcomes import forbidden, not_found
from reconciler.sandbox.store import Store


class Enforcement:
    store: Store

    def _access(
        self, caller: Caller, types: list[str], *, required: bool = False
    ) -> dict[str, list[list[tuple[str, str]]] | None] | None:
        """The search restriction for `types` (None: the caller may see all of them)."""
        policy = caller.member.policy
        if policy.unrestricted and not any(t in ADMIN_TYPES for t in types):
            return None
        if required and not policy.can_read_type(types[0]):
            raise forbidden()
        return {t: policy.filters_for(t) for t in types if policy.can_read_type(t)}

    def _check_type(self, caller: Caller, rtype: str, *, write: bool) -> None:
        policy = caller.member.policy
        allowed = policy.can_write_type(rtype) if write else policy.can_read_type(rtype)
        if not allowed:
            raise forbidden()

    def _matches(self, rtype: str, rid: str, bounds: list[list[tuple[str, str]]] | None) -> bool:
        if bounds is None:
            return True
        sreq = search.SearchRequest(types=[rtype], filters=[("_id", rid)])
        sreq.access = {rtype: bounds}
        where, args = search.where_clause(sreq)
        return self.store.count([rtype], where, args) > 0

    def _check_visible(self, caller: Caller, rtype: str, rid: str, *, write: bool) -> None:
        """A resource outside the caller's policy answers 404, as if it did not exist; one it
        may read but not write answers 403."""
        policy = caller.member.policy
        if policy.unrestricted and rtype not in ADMIN_TYPES:
            return
        self._check_type(caller, rtype, write=False)
        if not self._matches(rtype, rid, policy.filters_for(rtype)):
            raise not_found()
        if write:
            self._check_type(caller, rtype, write=True)
            if not self._matches(rtype, rid, policy.filters_for(rtype, write=True)):
                raise forbidden()
