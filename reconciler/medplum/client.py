"""MedplumClient: auth, retries, pacing, paging and batched reads. Operations in operations.py.

Every request sends `X-Medplum: extended`. Reads are batched (POST `_search` form bodies, pages
of 1000); writes are retried only on 429/502/503/504 and connection errors, and a retried write
is reported as outcome-unknown so the caller verifies it. No secret or token is ever put in an
exception message or a log event.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from reconciler.logs import get_logger
from reconciler.medplum._types import Params, Result
from reconciler.medplum.auth import RETRY_STATUSES, ClientCredentialsAuth
from reconciler.medplum.costs import request_cost
from reconciler.medplum.errors import (
    AuthError,
    HTTPStatusError,
    MedplumError,
    TransportError,
    outcome_text,
)
from reconciler.medplum.operations import JobTimer, OperationsMixin
from reconciler.medplum.ratelimit import Pacer, throttle_wait_s
from reconciler.medplum.reads import ReadsMixin, _bundle

log = get_logger("reconciler.medplum")


class MedplumClient(ReadsMixin, OperationsMixin):
    def __init__(
        self,
        base_url: str,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        http: httpx.Client | None = None,
        timeout: float = 30.0,
        max_retries: int = 6,
        retry_budget_s: float = 300.0,
        backoff_base_s: float = 0.1,
        backoff_cap_s: float = 10.0,
        pacer: Pacer | None = None,
        sleep: Callable[[float], None] = time.sleep,
        verify: bool = True,
        max_response_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise MedplumError(f"server URL must start with http:// or https://: {base_url!r}")
        self.base_url = base_url.rstrip("/") + "/"
        self.fhir_base = self.base_url + "fhir/R4/"
        # How errors name this server's origin: set to "embedded-sandbox:" for the embedded
        # one, whose random loopback port means nothing to the user (reconciler/connect.py).
        self.shown_origin: str | None = None
        self.client_id = client_id
        self._own_http = http is None
        self.http = http or httpx.Client(
            timeout=timeout,
            verify=verify,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.max_retries = max_retries
        self.retry_budget_s = retry_budget_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.sleep = sleep
        self.pacer = pacer or Pacer(sleep=sleep)
        self.auth: ClientCredentialsAuth | None = None
        if client_id:
            self.auth = ClientCredentialsAuth(
                self.base_url + "oauth2/token",
                client_id,
                client_secret or "",
                post=self.http.post,
                sleep=sleep,
                max_retries=max_retries,
                backoff_base_s=backoff_base_s,
                backoff_cap_s=backoff_cap_s,
            )
        self._stats_lock = threading.Lock()
        self.requests_sent = 0
        self.throttled_answers = 0  # 429 and 503 answers seen
        self.job_timer = JobTimer()  # how long this server's async jobs take
        # The write gate (design section 11): run before every attempt of every write — retries
        # included — so a run that can no longer prove its authority (the apply lock) writes
        # nothing more. It raises to refuse. Reads and the lock's own writes pass ungated.
        self.gate: Callable[[], None] | None = None

    @classmethod
    def from_env(cls, **kwargs: Any) -> MedplumClient:
        base = os.environ.get("MEDPLUM_BASE_URL")
        if not base:
            raise MedplumError("MEDPLUM_BASE_URL is not set")
        return cls(
            base,
            os.environ.get("MEDPLUM_CLIENT_ID") or None,
            os.environ.get("MEDPLUM_CLIENT_SECRET") or None,
            **kwargs,
        )

    def __enter__(self) -> MedplumClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own_http:
            self.http.close()

    def __repr__(self) -> str:  # never show the secret
        return f"MedplumClient({self.base_url!r}, client_id={self.client_id!r})"

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values no output may hold: the client secret and the current token."""
        return self.auth.secrets if self.auth is not None else ()

    # --- the one request path --------------------------------------------------------------

    def _shown(self, url: str) -> str:
        return _shown_url(url, self.base_url, self.shown_origin)

    def url(self, path: str) -> str:
        """A path on the FHIR base; an absolute URL the server handed back (a `next` link, a
        job URL) keeps only its path and query, on the configured origin: the token never goes
        to another host. Servers behind a proxy answer with their own configured base
        (`http://localhost:8103/…` to a client that called `http://127.0.0.1:8103/`)."""
        if not path.startswith(("http://", "https://")):
            return self.fhir_base + path.lstrip("/")
        given = urlsplit(path)
        own = urlsplit(self.base_url)
        if (given.scheme, given.netloc) != (own.scheme, own.netloc):
            log.debug("following a returned URL on the configured origin", origin=given.netloc)
        return urlunsplit((own.scheme, own.netloc, given.path, given.query, ""))

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        ok: Iterable[int] = (),
        expect_json: bool = True,
        deadline_s: float | None = None,
        retries: int | None = None,
        gated: bool | None = None,
        cost: int | None = None,
        reserved: bool = False,
    ) -> Result:
        """Send one FHIR request with auth, pacing and retries; raise on any non-2xx answer.
        A write (`gated`: by default every method but GET; a search or a batch of reads says
        `gated=False`) passes the client's `gate` before every attempt, retries included: a
        write is never sent, nor re-sent, once the run's authority is gone.
        Each attempt has a total deadline (`timeout`, or `deadline_s` when shorter) covering
        connect, headers and the whole body, and a size cap: a server that drips its answer or
        sends an endless body gets a clean error, never a hang or a memory blow-up."""
        url = self.url(path)
        shown = self._shown(url)
        query: list[tuple[str, Any]] = (
            list(params.items()) if isinstance(params, Mapping) else list(params or [])
        )
        send_headers = {"Accept": "application/fhir+json", "X-Medplum": "extended"}
        if json is not None:
            send_headers["Content-Type"] = "application/fhir+json"
        send_headers.update(headers or {})
        started = time.monotonic()
        attempt = 0
        retried = False
        # What the quota will be charged (medplum/costs.py), for the pacer; `reserved`: the
        # caller reserved it already (a synchronous $set-accounts).
        if cost is None:
            cost = request_cost(method, url, json) if url.startswith(self.fhir_base) else 0
        while True:
            self.pacer.admit(cost, reserved=reserved)
            if self.gate is not None and (method != "GET" if gated is None else gated):
                self.gate()
            with self._stats_lock:
                self.requests_sent += 1
            try:
                try:
                    response = self._send_bounded(
                        self.http.build_request(
                            method, url, params=query or None, json=json, data=data,
                            headers=send_headers,
                        ),
                        shown,
                        min(self.timeout, deadline_s) if deadline_s is not None else self.timeout,
                    )  # fmt: skip
                except BaseException:  # no answer: its points are no longer in flight
                    self.pacer.forget(cost, reserved=reserved)
                    raise
            except httpx.TransportError as exc:
                wait = self._retry_wait(attempt, started, None, retries)
                if wait is None:
                    raise TransportError(
                        f"{method} {shown} failed after {attempt + 1} attempts: {_describe(exc)}"
                    ) from None
                log.warning(
                    "retrying",
                    method=method,
                    url=shown,
                    reason=_describe(exc),
                    wait_s=round(wait, 3),
                )
                attempt += 1
                retried = True
                self.sleep(wait)
                continue
            self.pacer.observe(response.headers.get("RateLimit"), cost=cost, reserved=reserved)
            status = response.status_code
            if status in (429, 503):
                with self._stats_lock:
                    self.throttled_answers += 1  # what adaptive concurrency backs off on
            if status in RETRY_STATUSES:
                body = _json_or_none(response)
                server_wait = _server_wait(response, body) if status == 429 else None
                wait = self._retry_wait(attempt, started, server_wait, retries)
                if wait is not None:
                    if status == 429:
                        self.pacer.block_for(wait)
                    log.info(
                        "retrying", method=method, url=shown, status=status, wait_s=round(wait, 3)
                    )
                    attempt += 1
                    retried = True
                    self.sleep(wait)
                    continue
            return self._finish(method, shown, response, ok, expect_json, retried)

    def _send_bounded(self, request: httpx.Request, shown: str, limit_s: float) -> httpx.Response:
        deadline = time.monotonic() + limit_s
        response = self.http.send(request, auth=self.auth or httpx.USE_CLIENT_DEFAULT, stream=True)
        try:
            body = bytearray()
            try:
                chunks: Iterable[bytes] = [response.content]  # answered in memory already
            except httpx.ResponseNotRead:
                chunks = response.iter_bytes()  # decoded; the cap bounds what we hold
            for chunk in chunks:
                body += chunk
                if len(body) > self.max_response_bytes:
                    raise TransportError(
                        f"{request.method} {shown}: the answer is larger than "
                        f"{self.max_response_bytes // (1024 * 1024)} MB; stopped reading it"
                    )
                if time.monotonic() > deadline:
                    raise TransportError(
                        f"{request.method} {shown}: the answer took longer than {limit_s:g} s "
                        "(--timeout covers the whole answer); stopped reading it"
                    )
        finally:
            response.close()
        headers = [(k, v) for k, v in response.headers.multi_items() if k != "content-encoding"]
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=bytes(body),
            request=request,
            extensions={"reason_phrase": response.extensions.get("reason_phrase", b"")},
        )

    def _retry_wait(
        self, attempt: int, started: float, server_wait: float | None, retries: int | None
    ) -> float | None:
        if attempt >= (self.max_retries if retries is None else retries):
            return None
        wait = self._backoff(attempt + 1)
        if server_wait is not None:
            wait = server_wait + random.uniform(0, 0.05)
        if time.monotonic() - started + wait > self.retry_budget_s:
            return None
        return wait

    def _finish(
        self,
        method: str,
        shown: str,
        response: httpx.Response,
        ok: Iterable[int],
        expect_json: bool,
        retried: bool,
    ) -> Result:
        status = response.status_code
        body: Any = _json_or_none(response) if expect_json else response.text
        if 200 <= status < 300 or status in ok:
            if expect_json and body is None and response.content.strip():
                ctype = response.headers.get("Content-Type", "?")
                raise TransportError(
                    f"{method} {shown} answered {status} with a body that is not JSON ({ctype})"
                )
            if _is_error_outcome(body):
                # A success status around an error outcome is a failure, never a success: the
                # write (or read) did not do what was asked.
                raise HTTPStatusError(
                    status, method, shown, f"an error, though the status says success: "
                    f"{outcome_text(body) or 'error'}", body,
                )  # fmt: skip
            return Result(status, body, response.headers, retried)
        if 300 <= status < 400:
            target = self._shown(response.headers.get("Location", "?"))
            raise HTTPStatusError(status, method, shown, f"unexpected redirect to {target}")
        text = outcome_text(body) if expect_json else ""
        if not text:
            ctype = response.headers.get("Content-Type", "")
            text = response.reason_phrase or "error"
            if body is None and response.content:
                text += f" (non-FHIR body, {ctype or 'no content type'})"
        if status == 401 and not self.client_id:
            text += " (no client credentials: set MEDPLUM_CLIENT_ID and MEDPLUM_CLIENT_SECRET)"
        error_cls = AuthError if status == 401 else HTTPStatusError
        raise error_cls(status, method, shown, text, body if isinstance(body, dict) else None)

    # --- resources -------------------------------------------------------------------------

    def read_resource(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        return _resource(self.request("GET", f"{resource_type}/{resource_id}").body)

    def create_resource(
        self,
        resource: Mapping[str, Any],
        *,
        accounts: Sequence[str] | None = None,
        if_none_exist: str | None = None,
    ) -> dict[str, Any]:
        body = _with_accounts(resource, accounts)
        headers = {"If-None-Exist": if_none_exist} if if_none_exist else None
        return _resource(
            self.request("POST", str(body["resourceType"]), json=body, headers=headers).body
        )

    def update_resource(
        self,
        resource: Mapping[str, Any],
        *,
        accounts: Sequence[str] | None = None,
        if_match: str | None = None,
    ) -> dict[str, Any]:
        body = _with_accounts(resource, accounts)
        headers = {"If-Match": f'W/"{if_match}"'} if if_match else None
        path = f"{body['resourceType']}/{body['id']}"
        return _resource(self.request("PUT", path, json=body, headers=headers).body)

    def delete_resource(self, resource_type: str, resource_id: str) -> None:
        self.request("DELETE", f"{resource_type}/{resource_id}")

    def search(
        self,
        resource_type: str,
        params: Params | None = None,
    ) -> dict[str, Any]:
        return _bundle(self.request("GET", resource_type, params=params).body)


def _describe(exc: Exception) -> str:
    name = type(exc).__name__
    text = str(exc)
    return f"{name}: {text}" if text else name


def _shown_url(url: str, base: str, origin: str | None) -> str:
    shown = _redact_url(url)
    if origin is not None and shown.startswith(base):
        return origin + shown[len(base) :]
    return shown


def _redact_url(url: str) -> str:
    """Drop the query string: it can hold patient identifiers, which do not belong in errors."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else url.split("?")[0]


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, RecursionError):  # not JSON, or nested deeper than Python parses
        return None


def _is_error_outcome(body: Any) -> bool:
    """An OperationOutcome with an `error` or `fatal` issue (an `information` one, like the
    202 of an async job or a delete's "All OK", is not)."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return False
    issues = body.get("issue") or []
    return any(isinstance(i, dict) and i.get("severity") in ("error", "fatal") for i in issues)


def _server_wait(response: httpx.Response, body: Any) -> float | None:
    """How long a 429 asks us to wait: Retry-After, else _msBeforeNext, else RateLimit's t."""
    retry_after = response.headers.get("Retry-After")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass
    wait = throttle_wait_s(body)
    if wait is not None:
        return wait
    from reconciler.medplum.ratelimit import parse_ratelimit

    limits = parse_ratelimit(response.headers.get("RateLimit"))
    exhausted = [lim.reset_s for lim in limits.values() if lim.remaining <= 0]
    return max(exhausted) if exhausted else None


def _resource(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or "resourceType" not in body:
        raise TransportError("the server answered without a FHIR resource")
    return body


def _with_accounts(resource: Mapping[str, Any], accounts: Sequence[str] | None) -> dict[str, Any]:
    body = dict(resource)
    if accounts is not None:
        meta = dict(body.get("meta") or {})
        meta["accounts"] = [{"reference": a} for a in accounts]
        meta.pop("account", None)
        body["meta"] = meta
    return body
