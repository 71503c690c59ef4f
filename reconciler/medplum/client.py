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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from reconciler.logs import get_logger
from reconciler.medplum.accounts import get_resource_accounts
from reconciler.medplum.compartment import PATIENT_COMPARTMENT_TYPES
from reconciler.medplum.errors import (
    AuthError,
    HTTPStatusError,
    MedplumError,
    TransportError,
    outcome_text,
)
from reconciler.medplum.operations import OperationsMixin
from reconciler.medplum.ratelimit import Pacer, throttle_wait_s

log = get_logger("reconciler.medplum")

RETRY_STATUSES = {429, 502, 503, 504}
PAGE_SIZE = 1000
COMPARTMENT_BATCH = 100  # patients per system-level compartment search (URL stays < 16 KiB)
COUNT_BATCH = 250  # patients per counting request: ~13 KiB of URL, under Node's 16 KiB limit
TOKEN_MARGIN_S = 60.0


@dataclass(frozen=True)
class Result:
    """One response: status, parsed body, headers, and whether it took retries to get."""

    status: int
    body: Any
    headers: httpx.Headers
    retried: bool = False


class MedplumClient(OperationsMixin):
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
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise MedplumError(f"server URL must start with http:// or https://: {base_url!r}")
        self.base_url = base_url.rstrip("/") + "/"
        self.fhir_base = self.base_url + "fhir/R4/"
        self.client_id = client_id
        self._client_secret = client_secret
        self._own_http = http is None
        self.http = http or httpx.Client(
            timeout=timeout,
            verify=verify,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        self.max_retries = max_retries
        self.retry_budget_s = retry_budget_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.sleep = sleep
        self.pacer = pacer or Pacer(sleep=sleep)
        self._token: str | None = None
        self._token_expires = 0.0
        self._auth_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.requests_sent = 0
        self.retries = 0

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

    # --- auth ------------------------------------------------------------------------------

    def _access_token(self, *, force: bool = False) -> str | None:
        if not self.client_id:
            return None
        with self._auth_lock:
            if force or self._token is None or time.monotonic() >= self._token_expires:
                self._token = None
                self._fetch_token()
            return self._token

    def _fetch_token(self) -> None:
        url = self.base_url + "oauth2/token"
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id or "",
            "client_secret": self._client_secret or "",
        }
        attempt = 0
        while True:
            try:
                response = self.http.post(url, data=form, headers={"Accept": "application/json"})
            except httpx.TransportError as exc:
                if attempt < self.max_retries:
                    attempt += 1
                    self.sleep(self._backoff(attempt))
                    continue
                raise TransportError(f"could not reach {url}: {_describe(exc)}") from None
            if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                attempt += 1
                self.sleep(self._backoff(attempt))
                continue
            break
        body = _json_or_none(response)
        if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            reason = ""
            if isinstance(body, dict):
                reason = str(body.get("error_description") or body.get("error") or "")
            reason = reason or outcome_text(body) or response.reason_phrase
            raise AuthError(
                response.status_code,
                "POST",
                url,
                f"client credentials for {self.client_id!r} were refused: {reason}",
            )
        self._token = str(body["access_token"])
        expires_in = body.get("expires_in")
        ttl = 3600.0 if expires_in is None else float(expires_in)
        self._token_expires = time.monotonic() + max(ttl - TOKEN_MARGIN_S, ttl / 2)

    # --- the one request path --------------------------------------------------------------

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.fhir_base + path.lstrip("/")

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        ok: Iterable[int] = (),
        expect_json: bool = True,
    ) -> Result:
        """Send one FHIR request with auth, pacing and retries; raise on any non-2xx answer."""
        url = self.url(path)
        shown = _redact_url(url)
        query: list[tuple[str, Any]] = (
            list(params.items()) if isinstance(params, Mapping) else list(params or [])
        )
        send_headers = {"Accept": "application/fhir+json", "X-Medplum": "extended"}
        if json is not None:
            send_headers["Content-Type"] = "application/fhir+json"
        send_headers.update(headers or {})
        started = time.monotonic()
        attempt = 0
        refreshed = False
        retried = False
        while True:
            self.pacer.wait_turn()
            token = self._access_token()
            if token:
                send_headers["Authorization"] = f"Bearer {token}"
            with self._stats_lock:
                self.requests_sent += 1
            try:
                response = self.http.request(
                    method, url, params=query or None, json=json, data=data, headers=send_headers
                )
            except httpx.TransportError as exc:
                wait = self._retry_wait(attempt, started, None)
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
            self.pacer.observe(response.headers.get("RateLimit"))
            status = response.status_code
            if status == 401 and token and not refreshed:
                refreshed = True
                self._access_token(force=True)
                continue
            if status in RETRY_STATUSES:
                body = _json_or_none(response)
                server_wait = _server_wait(response, body) if status == 429 else None
                wait = self._retry_wait(attempt, started, server_wait)
                if wait is not None:
                    if status == 429:
                        self.pacer.block_for(wait)
                    log.info(
                        "retrying", method=method, url=shown, status=status, wait_s=round(wait, 3)
                    )
                    attempt += 1
                    retried = True
                    with self._stats_lock:
                        self.retries += 1
                    self.sleep(wait)
                    continue
            return self._finish(method, shown, response, ok, expect_json, retried)

    def _retry_wait(self, attempt: int, started: float, server_wait: float | None) -> float | None:
        if attempt >= self.max_retries:
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
            return Result(status, body, response.headers, retried)
        if 300 <= status < 400:
            target = _redact_url(response.headers.get("Location", "?"))
            raise HTTPStatusError(status, method, shown, f"unexpected redirect to {target}")
        text = outcome_text(body) if expect_json else ""
        if not text:
            ctype = response.headers.get("Content-Type", "")
            text = response.reason_phrase or "error"
            if body is None and response.content:
                text += f" (non-FHIR body, {ctype or 'no content type'})"
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
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        return _bundle(self.request("GET", resource_type, params=params).body)

    def search_all(
        self,
        resource_type: str,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        *,
        page_size: int = PAGE_SIZE,
        sort_by_last_updated: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Every matching resource across pages, following `next` links as given."""
        query: list[tuple[str, Any]] = (
            list(params.items()) if isinstance(params, Mapping) else list(params or [])
        )
        if not any(k == "_count" for k, _ in query):
            query.append(("_count", str(page_size)))
        if sort_by_last_updated and not any(k == "_sort" for k, _ in query):
            query.append(("_sort", "_lastUpdated"))  # Medplum then pages by cursor
        bundle = self.search(resource_type, query)
        yield from self._pages(bundle)

    def _pages(self, bundle: dict[str, Any]) -> Iterator[dict[str, Any]]:
        while True:
            for entry in bundle.get("entry") or []:
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(resource, dict):
                    yield resource
            next_url = _link(bundle, "next")
            if not next_url:
                return
            bundle = _bundle(self.request("GET", next_url).body)

    def post_search(self, resource_type: str, form: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        """POST `{type}/_search` with a form body (long lists do not fit a URL)."""
        bundle = _bundle(self.request("POST", f"{resource_type}/_search", data=form).body)
        yield from self._pages(bundle)

    def iter_many(
        self,
        resource_type: str,
        ids: Iterable[str],
        *,
        elements: Sequence[str] | None = None,
        batch_size: int = PAGE_SIZE,
    ) -> Iterator[dict[str, Any]]:
        """Read any number of resources by id, `batch_size` ids per request, streaming (a plan
        over 100,000 patients must not hold every resource at once); missing ids are absent."""
        for chunk in _chunks(list(dict.fromkeys(ids)), batch_size):
            form = {"_id": ",".join(chunk), "_count": str(PAGE_SIZE)}
            if elements:
                form["_elements"] = ",".join(elements)
            yield from self.post_search(resource_type, form)

    def read_many(
        self,
        resource_type: str,
        ids: Iterable[str],
        *,
        elements: Sequence[str] | None = None,
        batch_size: int = PAGE_SIZE,
    ) -> list[dict[str, Any]]:
        """Read any number of resources by id (batched); missing ids are absent."""
        return list(self.iter_many(resource_type, ids, elements=elements, batch_size=batch_size))

    def search_by_identifiers(
        self,
        resource_type: str,
        identifiers: Iterable[str],
        *,
        elements: Sequence[str] | None = None,
        batch_size: int = PAGE_SIZE,
    ) -> dict[str, list[dict[str, Any]]]:
        """Map each `system|value` to the resources carrying it (comma lists, batched)."""
        wanted = list(dict.fromkeys(identifiers))
        matches: dict[str, list[dict[str, Any]]] = {token: [] for token in wanted}
        for chunk in _chunks(wanted, batch_size):
            form = {"identifier": ",".join(chunk), "_count": str(PAGE_SIZE)}
            if elements:  # matching needs the identifiers back
                form["_elements"] = ",".join(dict.fromkeys([*elements, "identifier"]))
            for resource in self.post_search(resource_type, form):
                for ident in resource.get("identifier") or []:
                    token = f"{ident.get('system') or ''}|{ident.get('value')}"
                    if token in matches and resource not in matches[token]:
                        matches[token].append(resource)
        return matches

    def read_compartments(
        self,
        patient_refs: Iterable[str],
        *,
        types: Sequence[str] = PATIENT_COMPARTMENT_TYPES,
        batch_size: int = COMPARTMENT_BATCH,
        elements: Sequence[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every resource in the compartments of many patients, `batch_size` patients a request:
        `GET {base}?_type=…&_compartment=Patient/a,Patient/b` (observed on Medplum 5.0.10)."""
        for chunk in _chunks(list(dict.fromkeys(patient_refs)), batch_size):
            params = [
                ("_type", ",".join(types)),
                ("_compartment", ",".join(chunk)),
                ("_count", str(PAGE_SIZE)),
            ]
            if elements:
                params.append(("_elements", ",".join(elements)))
            bundle = _bundle(self.request("GET", self.fhir_base, params=params).body)
            yield from self._pages(bundle)

    def count_compartments(
        self,
        patient_refs: Iterable[str],
        *,
        types: Sequence[str] = PATIENT_COMPARTMENT_TYPES,
        batch_size: int = COUNT_BATCH,
    ) -> int:
        """How many resources the compartments of these patients hold (`_summary=count`)."""
        total = 0
        for chunk in _chunks(list(dict.fromkeys(patient_refs)), batch_size):
            params = [
                ("_type", ",".join(types)),
                ("_compartment", ",".join(chunk)),
                ("_summary", "count"),
            ]
            bundle = _bundle(self.request("GET", self.fhir_base, params=params).body)
            total += int(bundle.get("total") or 0)
        return total

    def get_resource_accounts(self, resource: Mapping[str, Any]) -> list[str]:
        return get_resource_accounts(resource)


def _describe(exc: Exception) -> str:
    name = type(exc).__name__
    text = str(exc)
    return f"{name}: {text}" if text else name


def _redact_url(url: str) -> str:
    """Drop the query string: it can hold patient identifiers, which do not belong in errors."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else url.split("?")[0]


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


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


def _bundle(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        kind = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
        text = outcome_text(body)
        raise TransportError(
            f"expected a search Bundle, got {kind}" + (f": {text}" if text else "")
        )
    return body


def _link(bundle: Mapping[str, Any], relation: str) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == relation and link.get("url"):
            return str(link["url"])
    return None


def _with_accounts(resource: Mapping[str, Any], accounts: Sequence[str] | None) -> dict[str, Any]:
    body = dict(resource)
    if accounts is not None:
        meta = dict(body.get("meta") or {})
        meta["accounts"] = [{"reference": a} for a in accounts]
        meta.pop("account", None)
        body["meta"] = meta
    return body


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
