"""Which server a command talks to: --server, else $MEDPLUM_BASE_URL, else the embedded sandbox.

Also the server identity a saved plan records: `scheme://host:port/path/` (lowercase host,
default port explicit) for a real server, `sandbox:<absolute data path>` for the embedded one,
whose port changes from run to run (design section 4).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

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


@dataclass
class Connection:
    client: MedplumClient
    identity: str
    url: str
    embedded: bool


def connect_options(options: Any) -> AbstractContextManager[Connection]:
    """`connect` with the common command-line options (--server, --timeout, --sandbox-data)."""
    return connect(
        options.server,
        timeout=getattr(options, "timeout", 30.0),
        sandbox_data=getattr(options, "sandbox_data", None),
    )


@contextmanager
def connect(
    server: str | None,
    *,
    parallelism: int = 10,
    timeout: float = 30.0,
    sandbox_data: str | None = None,
) -> Iterator[Connection]:
    url = server or os.environ.get("MEDPLUM_BASE_URL") or None
    if url:
        identity = normalize_server(url)
        if bool(os.environ.get("MEDPLUM_CLIENT_ID")) != bool(
            os.environ.get("MEDPLUM_CLIENT_SECRET")
        ):
            raise UsageError("set both MEDPLUM_CLIENT_ID and MEDPLUM_CLIENT_SECRET, or neither")
        client = MedplumClient(
            url,
            os.environ.get("MEDPLUM_CLIENT_ID") or None,
            os.environ.get("MEDPLUM_CLIENT_SECRET") or None,
            timeout=timeout,
        )
        try:
            yield Connection(client, identity, client.base_url, embedded=False)
        finally:
            client.close()
        return
    from reconciler.sandbox.server import DEFAULT_DATA, start_embedded

    data = sandbox_data or DEFAULT_DATA
    sandbox = start_embedded(data)
    log.info(
        "no server configured: using the embedded sandbox",
        url=sandbox.url,
        data=data,
    )
    client = MedplumClient(sandbox.url, sandbox.client_id, sandbox.client_secret, timeout=timeout)
    try:
        yield Connection(client, sandbox.identity, client.base_url, embedded=True)
    finally:
        client.close()
        sandbox.stop()
