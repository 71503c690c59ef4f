"""OAuth2 client credentials as an `httpx.Auth` flow (medplum-api.md, "Base URLs and auth").

The token is fetched before the first request, renewed ahead of its expiry, and fetched once
more when a request answers 401 (an expired or revoked token). Token requests are retried on
connection errors and 429/5xx like any read. The secret and the token never reach a message.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import httpx

from reconciler import scrub
from reconciler.medplum.errors import AuthError, TransportError, outcome_text

RETRY_STATUSES = frozenset({429, 502, 503, 504})
TOKEN_MARGIN_S = 60.0  # renew this long before expiry, or at half the lifetime if shorter


class ClientCredentialsAuth(httpx.Auth):
    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        post: Callable[..., httpx.Response],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_retries: int = 6,
        backoff_base_s: float = 0.1,
        backoff_cap_s: float = 10.0,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self._post = post
        self._clock = clock
        self._sleep = sleep
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._lock = threading.Lock()
        scrub.register(client_secret)
        self._token: str | None = None
        self._expires = 0.0
        self.fetched = 0  # tokens fetched so far (tests and the benchmark read it)

    def __repr__(self) -> str:  # never show the secret
        return f"ClientCredentialsAuth({self.token_url!r}, client_id={self.client_id!r})"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never be printed: the secret and the current token."""
        return tuple(v for v in (self._client_secret, self._token) if v)

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            # Expired or revoked: one fresh token, one more try; a second 401 is the answer.
            request.headers["Authorization"] = f"Bearer {self.token(stale=token)}"
            yield request

    def token(self, *, stale: str | None = None) -> str:
        """The current token; a new one when it is about to expire or equals `stale`."""
        with self._lock:
            if self._token is None or self._token == stale or self._clock() >= self._expires:
                self._token = None
                self._fetch()
            assert self._token is not None
            return self._token

    def _fetch(self) -> None:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._client_secret,
        }
        attempt = 0
        while True:
            try:
                response = self._post(
                    self.token_url, data=form, headers={"Accept": "application/json"}
                )
            except httpx.TransportError as exc:
                if attempt < self.max_retries:
                    attempt += 1
                    self._sleep(self._backoff(attempt))
                    continue
                name = type(exc).__name__
                raise TransportError(
                    f"could not reach {self.token_url}: {name}: {exc}" if str(exc) else name
                ) from None
            if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                attempt += 1
                self._sleep(self._backoff(attempt))
                continue
            break
        body = _json_or_none(response)
        if response.status_code == 404:
            raise AuthError(
                404,
                "POST",
                self.token_url,
                "no token endpoint there: not a Medplum server, or the wrong URL (the base "
                "URL is the server's root, e.g. https://api.medplum.com/)",
            )
        if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            reason = _reason(response, body)
            raise AuthError(
                response.status_code,
                "POST",
                self.token_url,
                f"client credentials for {self.client_id!r} were refused: {reason}",
            )
        self._token = str(body["access_token"])
        scrub.register(self._token)
        ttl = _lifetime(body.get("expires_in"))
        self._expires = self._clock() + max(ttl - TOKEN_MARGIN_S, ttl / 2)
        self.fetched += 1

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)


def _lifetime(expires_in: Any) -> float:
    if expires_in is None:
        return 3600.0
    try:
        seconds = float(expires_in)
    except (TypeError, ValueError):
        raise TransportError(
            f"the token endpoint answered an expires_in that is not a number: {expires_in!r:.40}"
        ) from None
    # 0 or less would mean a token request before every request; keep it a minute and let a
    # 401 (an expired token) fetch the next one.
    return seconds if seconds > 0 else 60.0


def _reason(response: httpx.Response, body: Any) -> str:
    reason = ""
    if isinstance(body, dict):
        reason = str(body.get("error_description") or body.get("error") or "")
    return reason or outcome_text(body) or response.reason_phrase


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
