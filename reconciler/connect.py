"""Which server a command talks to: --server, else $MEDPLUM_BASE_URL, else the embedded sandbox.

Also the server identity a saved plan records: `scheme://host:port/path/` (lowercase host,
default port explicit) for a real server, `sandbox:<absolute data path>` for the embedded one,
whose port changes from run to run (design section 4).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from reconciler.errors import PreflightError, UsageError
from reconciler.logs import get_logger
from reconciler.medplum.client import MedplumClient
from reconciler.medplum.errors import HTTPStatusError

log = get_logger("reconciler.connect")

DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_server(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise UsageError(f"not a server URL (want http(s)://host[:port]/): {url!r}")
    if parts.path.rstrip("/").lower().endswith("/fhir/r4"):
        raise UsageError(
            f"{url!r} is the server's FHIR base; give its base URL "
            f"({parts.scheme}://{parts.netloc}{parts.path.rstrip('/')[: -len('/fhir/R4')]}/): "
            "the tool adds /fhir/R4/ and /oauth2/token itself"
        )
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return f"{parts.scheme}://{parts.hostname.lower()}:{port}{path}"


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    """How to reach the server: what every command that connects is given."""

    server: str | None = None
    timeout: float = 30.0
    sandbox_data: str | None = None
    sandbox: bool = False  # --sandbox: the embedded sandbox, asked for explicitly


@dataclass(frozen=True)
class Connection:
    client: MedplumClient
    identity: str  # what a saved plan records and compares
    target: str  # what people are shown: the server and client, or the sandbox's data file


def build_client(
    url: str,
    client_id: str | None,
    client_secret: str | None,
    *,
    timeout: float = 30.0,
    transport: httpx.BaseTransport | None = None,
) -> MedplumClient:
    """The one place a command's client is made; tests pass an in-process `transport`."""
    http = None
    if transport is not None:
        http = httpx.Client(transport=transport, timeout=timeout)
    return MedplumClient(url, client_id, client_secret, http=http, timeout=timeout)


def _refuse_silent_sandbox(options: ServerOptions, url: str | None) -> None:
    """The embedded sandbox only when nothing points at a real server (design section 10): a
    CI job whose MEDPLUM_BASE_URL secret is missing must fail, not plan an empty sandbox."""
    if options.sandbox:
        if url:
            raise UsageError(
                "--sandbox asks for the embedded sandbox, but a server is configured "
                "(--server or MEDPLUM_BASE_URL); give one or the other"
            )
        return
    if url:
        return
    if os.environ.get("MEDPLUM_CLIENT_ID") or os.environ.get("MEDPLUM_CLIENT_SECRET"):
        raise UsageError(
            "MEDPLUM_CLIENT_ID/MEDPLUM_CLIENT_SECRET are set but no server is: set "
            "MEDPLUM_BASE_URL (or --server URL); --sandbox uses the local sandbox on purpose"
        )
    if os.environ.get("CI", "").lower() == "true":
        raise UsageError(
            "no server configured and CI=true: set MEDPLUM_BASE_URL (or --server URL); "
            "--sandbox uses the local sandbox on purpose"
        )


@contextmanager
def connect(options: ServerOptions) -> Iterator[Connection]:
    url = options.server or os.environ.get("MEDPLUM_BASE_URL") or None
    _refuse_silent_sandbox(options, url)
    if url:
        identity = normalize_server(url)
        client_id = os.environ.get("MEDPLUM_CLIENT_ID") or None
        client_secret = os.environ.get("MEDPLUM_CLIENT_SECRET") or None
        if bool(client_id) != bool(client_secret):
            raise UsageError("set both MEDPLUM_CLIENT_ID and MEDPLUM_CLIENT_SECRET, or neither")
        client = build_client(url, client_id, client_secret, timeout=options.timeout)
        shown = f"client {client_id[:8]}…" if client_id else "no client credentials"
        try:
            yield Connection(client, identity, f"{identity} ({shown})")
        finally:
            _close(client)
        return
    from reconciler.sandbox.server import DEFAULT_DATA, start_embedded

    data = options.sandbox_data or DEFAULT_DATA
    if data != ":memory:" and not Path(data).exists():
        # Run from another directory, a new empty sandbox would surface later as "account
        # matches 0 resources": say so now, with the path.
        log.warning(
            "creating a new, empty sandbox data file (reconciler sandbox seed fills it)",
            path=str(Path(data).resolve()),
        )
    sandbox = start_embedded(data)
    # Every run: at debug only (-v). The first run, which creates the data file, says where.
    log.debug("no server configured: using the embedded sandbox", data=data)
    client = build_client(
        sandbox.url, sandbox.client_id, sandbox.client_secret, timeout=options.timeout
    )
    client.shown_origin = "embedded-sandbox:/"
    try:
        yield Connection(client, sandbox.identity, f"embedded sandbox ({data})")
    finally:
        _close(client)
        sandbox.stop()


def _close(client: MedplumClient) -> None:
    # What a command cost the server, for `-v` and for benchmarks on servers without counters.
    log.debug("requests sent", requests=client.requests_sent)
    client.close()


@dataclass(frozen=True)
class WhoAmI:
    """What the tool keeps of `/auth/me`. The body itself is never kept, logged or printed:
    for a ClientApplication it holds the client's own secret (medplum-api.md, "Who am I")."""

    membership: str
    admin: bool
    profile: str | None = None  # what the server stamps as meta.author on our writes


def who_am_i(client: MedplumClient) -> WhoAmI | None:
    """`GET {server}/auth/me`; None when the server has no such endpoint (404)."""
    try:
        body = client.request("GET", client.base_url + "auth/me").body
    except HTTPStatusError as exc:
        if exc.status == 404:
            return None
        raise
    membership = body.get("membership") if isinstance(body, dict) else None
    if not isinstance(membership, dict):
        return None
    profile = membership.get("profile")
    ref = profile.get("reference") if isinstance(profile, dict) else None
    return WhoAmI(
        f"ProjectMembership/{membership.get('id')}",
        membership.get("admin") is True,
        ref if isinstance(ref, str) and ref else None,
    )


def preflight(conn: Connection, *, need_admin: str | None = None) -> WhoAmI | None:
    """Before any planning work: the credentials work, and for `need_admin` (the action, e.g.
    "apply") the client is a project admin — else one line, and nothing read or written."""
    me = who_am_i(conn.client)
    if me is None:
        log.warning("could not check the client's role: the server has no /auth/me")
        return None
    if need_admin and not me.admin:
        raise PreflightError(
            f"{need_admin} needs a project admin: the client {conn.client.client_id!r} "
            f"({me.membership}) is not an admin of the project on {conn.target} "
            "($set-accounts and membership writes are for project admins only); nothing was "
            "read or written"
        )
    return me
