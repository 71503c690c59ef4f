"""The sandbox's request handling, independent of the HTTP server so batches can re-enter it:
who is calling (tokens, memberships, on-behalf-of), `/auth/me`, injected faults and quota
headers. The FHIR routes are in sandbox/routes.py, access enforcement in sandbox/enforce.py."""

from __future__ import annotations

import json
import random
import secrets
import threading
import uuid
from collections import Counter
from email.utils import formatdate
from typing import Any

from reconciler.sandbox.access import (
    PROJECT_ID,
    PROJECT_NAME,
    Member,
    PolicyJsonError,
    member_of,
    membership_id_for,
    policy_resource,
)
from reconciler.sandbox.auth import TokenIssuer
from reconciler.sandbox.clock import Clock, SystemClock
from reconciler.sandbox.config import DEFAULT_CLIENTS, READ_ONLY_POLICY, Config
from reconciler.sandbox.fhir import Caller, Repository
from reconciler.sandbox.jobs import JobRunner
from reconciler.sandbox.messages import Request, Response
from reconciler.sandbox.outcomes import (
    FhirError,
    bad_request,
    forbidden,
    not_found,
    outcome,
    throttled,
)
from reconciler.sandbox.quota import QuotaMeter
from reconciler.sandbox.routes import FHIR_PREFIX, Routes
from reconciler.sandbox.store import Resource, Store

__all__ = ["DEFAULT_CLIENTS", "App", "Config"]


class App(Routes):
    def __init__(self, config: Config, store: Store, *, clock: Clock | None = None) -> None:
        self.config = config
        self.store = store
        self.clock = clock or SystemClock()
        self.repo = Repository(store)
        self.rng = random.Random(config.seed)
        self.quota = QuotaMeter(
            config.fhir_quota,
            config.quota_window_s,
            clock=self.clock,
            rng=self.rng,
            client_points=config.client_quotas,
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
        for the admin role, a read-only policy for the reader role, no `admin` field
        otherwise), created once and then left alone."""
        with self.store.transaction() as conn:
            roles = {role for _, role in self.config.clients.values()}
            if "reader" in roles and self.store.get("AccessPolicy", READ_ONLY_POLICY) is None:
                self.store.put(
                    conn,
                    {"resourceType": "AccessPolicy", "id": READ_ONLY_POLICY, "meta": {},
                     "name": "read-only (sandbox reader role)",
                     "resource": [{"resourceType": "*", "readonly": True}]},
                )  # fmt: skip
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
                    elif role == "reader":
                        membership["accessPolicy"] = {
                            "reference": f"AccessPolicy/{READ_ONLY_POLICY}"
                        }
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
        caller = Caller(client_id, self._member(membership))
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
        return Caller(client_id, self._member(target))

    def _member(self, membership: Resource) -> Member:
        try:
            return member_of(self.store, membership)
        except PolicyJsonError as exc:  # a parameter broke the policy's JSON: nobody gets in
            raise bad_request(str(exc)) from None

    def _create_client(self, req: Request) -> Response:
        """`POST /admin/projects/{id}/client` (Medplum's admin/client.ts): a ClientApplication
        with a new secret and its ProjectMembership (user = profile = the client). Admins only."""
        caller = self._caller(req)
        if not caller.admin:
            raise forbidden()
        body = _json_body(req.body)
        if not isinstance(body, dict) or not body.get("name"):
            raise bad_request("Client name is required")
        client_id = str(uuid.uuid4())
        client = {"resourceType": "ClientApplication", "id": client_id, "name": str(body["name"]),
                  "secret": secrets.token_hex(32), "meta": {}}  # fmt: skip
        if body.get("description"):
            client["description"] = str(body["description"])
        ref = {"reference": f"ClientApplication/{client_id}", "display": client["name"]}
        membership: Resource = {
            "resourceType": "ProjectMembership",
            "id": str(uuid.uuid4()),
            "project": {"reference": f"Project/{PROJECT_ID}", "display": PROJECT_NAME},
            "user": ref,
            "profile": dict(ref),
            "meta": {},
        }
        if isinstance(body.get("accessPolicy"), dict):
            membership["accessPolicy"] = body["accessPolicy"]
        with self.store.transaction() as conn:
            self.store.put(conn, client)
            self.store.put(conn, membership)
        return Response(201, client, content_type="application/json")

    def _token(self, req: Request) -> Response:
        """Client credentials; like Medplum, the member's policy is built at sign-in, so one
        a parameter made unreadable JSON refuses the token (400)."""
        status, body = self.auth.issue(req.body)
        if status == 200:
            client_id = str(body["profile"]["reference"]).split("/", 1)[1]
            membership = self._membership_where("user", f"ClientApplication/{client_id}")
            try:
                if membership is not None:
                    member_of(self.store, membership)
            except PolicyJsonError as exc:
                self.auth.revoke(str(body["access_token"]))
                status, body = 400, {"error": "invalid_request", "error_description": str(exc)}
        return Response(status, body, content_type="application/json")

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
        response.headers.setdefault("Date", formatdate(usegmt=True))  # the server's clock
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
                return self._token(req)
            if path.startswith("/sandbox/stats"):
                return self._stats(req)
            if path == "/auth/me" and req.method == "GET":
                return self._auth_me(req)
            if path == f"/admin/projects/{PROJECT_ID}/client" and req.method == "POST":
                return self._create_client(req)
            if path == FHIR_PREFIX or path.startswith(FHIR_PREFIX + "/"):
                return self._fhir(req, path[len(FHIR_PREFIX) :].strip("/"))
            raise not_found()
        except FhirError as exc:
            return Response(exc.status, exc.outcome, headers=dict(exc.headers))

    def _stats(self, req: Request) -> Response:
        if req.method == "POST":
            with self._lock:
                self.stats.clear()
            with self.quota._lock:
                self.quota.points_charged = 0
        with self._lock:
            body: dict[str, Any] = dict(self.stats)
        body["throttled"] = self.quota.throttled_count
        body["points"] = self.quota.points_charged
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


def _json_body(body: bytes) -> object:
    try:
        return json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise bad_request("Invalid JSON body") from None
