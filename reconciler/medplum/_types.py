"""Types shared by the client's modules, so `reads` and `operations` never import `client`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
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

    @property
    def server_time(self) -> datetime | None:
        """The server's clock as the answer's `Date` header shows it (1-second resolution)."""
        value = self.headers.get("Date")
        try:
            moment = parsedate_to_datetime(value) if value else None
        except (TypeError, ValueError):
            return None
        if moment is not None and moment.tzinfo is None:  # "-0000" parses without a zone
            moment = moment.replace(tzinfo=UTC)
        return moment


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
        cost: int | None = None,
        reserved: bool = False,
    ) -> Result: ...

    def search(self, resource_type: str, params: Params | None = None) -> dict[str, Any]: ...
