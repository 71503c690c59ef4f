"""The sandbox's FHIR routes: CRUD, search, history, `$set-accounts` (sync and async jobs),
job status and `batch` Bundles. A mixin of App (sandbox/app.py), kept apart by job."""

from __future__ import annotations

import json
from collections.abc import Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from reconciler.sandbox import ops, search
from reconciler.sandbox.access import ADMIN_TYPES
from reconciler.sandbox.config import Config
from reconciler.sandbox.enforce import Enforcement
from reconciler.sandbox.fhir import Caller, Repository, parse_set_accounts
from reconciler.sandbox.jobs import FINAL, JobRunner
from reconciler.sandbox.messages import Request, Response
from reconciler.sandbox.outcomes import (
    FhirError,
    accepted,
    all_ok,
    bad_request,
    forbidden,
    not_found,
    outcome,
)
from reconciler.sandbox.quota import HISTORY, READ, SEARCH, WRITE, QuotaMeter, RequestMeter
from reconciler.sandbox.store import Resource, Store

FHIR_PREFIX = "/fhir/R4"
View = Callable[[Resource], Resource]  # renders a stored resource for one request


def resource_headers(resource: dict[str, Any]) -> dict[str, str]:
    meta = resource.get("meta") or {}
    return {"ETag": f'W/"{meta.get("versionId", "")}"', "Last-Modified": formatdate(usegmt=True)}


