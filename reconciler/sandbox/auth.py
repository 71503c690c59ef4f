"""OAuth2 client credentials for the sandbox: `/oauth2/token` and bearer-token checks."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from reconciler.sandbox.outcomes import unauthorized


def _oauth_error(status: int, error: str, description: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": error, "error_description": description}


class TokenIssuer:
    def __init__(
        self,
        clients: dict[str, tuple[str, str]],
        ttl_s: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        stored_secret: Callable[[str], str | None] = lambda client_id: None,
    ) -> None:
        self.clients = clients  # id -> (secret, role)
        self.ttl_s = ttl_s
        self.clock = clock
        self.stored_secret = stored_secret  # ClientApplications created through the API/seed
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def issue(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """The token endpoint: (status, JSON body) with Medplum's OAuth error shapes."""
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "Invalid grant type")
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if not client_id or not secret:
            return _oauth_error(400, "invalid_request", "Missing client credentials")
        known = self.clients.get(client_id)
        expected = known[0] if known is not None else self.stored_secret(client_id)
        # Compared as bytes: a secret with non-ASCII characters is a wrong secret (401), never
        # an error (compare_digest refuses non-ASCII strings).
        if expected is None or not secrets.compare_digest(expected.encode(), secret.encode()):
            return _oauth_error(401, "invalid_client", "Invalid client")
        # A recognisable prefix lets the secret-leak tests look for tokens in any output.
        token = "sbx_" + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = (client_id, self.clock() + self.ttl_s)
        return 200, {
            "token_type": "Bearer",
            "expires_in": self.ttl_s,
            "scope": "openid",
            "access_token": token,
            "project": {"reference": "Project/sandbox"},
            "profile": {"reference": f"ClientApplication/{client_id}", "display": client_id},
        }

    def revoke(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)

    def client_of(self, authorization: str | None) -> str:
        """Which client sends `Authorization: Bearer …`; 401 when missing, unknown or expired."""
        auth = authorization or ""
        if not auth.lower().startswith("bearer "):
            raise unauthorized()
        token = auth[7:].strip()
        with self._lock:
            entry = self._tokens.get(token)
            if entry is None or entry[1] < self.clock():
                self._tokens.pop(token, None)
                raise unauthorized()
        return entry[0]
