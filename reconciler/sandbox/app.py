"""The sandbox's request handling, independent of the HTTP server so batches can re-enter it."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from reconciler.sandbox import ops, search
from reconciler.sandbox.access import (
    ADMIN_TYPES,
    PROJECT_ID,
    PROJECT_NAME,
    member_of,
    membership_id_for,
    policy_resource,
)
from reconciler.sandbox.auth import TokenIssuer
from reconciler.sandbox.clock import Clock, SystemClock
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
    throttled,
)
from reconciler.sandbox.quota import HISTORY, READ, SEARCH, WRITE, QuotaMeter, RequestMeter
from reconciler.sandbox.store import Resource, Store

FHIR_PREFIX = "/fhir/R4"
View = Callable[[Resource], Resource]  # renders a stored resource for one request
DEFAULT_CLIENTS = {
    "sandbox-admin": ("sandbox-secret", "admin"),
    "sandbox-member": ("sandbox-secret", "member"),
}


@dataclass
class Config:
    clients: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(DEFAULT_CLIENTS))
    latency_ms: float = 0.0
    spike_ms: float = 0.0  # an extra delay on a fraction (spike_rate) of requests
    spike_rate: float = 0.0
    faults: list[tuple[int, float]] = field(default_factory=list)
    fault_jobs: bool = False
    retry_after: float | None = None
    job_delay_ms: float = 0.0
    job_fail_rate: float = 0.0
    job_fail_after_writes: int | None = None  # a job dies after this many writes (no rollback)
    propagate_cap: int = 1000
    max_search_offset: int | None = None
    fhir_quota: int | None = None
    quota_window_s: float = 60.0
    token_ttl_s: int = 3600
    seed: int | None = None


def _resource_headers(resource: dict[str, Any]) -> dict[str, str]:
    meta = resource.get("meta") or {}
    return {"ETag": f'W/"{meta.get("versionId", "")}"', "Last-Modified": formatdate(usegmt=True)}


class App:
    def __init__(self, config: Config, store: Store, *, clock: Clock | None = None) -> None:
        self.config = config
        self.store = store
        self.clock = clock or SystemClock()
        self.repo = Repository(store)
        self.rng = random.Random(config.seed)
        self.quota = QuotaMeter(
            config.fhir_quota, config.quota_window_s, clock=self.clock, rng=self.rng
        )
        self.jobs = JobRunner(
            store,
            delay_ms=config.job_delay_ms,
            fail_rate=config.job_fail_rate,
            rng=self.rng,
            sleep=self.clock.sleep,
        )
        self.jobs.fail_orphans()
        self.auth = TokenIssuer(
            config.clients,
            config.token_ttl_s,
            clock=self.clock.now,
            stored_secret=self._stored_secret,
        )
        self._ensure_client_memberships()
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()

    def close(self) -> None:
        self.jobs.shutdown()

    # --- who is calling --------------------------------------------------------------------

    def _stored_secret(self, client_id: str) -> str | None:
        client = self.store.get("ClientApplication", client_id)
        secret = client.get("secret") if client else None
        return secret if isinstance(secret, str) and secret else None

    def _ensure_client_memberships(self) -> None:
        """Every configured client is a ClientApplication with a ProjectMembership (`admin`
        for the admin role, no `admin` field otherwise), created once and then left alone."""
        with self.store.transaction() as conn:
            for client_id, (secret, role) in self.config.clients.items():
                ref = {"reference": f"ClientApplication/{client_id}", "display": client_id}
                if self.store.get("ClientApplication", client_id) is None:
                    self.store.put(
                        conn,
                        {"resourceType": "ClientApplication", "id": client_id,
                         "name": client_id, "secret": secret, "meta": {}},
                    )  # fmt: skip
                if self._membership_where("user", ref["reference"]) is None:
                    membership: Resource = {
                        "resourceType": "ProjectMembership",
                        "id": membership_id_for(client_id),
                        "project": {"reference": f"Project/{PROJECT_ID}", "display": "Sandbox"},
                        "user": ref,
                        "profile": dict(ref),
                        "meta": {},
                    }
                    if role == "admin":
                        membership["admin"] = True
                    self.store.put(conn, membership)

    def _membership_where(self, param: str, value: str) -> Resource | None:
        rows = self.store.query(
            ["ProjectMembership"],
            ["r.seq IN (SELECT seq FROM search_index WHERE param=? AND value=?)"],
            [param, value],
            order="r.seq",
            limit=1,
            offset=0,
        )
        return rows[0][2] if rows else None

    def _caller(self, req: Request) -> Caller:
        client_id = self.auth.client_of(req.header("authorization"))
        membership = self._membership_where("user", f"ClientApplication/{client_id}")
        if membership is None:
            raise forbidden()
        caller = Caller(client_id, member_of(self.store, membership))
        on_behalf = req.header("x-medplum-on-behalf-of")
        if not on_behalf:
            return caller
        # Only project admins may act as another member; the request then has that member's
        # access (medplum-api.md, "Acting on behalf of a member").
        if not caller.admin:
            raise forbidden()
        rtype, _, rid = on_behalf.strip().partition("/")
        target = (
            self.store.get("ProjectMembership", rid)
            if rtype == "ProjectMembership"
            else self._membership_where("profile", on_behalf.strip())
        )
        if target is None:
            raise bad_request("Invalid X-Medplum-On-Behalf-Of header")
        return Caller(client_id, member_of(self.store, target))

    def _auth_me(self, req: Request) -> Response:
        caller = self._caller(req)
        membership = caller.member.membership
        profile_ref = str((membership.get("profile") or {}).get("reference") or "")
        ptype, _, pid = profile_ref.partition("/")
        # Like Medplum: for a ClientApplication the profile is the client itself, secret and
        # all — a caller must never log this body.
        profile = self.store.get(ptype, pid) if ptype and pid else None
        body: dict[str, Any] = {
            "project": {"resourceType": "Project", "id": PROJECT_ID, "name": PROJECT_NAME},
            "membership": self.repo.render(membership, extended=False),
            "profile": profile,
            "config": {"resourceType": "UserConfiguration", "menu": []},
            "accessPolicy": policy_resource(caller.member.policy),
        }
        return Response(200, body, content_type="application/json; charset=utf-8")

    # --- entry point -----------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        response = self._route(req)
        # Every response carries the "requests" limiter; FHIR routes add "fhirInteractions".
        response.headers.setdefault("RateLimit", self.quota.header(None, fhir=False))
        return response

    def _route(self, req: Request) -> Response:
        with self._lock:
            self.stats["requests"] += 1
        if self.config.latency_ms:
            self.clock.sleep(self.config.latency_ms / 1000)
        if self.config.spike_rate and self.rng.random() < self.config.spike_rate:
            with self._lock:
                self.stats["latency_spikes"] += 1
            self.clock.sleep(self.config.spike_ms / 1000)
        path = req.path.rstrip("/") or "/"
        try:
            if path == "/healthcheck":
                return Response(
                    200, {"ok": True, "version": "sandbox"}, content_type="application/json"
                )
            if path == "/oauth2/token" and req.method == "POST":
                status, body = self.auth.issue(req.body)
                return Response(status, body, content_type="application/json")
            if path.startswith("/sandbox/stats"):
                return self._stats(req)
            if path == "/auth/me" and req.method == "GET":
                return self._auth_me(req)
            if path == FHIR_PREFIX or path.startswith(FHIR_PREFIX + "/"):
                return self._fhir(req, path[len(FHIR_PREFIX) :].strip("/"))
            raise not_found()
        except FhirError as exc:
            return Response(exc.status, exc.outcome, headers=dict(exc.headers))

    def _stats(self, req: Request) -> Response:
        if req.method == "POST":
            with self._lock:
                self.stats.clear()
        with self._lock:
            body: dict[str, Any] = dict(self.stats)
        body["throttled"] = self.quota.throttled_count
        body["jobs_completed"] = self.jobs.completed
        body["jobs_failed"] = self.jobs.failed
        return Response(200, body, content_type="application/json")

    # --- FHIR ------------------------------------------------------------------------------

    def _fault(self, rest: str) -> Response | None:
        if not self.config.faults or (rest.startswith("job/") and not self.config.fault_jobs):
            return None
        roll = self.rng.random()
        for status, rate in self.config.faults:
            if roll < rate:
                with self._lock:
                    self.stats[f"fault_{status}"] += 1
                headers: dict[str, str] = {}
                if self.config.retry_after is not None:
                    headers["Retry-After"] = f"{self.config.retry_after:g}"
                if status == 429:
                    wait_ms = int((self.config.retry_after or 0.05) * 1000)
                    return Response(429, throttled(wait_ms, 0, 0), headers=headers)
                text = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
                body = outcome("transient", text.get(status, "Injected fault"))
                return Response(status, body, headers=headers)
            roll -= rate
        return None

    def _fhir(self, req: Request, rest: str) -> Response:
        caller = self._caller(req)
        fault = self._fault(rest)
        if fault is not None:
            fault.headers["RateLimit"] = self.quota.header(caller.client_id, fhir=True)
            return fault
        self.quota.count_request(caller.client_id)
        meter = self.quota.meter(caller.client_id)
        try:
            response = self.dispatch(caller, req.method, rest, req.query, req, req.body, meter)
        except FhirError as exc:
            response = Response(exc.status, exc.outcome, headers=dict(exc.headers))
        response.headers["RateLimit"] = meter.header()
        return response

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
                return Response(200, view(resource), headers=_resource_headers(resource))
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
                return Response(200, view(resource), headers=_resource_headers(resource))
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
                    return Response(200, view(resource), headers=_resource_headers(resource))
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

    # --- access policy enforcement (sandbox/access.py) -------------------------------------

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
                    return Response(200, resource, headers=_resource_headers(resource))
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
        headers = _resource_headers(resource)
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
                    if limit is not None and writes >= limit:
                        raise FhirError(500, outcome("exception", "Job died mid-propagation"))
                    writes += 1
                    job_meter.charge_waiting(points)

                n = self.repo.set_accounts(
                    rtype, rid, accounts, caller, propagate=True, cap=cap, charge=charge
                )
                return {
                    "resourceType": "Parameters",
                    "parameter": [{"name": "resourcesUpdated", "valueInteger": n}],
                }

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
        return Response(status, view(job), headers=_resource_headers(job))

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
