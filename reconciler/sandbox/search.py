"""FHIR search over the store: the parameters, paging links and bundle shapes Medplum uses."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from reconciler.sandbox.outcomes import bad_request
from reconciler.sandbox.store import Resource, Store, compartment_value

DATE_PREFIX = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)\d")
MAX_COUNT = 1000
DEFAULT_COUNT = 20
COMMON_PARAMS = {"_id", "_compartment", "identifier"}
TYPE_PARAMS = {
    "Patient": {"name", "birthdate", "general-practitioner"},
    "Practitioner": {"name"},
    "Location": {"name", "organization"},
    "HealthcareService": {"name", "organization"},
    "PractitionerRole": {"organization", "practitioner"},
    "Questionnaire": {"name"},
    "Organization": {"name"},
    "AccessPolicy": {"name"},
    "AuditEvent": {"subtype"},
    "ProjectMembership": {
        "profile", "user", "profile-type", "access-policy", "user-name", "project", "external-id",
    },
}  # fmt: skip
LINK_PARAMS = {"subject", "patient"}
SUBSETTED = {"system": "http://hl7.org/fhir/v3/ObservationValue", "code": "SUBSETTED"}


@dataclass
class SearchRequest:
    types: list[str]
    filters: list[tuple[str, str]] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0
    sort_last_updated: bool = False
    newest_first: bool = False  # _sort=-_lastUpdated (pages by offset)
    cursor: tuple[str, int] | None = None
    elements: list[str] | None = None
    summary_count: bool = False
    total: bool = False
    system_level: bool = False
    echo: list[tuple[str, str]] = field(default_factory=list)  # params for the links
    # What the caller's access policy lets it see, per type: None = all of the type, a list of
    # criteria (each a list of filters, OR-ed) = only what matches one. None here = no policy.
    access: dict[str, list[list[tuple[str, str]]] | None] | None = None


def parse(
    types: Sequence[str], params: Sequence[tuple[str, str]], *, system_level: bool
) -> SearchRequest:
    req = SearchRequest(types=list(types), system_level=system_level)
    for name, value in params:
        req.echo.append((name, value))  # the links repeat every parameter, _type included
        if name == "_type" and system_level:
            continue
        if name == "_count":
            req.count = min(_int(name, value), MAX_COUNT)
        elif name == "_offset":
            req.offset = _int(name, value)
        elif name == "_sort":
            if value == "-_lastUpdated":
                req.newest_first = True
            elif value == "_lastUpdated":
                req.sort_last_updated = True
            else:
                raise bad_request(f"Unsupported sort: {value}")
        elif name == "_cursor":
            req.cursor = _decode_cursor(value)
        elif name == "_elements" or name == "_fields":
            req.elements = [v for v in value.split(",") if v]
        elif name == "_summary":
            req.summary_count = value == "count"
        elif name == "_total":
            req.total = value in ("accurate", "estimate")
        else:
            base = name.split(":", 1)[0]
            allowed = set(COMMON_PARAMS)
            for rtype in req.types:
                allowed |= TYPE_PARAMS.get(rtype, set())
                if rtype != "Patient":
                    allowed |= LINK_PARAMS
            if base not in allowed:
                raise bad_request(f"Unknown search parameter: {name}")
            req.filters.append((name, value))
    return req


def _int(name: str, value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise bad_request(f"Invalid {name}: {value}") from None
    if n < 0:
        raise bad_request(f"Invalid {name}: {value}")
    return n


def _encode_cursor(last_updated: str, seq: int) -> str:
    return base64.urlsafe_b64encode(f"{last_updated}|{seq}".encode()).decode().rstrip("=")


def _decode_cursor(token: str) -> tuple[str, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        updated, seq = raw.rsplit("|", 1)
        return updated, int(seq)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("Invalid cursor") from None


def where_clause(req: SearchRequest) -> tuple[list[str], list[Any]]:
    where, args = _filters_sql(req.filters)
    if req.access is not None:
        clause, clause_args = _access_sql(req.types, req.access)
        where.append(clause)
        args.extend(clause_args)
    return where, args


def _access_sql(
    types: Sequence[str], access: dict[str, list[list[tuple[str, str]]] | None]
) -> tuple[str, list[Any]]:
    """`(type = T AND criteria) OR …` for the types the caller may see; nothing else."""
    parts: list[str] = []
    args: list[Any] = []
    for rtype in types:
        if rtype not in access:
            continue
        bounds = access[rtype]
        if bounds is None:
            parts.append("r.type = ?")
            args.append(rtype)
            continue
        for criteria in bounds:
            sub_where, sub_args = _filters_sql(criteria)
            parts.append("(" + " AND ".join(["r.type = ?", *sub_where]) + ")")
            args += [rtype, *sub_args]
    return ("(" + " OR ".join(parts) + ")" if parts else "0"), args


def _filters_sql(filters: Sequence[tuple[str, str]]) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for name, value in filters:
        values = [v for v in value.split(",") if v]
        if not values:
            raise bad_request(f"Empty value for search parameter: {name}")
        if name == "_id":
            where.append(f"r.id IN ({','.join('?' * len(values))})")
            args.extend(values)
            continue
        if name == "_compartment":  # by id, like Medplum's compartments column
            values = [compartment_value(v) for v in values]
        if name == "identifier":
            # `system|value` matches exactly; a bare value matches any system.
            exact = [v for v in values if "|" in v]
            bare = [v for v in values if "|" not in v]
            parts = []
            if exact:
                parts.append(f"(param='identifier' AND value IN ({','.join('?' * len(exact))}))")
                args.extend(exact)
            if bare:
                parts.append(
                    f"(param='identifier:value' AND value IN ({','.join('?' * len(bare))}))"
                )
                args.extend(bare)
            where.append(f"r.seq IN (SELECT seq FROM search_index WHERE {' OR '.join(parts)})")
            continue
        if name in ("name", "user-name"):  # string search: case-insensitive prefix
            parts = []
            for v in values:
                parts.append("(value >= ? AND value < ?)")
                args.extend([v.lower(), v.lower() + "\U0010ffff"])
            where.append(
                f"r.seq IN (SELECT seq FROM search_index WHERE param=? AND ({' OR '.join(parts)}))"
            )
            args.insert(len(args) - 2 * len(values), name)
            continue
        base = name.split(":", 1)[0]
        if base == "birthdate" and any(DATE_PREFIX.match(v) for v in values):
            # Medplum compares dates with prefixes (lt, ge, …); the sandbox only matches exact
            # dates, so it refuses rather than silently matching nobody.
            raise bad_request(f"Unsupported search prefix for parameter: {name}")
        where.append(
            "r.seq IN (SELECT seq FROM search_index WHERE param=? AND "
            f"value IN ({','.join('?' * len(values))}))"
        )
        args.append(base)
        args.extend(values)
    return where, args


def _subset(resource: Resource, elements: list[str]) -> Resource:
    keep = {"resourceType", "id", "meta", *elements}
    out = {k: v for k, v in resource.items() if k in keep}
    meta = out["meta"] = dict(resource.get("meta") or {})  # its own meta and tag list
    meta["tag"] = [*(meta.get("tag") or []), dict(SUBSETTED)]
    return out


def run(
    store: Store,
    req: SearchRequest,
    *,
    base_url: str,
    link_base: str,
    max_offset: int | None,
    render: Any,
) -> Resource:
    """Execute a search; `render(resource)` applies the caller's meta view."""
    if max_offset is not None and req.offset > max_offset:
        raise bad_request(
            f"Search offset exceeds maximum (got {req.offset}, max {max_offset}); "
            "use _sort=_lastUpdated to page by cursor"
        )
    where, args = where_clause(req)
    bundle: Resource = {"resourceType": "Bundle", "type": "searchset"}
    if req.summary_count or req.total:
        total = store.count(req.types, where, args)
        if req.system_level and len(req.types) > 1:
            # Medplum 5.0.10 counts a UNION whose parts select no columns: every row collapses
            # into one, so a multi-type count is 1 whenever anything matches (observed).
            total = min(total, 1)
        bundle["total"] = total
    if req.summary_count:
        return bundle
    use_cursor = req.sort_last_updated and req.count >= 20
    order = "r.last_updated, r.seq" if req.sort_last_updated else "r.seq"
    if req.newest_first:
        order = "r.last_updated DESC, r.seq DESC"
    offset = req.offset
    if req.cursor is not None:
        where = [*where, "(r.last_updated, r.seq) > (?, ?)"]
        args = [*args, req.cursor[0], req.cursor[1]]
        offset = 0
    rows: list[tuple[int, str, Resource]] = []
    if req.count > 0:
        rows = store.query(req.types, where, args, order=order, limit=req.count + 1, offset=offset)
    more = len(rows) > req.count
    rows = rows[: req.count]
    entries = []
    for _seq, _updated, resource in rows:
        shown = render(resource)
        if req.elements:
            shown = _subset(shown, req.elements)
        entries.append(
            {
                "fullUrl": f"{base_url}/{resource['resourceType']}/{resource['id']}",
                "search": {"mode": "match"},
                "resource": shown,
            }
        )
    if entries:
        bundle["entry"] = entries
    echo = [(k, v) for k, v in req.echo if k not in ("_count", "_offset", "_cursor")]
    echo = [("_fields" if k == "_elements" else k, v) for k, v in echo]

    def link(extra: list[tuple[str, str]]) -> str:
        return f"{link_base}?{urlencode(sorted([*echo, ('_count', str(req.count)), *extra]))}"

    self_extra = [("_offset", str(req.offset))] if req.offset else []
    if req.cursor is not None:
        self_extra = [("_cursor", _encode_cursor(*req.cursor))]
    links = [{"relation": "self", "url": link(self_extra)}, {"relation": "first", "url": link([])}]
    if more:
        if use_cursor:
            last_seq, last_updated = rows[-1][0], rows[-1][1]
            nxt = [("_cursor", _encode_cursor(last_updated, last_seq))]
        else:
            nxt = [("_offset", str(offset + req.count))]
        links.append({"relation": "next", "url": link(nxt)})
    if req.offset and req.cursor is None:
        links.append(
            {
                "relation": "previous",
                "url": link([("_offset", str(max(0, req.offset - req.count)))]),
            }
        )
    bundle["link"] = links
    return bundle