class Routes(Enforcement):
    config: Config
    store: Store
    repo: Repository
    quota: QuotaMeter
    jobs: JobRunner

    def dispatch(
        self,
        caller: Caller,
        method: str,
        rest: str,
        query: list[tuple[str, str]],
        req: Request,
        body: bytes | Any,
        meter: RequestMeter,
    ) -> Response:
        parts = [p for p in rest.split("/") if p]
        extended = (req.header("x-medplum") or "").lower() == "extended"
        base = f"{req.base}{FHIR_PREFIX}"

        def view(resource: Resource) -> Resource:
            return self.repo.render(resource, extended=extended)

        charge = meter.charge

        if not parts:
            if method == "GET":
                types = [t for v in query if v[0] == "_type" for t in v[1].split(",") if t]
                if not types:
                    raise bad_request("No types specified")
                charge(SEARCH)
                sreq = search.parse(types, query, system_level=True)
                sreq.access = self._access(caller, types)
                return Response(200, self._run_search(sreq, base, base, view))
            if method == "POST":
                return self._batch(caller, req, _json(body), meter)
            raise _method_not_allowed()
        rtype = parts[0]
        if rtype == "job" and len(parts) == 3 and parts[2] == "status":
            charge(READ)
            return self._job_status(caller, method, parts[1], view)
        if not rtype[:1].isupper():
            raise not_found()
        if len(parts) == 1:
            if method == "GET":
                charge(SEARCH)
                sreq = search.parse([rtype], query, system_level=False)
                sreq.access = self._access(caller, [rtype], required=True)
                return Response(200, self._run_search(sreq, base, f"{base}/{rtype}", view))
            if method == "POST":
                charge(WRITE)
                self._check_type(caller, rtype, write=True)
                return self._create(caller, rtype, _json(body), req, extended, view, base)
            raise _method_not_allowed()
        second = parts[1]
        if second == "_search" and len(parts) == 2 and method == "POST":
            charge(SEARCH)
            raw = body if isinstance(body, bytes) else b""
            form = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
            sreq = search.parse([rtype], [*form, *query], system_level=False)
            sreq.access = self._access(caller, [rtype], required=True)
            return Response(200, self._run_search(sreq, base, f"{base}/{rtype}", view))
        if second.startswith("$"):
            charge(READ)
            self._check_type(caller, rtype, write=False)
            return ops.type_operation(
                self.repo, rtype, second[1:], method, query, _json(body, allow_empty=True)
            )
        rid = second
        if len(parts) == 2:
            if method == "GET":
                charge(READ)
                self._check_visible(caller, rtype, rid, write=False)
                resource = self.repo.read(rtype, rid)
                return Response(200, view(resource), headers=resource_headers(resource))
            if method == "PUT":
                charge(WRITE)
                self._check_visible(caller, rtype, rid, write=True)
                resource = self.repo.update(
                    rtype,
                    rid,
                    _json(body),
                    caller,
                    extended=extended,
                    if_match=req.header("if-match"),
                )
                return Response(200, view(resource), headers=resource_headers(resource))
            if method == "DELETE":
                charge(WRITE)
                self._check_visible(caller, rtype, rid, write=True)
                self.repo.delete(rtype, rid)
                return Response(200, all_ok())
            raise _method_not_allowed()
        if parts[2] == "_history" and len(parts) in (3, 4):
            if method != "GET":
                raise _method_not_allowed()
            charge(HISTORY if len(parts) == 3 else READ)
            return self._history(caller, rtype, rid, parts[3] if len(parts) == 4 else None, view)
        if len(parts) == 3 and parts[2] == "$set-accounts" and method == "POST":
            if caller.admin:  # anyone else: 403 (sync) or a failing job, in _set_accounts
                self._check_visible(caller, rtype, rid, write=True)
            return self._set_accounts(
                caller, req, rtype, rid, _json(body, allow_empty=True), charge
            )
        if len(parts) == 3 and parts[2].startswith("$"):
            charge(SEARCH)
            self._check_visible(caller, rtype, rid, write=False)
            return ops.instance_operation(
                self.repo, rtype, rid, parts[2][1:], method, query, view, base
            )
        raise not_found()

    def _history(
        self, caller: Caller, rtype: str, rid: str, vid: str | None, view: View
    ) -> Response:
        """Instance history (newest first, at most 100 versions, deletions as 410 entries) or
        one version (vread), like Medplum's readHistory/readVersion. The caller must be able to
        read the resource as it is now; a deleted one's history is for unrestricted callers."""
        versions = self.store.history(rtype, rid)
        if versions is None:
            raise not_found()
        if versions[0][2] is not None:
            self._check_visible(caller, rtype, rid, write=False)
        elif not caller.member.policy.unrestricted or rtype in ADMIN_TYPES:
            raise not_found()
        if vid is not None:
            for version_id, _, resource in versions:
                if version_id == vid and resource is not None:
                    return Response(200, view(resource), headers=resource_headers(resource))
            raise not_found()
        entries = []
        for version_id, last_updated, resource in versions:
            entry: dict[str, Any] = {
                "fullUrl": f"{rtype}/{rid}",
                "request": {"method": "GET", "url": f"{rtype}/{rid}/_history/{version_id}"},
            }
            if resource is None:
                entry["response"] = {"status": "410", "outcome": outcome(
                    "deleted", f"Deleted on {last_updated}", oid="gone"
                )}  # fmt: skip
            else:
                entry["response"] = {"status": "200", "outcome": all_ok()}
                entry["resource"] = view(resource)
            entries.append(entry)
        return Response(200, {"resourceType": "Bundle", "type": "history", "entry": entries})

    def _run_search(
        self, sreq: search.SearchRequest, base: str, link_base: str, view: View
    ) -> dict[str, Any]:
        return search.run(
            self.store,
            sreq,
            base_url=base,
            link_base=link_base,
            max_offset=self.config.max_search_offset,
            render=view,
        )

    def _create(
        self,
        caller: Caller,
        rtype: str,
        body: Any,
        req: Request,
        extended: bool,
        view: View,
        base: str,
    ) -> Response:
        condition = req.header("if-none-exist")
        with self.store.exclusive():  # search + create as one step, so two creates cannot race
            if condition:
                sreq = search.parse([rtype], parse_qsl(condition), system_level=False)
                sreq.access = self._access(caller, [rtype], required=True)
                sreq.count = 2
                found = search.run(
                    self.store, sreq, base_url=base, link_base=base, max_offset=None, render=view
                )
                entries = found.get("entry") or []
                if len(entries) > 1:
                    raise FhirError(
                        412, outcome("duplicate", "Multiple resources found matching condition")
                    )
                if entries:
                    resource = entries[0]["resource"]
                    return Response(200, resource, headers=resource_headers(resource))
            resource = self.repo.create(rtype, body, caller, extended=extended)
            policy = caller.member.policy
            if not policy.unrestricted and not self._matches(
                rtype, resource["id"], policy.filters_for(rtype, write=True)
            ):
                # Outside what the policy may write (another tenant's compartment, say):
                # refused, and nothing kept.
                with self.store.transaction() as conn:
                    self.store.delete(conn, rtype, resource["id"])
                raise forbidden()
        headers = resource_headers(resource)
        headers["Location"] = f"{base}/{rtype}/{resource['id']}"
        return Response(201, view(resource), headers=headers)

    def _set_accounts(
        self,
        caller: Caller,
        req: Request,
        rtype: str,
        rid: str,
        body: Any,
        charge_request: Callable[[int], None],
    ) -> Response:
        accounts, propagate = parse_set_accounts(body)
        prefer_async = "respond-async" in (req.header("prefer") or "")
        cap = self.config.propagate_cap
        system_author = self.config.set_accounts_author == "system"
        # Medplum 5.x ignores respond-async unless propagate is set (observed).
        if prefer_async and propagate:
            status_base = f"{req.base}{FHIR_PREFIX}/job"
            client = caller.client_id

            def work() -> dict[str, Any]:
                writes = 0
                limit = self.config.job_fail_after_writes
                job_meter = self.quota.meter(client)  # a job meters itself, apart from the 202

                def charge(points: int) -> None:
                    nonlocal writes
                    if points >= WRITE:  # the compartment search is no write
                        if limit is not None and writes >= limit:
                            raise FhirError(500, outcome("exception", "Job died mid-propagation"))
                        writes += 1
                    job_meter.charge_waiting(points)

                n = self.repo.set_accounts(
                    rtype, rid, accounts, caller, propagate=True, cap=cap, charge=charge,
                    system_author=system_author,
                )  # fmt: skip
                job_meter.charge_waiting(WRITE)  # the AsyncJob updated with its outcome
                return {
                    "resourceType": "Parameters",
                    "parameter": [{"name": "resourcesUpdated", "valueInteger": n}],
                }

            # The AsyncJob resource is written before the 202 (observed: an async call costs 200
            # points more than a synchronous one — created here, updated when it ends).
            charge_request(WRITE)
            job = self.jobs.submit(f"{req.base}/{rtype}/{rid}/$set-accounts", caller.author, work)
            url = f"{status_base}/{job['id']}/status"
            return Response(202, accepted(url), headers={"Content-Location": url})
        n = self.repo.set_accounts(
            rtype,
            rid,
            accounts,
            caller,
            propagate=propagate,
            cap=cap,
            charge=charge_request,
            system_author=system_author,
        )
        return Response(
            200,
            {
                "resourceType": "Parameters",
                "parameter": [{"name": "resourcesUpdated", "valueInteger": n}],
            },
        )

    def _job_status(self, caller: Caller, method: str, job_id: str, view: View) -> Response:
        if method == "DELETE":
            if self.store.get("AsyncJob", job_id) is None:
                raise not_found()
            if not self.jobs.cancel(job_id):
                raise bad_request("Job cannot be cancelled")
            return Response(202, all_ok())
        if method != "GET":
            raise _method_not_allowed()
        job = self.store.get("AsyncJob", job_id)
        if job is None:
            raise not_found()
        status = 200 if job["status"] in FINAL else 202
        return Response(status, view(job), headers=resource_headers(job))

    def _batch(self, caller: Caller, req: Request, bundle: Any, meter: RequestMeter) -> Response:
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise bad_request("Expected a Bundle")
        kind = bundle.get("type")
        if kind not in ("batch", "transaction"):
            raise bad_request("Unrecognized bundle type")
        entries = []
        for entry in bundle.get("entry") or []:
            request = entry.get("request") or {}
            split = urlsplit(str(request.get("url", "")))
            method = str(request.get("method", "GET")).upper()
            resource = entry.get("resource")
            payload: Any = resource if resource is not None else b""
            try:
                result = self.dispatch(
                    caller,
                    method,
                    split.path.strip("/"),
                    parse_qsl(split.query),
                    req,
                    payload,
                    meter,
                )
            except FhirError as exc:
                result = Response(exc.status, exc.outcome)
            response: dict[str, Any] = {"status": str(result.status)}
            if result.status >= 400:
                response["outcome"] = result.body
                entries.append({"response": response})
                continue
            response["outcome"] = all_ok()
            body = result.body if isinstance(result.body, dict) else None
            if body is not None and body.get("id") and body.get("resourceType") != "Bundle":
                response["location"] = f"{body['resourceType']}/{body['id']}"
            item: dict[str, Any] = {"response": response}
            if body is not None:
                item["resource"] = body
            entries.append(item)
        return Response(
            200, {"resourceType": "Bundle", "type": f"{kind}-response", "entry": entries}
        )


def _method_not_allowed() -> FhirError:
    return FhirError(405, outcome("not-supported", "Method not allowed"))


def _json(body: bytes | Any, *, allow_empty: bool = False) -> Any:
    if not isinstance(body, bytes):
        return body
    if not body.strip():
        if allow_empty:
            return None
        raise bad_request("Missing request body")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("Invalid JSON body") from None
