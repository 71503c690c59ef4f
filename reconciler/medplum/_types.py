"""Types shared by the client's modules, so `reads` and `operations` never import `client`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

Params = Mapping[str, str] | Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Result:
    """One response: status, parsed body, headers, and whether it took retries to get."""

    status: int
    body: Any
    headers: httpx.Headers
    retried: bool = False


class Requester(Protocol):
    """What the read and operation helpers (the client's mixins) need from the client: one
    request path. The mixins subclass it, so they type-check without importing the client."""

    fhir_base: str
    sleep: Callable[[float], None]

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
    ) -> Result: ...

    def search(self, resource_type: str, params: Params | None = None) -> dict[str, Any]: ...
