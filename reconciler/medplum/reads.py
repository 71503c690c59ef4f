"""Paged and batched reads: every page of a search, any number of ids or identifiers, and the
compartments of many patients at once — never one request per resource (design section 5)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode

from reconciler.medplum._types import Requester
from reconciler.medplum.compartment import (
    PATIENT_COMPARTMENT_TYPES,
    PATIENT_LINK_FIELDS,
    patients_of,
)
from reconciler.medplum.errors import HTTPStatusError, TransportError, outcome_text

T = TypeVar("T")

PAGE_SIZE = 1000
ON_BEHALF_OF = "X-Medplum-On-Behalf-Of"
COMPARTMENT_BATCH = 100  # patients per system-level compartment search (URL stays < 16 KiB)
HISTORY_BATCH = 50  # instance histories per batch Bundle (each up to 100 versions)
COUNT_BATCH = 100  # `_summary=count` searches per batch Bundle


class ReadsMixin(Requester):
    """Relies on MedplumClient.request/search; kept apart to keep each module small."""

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
        seen: set[str] = set()
        while True:
            for entry in bundle.get("entry") or []:
                resource = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(resource, dict):
                    yield resource
            next_url = _link(bundle, "next")
            if not next_url:
                return
            if next_url in seen:  # a server that links a page to itself would loop forever
                raise TransportError("the server's next link repeats a page already read")
            seen.add(next_url)
            bundle = _bundle(self.request("GET", next_url).body)

    def count(
        self,
        resource_type: str,
        params: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        *,
        on_behalf_of: str | None = None,
    ) -> int:
        """`Type?…&_summary=count` — one type at a time: Medplum 5.0.10 miscounts multi-type
        system-level counts (medplum-api.md, "Counting"). `on_behalf_of` (a membership
        reference; admin clients only) counts what that member can see."""
        query = list(params.items()) if isinstance(params, Mapping) else list(params)
        headers = {ON_BEHALF_OF: on_behalf_of} if on_behalf_of else None
        body = self.request(
            "GET", resource_type, params=[*query, ("_summary", "count")], headers=headers
        ).body
        return int(_bundle(body).get("total") or 0)

    def count_many(
        self,
        queries: Sequence[tuple[str, Sequence[tuple[str, str]]]],
        *,
        on_behalf_of: str | None = None,
        batch_size: int = COUNT_BATCH,
    ) -> list[int]:
        """Many type-level `_summary=count` searches, `batch_size` to a `batch` Bundle (one
        request; each entry costs what a search costs). A type the caller may not read answers
        its entry 403: it sees none of it, so that count is 0. Any other failed entry raises."""
        headers = {ON_BEHALF_OF: on_behalf_of} if on_behalf_of else None
        counts: list[int] = []
        for chunk in chunks(list(queries), batch_size):
            entries = [
                {"request": {"method": "GET",
                             "url": f"{rtype}?{urlencode([*params, ('_summary', 'count')])}"}}
                for rtype, params in chunk
            ]  # fmt: skip
            bundle = {"resourceType": "Bundle", "type": "batch", "entry": entries}
            body = self.request(
                "POST", self.fhir_base, json=bundle, headers=headers, gated=False
            ).body
            answers = _bundle(body).get("entry")
            if not isinstance(answers, list) or len(answers) != len(chunk):
                raise TransportError("the server answered a batch of counts unexpectedly")
            for (rtype, _), answer in zip(chunk, answers, strict=True):
                response = answer.get("response") if isinstance(answer, dict) else None
                status = str((response or {}).get("status") or "")
                result = answer.get("resource") if isinstance(answer, dict) else None
                if status[:1] == "2" and isinstance(result, dict):
                    counts.append(int(result.get("total") or 0))
                elif status.startswith("403"):
                    counts.append(0)
                else:
                    code = int(status[:3]) if status[:3].isdigit() else 0
                    text = outcome_text((response or {}).get("outcome")) or status or "?"
                    raise HTTPStatusError(code, "GET", f"{rtype} (count, in a batch)", text)
        return counts

    def post_search(self, resource_type: str, form: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        """POST `{type}/_search` with a form body (long lists do not fit a URL)."""
        bundle = _bundle(
            self.request("POST", f"{resource_type}/_search", data=form, gated=False).body
        )
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
        for chunk in chunks(list(dict.fromkeys(ids)), batch_size):
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
        for chunk in chunks(wanted, batch_size):
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
        for chunk in chunks(list(dict.fromkeys(patient_refs)), batch_size):
            params = [
                ("_type", ",".join(types)),
                ("_compartment", ",".join(chunk)),
                ("_count", str(PAGE_SIZE)),
            ]
            if elements:
                params.append(("_elements", ",".join(elements)))
            bundle = _bundle(self.request("GET", self.fhir_base, params=params).body)
            yield from self._pages(bundle)

    def read_histories(
        self, refs: Sequence[str], *, batch_size: int = HISTORY_BATCH
    ) -> Iterator[tuple[str, list[dict[str, Any]] | str]]:
        """Each resource's instance history (`{ref}/_history`: newest first, at most 100
        versions on Medplum), `batch_size` resources a `batch` Bundle: (ref, entries) — or
        (ref, reason) when the server answered that entry with an error."""
        for chunk in chunks(list(dict.fromkeys(refs)), batch_size):
            bundle = {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [{"request": {"method": "GET", "url": f"{r}/_history"}} for r in chunk],
            }
            body = self.request("POST", self.fhir_base, json=bundle, gated=False).body
            answers = _bundle(body).get("entry")
            if not isinstance(answers, list) or len(answers) != len(chunk):
                raise TransportError("the server answered a batch of history reads unexpectedly")
            for ref, answer in zip(chunk, answers, strict=True):
                response = answer.get("response") if isinstance(answer, dict) else None
                status = str((response or {}).get("status") or "")
                history = answer.get("resource") if isinstance(answer, dict) else None
                if status[:1] == "2" and isinstance(history, dict):
                    entries = history.get("entry")
                    yield ref, [e for e in entries or [] if isinstance(e, dict)]
                else:
                    text = outcome_text((response or {}).get("outcome"))
                    yield (
                        ref,
                        f"history read answered {status or '?'}" + (f": {text}" if text else ""),
                    )

    def compartment_sizes(
        self,
        patient_refs: Iterable[str],
        *,
        types: Sequence[str] = PATIENT_COMPARTMENT_TYPES,
    ) -> dict[str, int]:
        """How many resources each patient's compartment holds, by reading their ids (a
        system-level search is right on Medplum 5.0.10; a system-level multi-type
        `_summary=count` is not: it answers 1 whenever anything matches). A resource counts
        for every asked patient whose compartment holds it (`compartment.patients_of`)."""
        wanted = list(dict.fromkeys(patient_refs))
        sizes = dict.fromkeys(wanted, 0)
        for resource in self.read_compartments(wanted, types=types, elements=PATIENT_LINK_FIELDS):
            for ref in patients_of(resource):
                if ref in sizes:
                    sizes[ref] += 1
        return sizes


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


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive runs of at most `size` items (the batches of every batched read), taken
    as they come: a generator of a million references is never made a list first."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
