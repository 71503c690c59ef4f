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
from urllib.parse import urlsplit

import httpx

from reconciler.errors import UsageError
from reconciler.logs import get_logger
from reconciler.medplum.client import MedplumClient

log = get_logger("reconciler.connect")

DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_server(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise UsageError(f"not a server URL (want http(s)://host[:port]/): {url!r}")
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return f"{parts.scheme}://{parts.hostname.lower()}:{port}{path}"


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    """How to reach the server: what every command that connects is given."""

    server: str | None = None
    timeout: float = 30.0
    sandbox_data: str | None = None


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


@contextmanager
def connect(options: ServerOptions) -> Iterator[Connection]:
    url = options.server or os.environ.get("MEDPLUM_BASE_URL") or None
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
            client.close()
        return
    from reconciler.sandbox.server import DEFAULT_DATA, start_embedded

    data = options.sandbox_data or DEFAULT_DATA
    sandbox = start_embedded(data)
    log.info("no server configured: using the embedded sandbox", url=sandbox.url, data=data)
    client = build_client(
        sandbox.url, sandbox.client_id, sandbox.client_secret, timeout=options.timeout
    )
    try:
        yield Connection(client, sandbox.identity, f"embedded sandbox ({data})")
    finally:
        client.close()
        sandbox.stop()
