"""An `httpx` transport onto the sandbox's `App`: the client's real code path (auth, retries,
pacing, paging) with no socket and no process. Used by tests and by the Python API
(`MedplumClient(url, id, secret, http=httpx.Client(transport=SandboxTransport(app)))`)."""

from __future__ import annotations

from urllib.parse import parse_qsl

import httpx

from reconciler.sandbox.app import App
from reconciler.sandbox.messages import Request


class SandboxTransport(httpx.BaseTransport):
    def __init__(self, app: App) -> None:
        self.app = app

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        body = request.read()
        response = self.app.handle(
            Request(
                method=request.method,
                path=url.path,
                query=parse_qsl(url.query.decode("ascii"), keep_blank_values=True),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                base=f"{url.scheme}://{url.netloc.decode('ascii')}",
            )
        )
        headers = {"Content-Type": response.content_type, **response.headers}
        return httpx.Response(
            response.status, headers=headers, content=response.encode(), request=request
        )
