"""The sandbox's request and response records, shared by the HTTP server, the in-process
transport, the application and its operations (so none of them imports another to get them)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

FHIR_JSON = "application/fhir+json; charset=utf-8"


@dataclass
class Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    base: str  # scheme://host:port

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = FHIR_JSON

    def encode(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode("utf-8")
        return json.dumps(self.body, separators=(",", ":")).encode("utf-8")
