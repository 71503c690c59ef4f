"""The seed's other operations: $everything, $match, $ccda-export and a small terminology set."""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

from reconciler.sandbox.fhir import Repository
from reconciler.sandbox.messages import FHIR_JSON, Response
from reconciler.sandbox.outcomes import bad_request, not_found

OBS_STATUS_SYSTEM = "http://hl7.org/fhir/observation-status"
OBS_STATUS_VALUESET = "http://hl7.org/fhir/ValueSet/observation-status"
LOCAL_SYSTEM = "http://example.org/local-codes"
CONCEPT_MAP_URL = "http://example.org/ConceptMap/observation-status-to-local"
OBS_STATUS = {
    "registered": "Registered",
    "preliminary": "Preliminary",
    "final": "Final",
    "amended": "Amended",
    "corrected": "Corrected",
    "cancelled": "Cancelled",
    "entered-in-error": "Entered in Error",
    "unknown": "Unknown",
}
LOCAL_CODES = {"final": "F", "preliminary": "P", "amended": "A", "corrected": "C", "cancelled": "X"}


# Medplum reads each operation parameter by the type the operation declares (observed on
# 5.0.10: `url` sent as valueString is not seen, so $validate-code says "No ValueSet
# specified"). A body parameter of another type is ignored, exactly like that.
DECLARED: dict[str, dict[str, str]] = {
    "validate-code": {"url": "valueUri", "system": "valueUri", "code": "valueCode",
                      "coding": "valueCoding", "display": "valueString", "valueSet": "resource"},
    "expand": {"url": "valueUri", "filter": "valueString", "count": "valueInteger"},
    "lookup": {"code": "valueCode", "system": "valueUri"},
    "translate": {"url": "valueUri", "source": "valueUri", "code": "valueCode",
                  "system": "valueUri", "target": "valueUri", "targetsystem": "valueUri",
                  "coding": "valueCoding", "conceptMap": "resource"},
    "match": {"resource": "resource", "count": "valueInteger",
              "onlyCertainMatches": "valueBoolean"},
}  # fmt: skip


def _params(op: str, query: list[tuple[str, str]], body: Any) -> dict[str, Any]:
    """Operation inputs from the query string and/or a Parameters body, by declared type."""
    declared = DECLARED.get(op, {})
    values: dict[str, Any] = dict(query)
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for p in body.get("parameter") or []:
            key = declared.get(str(p.get("name")))
            if key is not None and key in p:
                values[p["name"]] = p[key]
    return values


def _response(status: int, body: Any, content_type: str | None = None) -> Response:
    return Response(status, body, content_type=content_type or FHIR_JSON)


def type_operation(
    repo: Repository, rtype: str, op: str, method: str, query: list[tuple[str, str]], body: Any
) -> Response:
    args = _params(op, query, body)
    if rtype == "Patient" and op == "match":  # a sandbox extra: 404 on Medplum 5.0.10
        return _match(repo, args)
    if op == "validate-code" and rtype in ("ValueSet", "CodeSystem"):
        if rtype == "ValueSet" and not args.get("url") and not args.get("valueSet"):
            raise bad_request("No ValueSet specified")
        coding = args.get("coding") or {}
        system = coding.get("system") or args.get("system")
        code = coding.get("code") or args.get("code")
        url = args.get("url")
        ok = url in (OBS_STATUS_VALUESET, OBS_STATUS_SYSTEM, None) and (
            system in (OBS_STATUS_SYSTEM, None) and code in OBS_STATUS
        )
        params = [{"name": "result", "valueBoolean": bool(ok)}]
        if ok:
            params.append({"name": "display", "valueString": OBS_STATUS[str(code)]})
        return _response(200, {"resourceType": "Parameters", "parameter": params})
    if rtype == "ValueSet" and op == "expand":
        if args.get("url") != OBS_STATUS_VALUESET:
            raise not_found()
        text = str(args.get("filter") or "").lower()
        contains = [
            {"system": OBS_STATUS_SYSTEM, "code": c, "display": d}
            for c, d in OBS_STATUS.items()
            if text in c or text in d.lower()
        ]
        return _response(
            200,
            {
                "resourceType": "ValueSet",
                "url": OBS_STATUS_VALUESET,
                "status": "active",
                "expansion": {"total": len(contains), "contains": contains},
            },
        )
    if rtype == "CodeSystem" and op == "lookup":
        if args.get("system") != OBS_STATUS_SYSTEM or args.get("code") not in OBS_STATUS:
            raise not_found()
        display = OBS_STATUS[str(args["code"])]
        return _response(
            200,
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "name", "valueString": "ObservationStatus"},
                    {"name": "display", "valueString": display},
                ],
            },
        )
    if rtype == "ConceptMap" and op == "translate":
        return _translate(repo, args, None)
    raise not_found()  # like Medplum: an operation it does not implement is "Not found"


def _concept_map(repo: Repository, args: dict[str, Any], rid: str | None) -> dict[str, Any]:
    """Medplum needs a ConceptMap: an instance id, its `url`, or a `source` ValueSet."""
    if rid is not None:
        return repo.read("ConceptMap", rid)
    url, source = args.get("url"), args.get("source")
    if not url and not source:
        raise bad_request("No ConceptMap specified")
    for resource in repo.store.all_of_type("ConceptMap"):
        if url and resource.get("url") == url:
            return resource
        if not url and source in (resource.get("sourceUri"), resource.get("sourceCanonical")):
            return resource
    raise not_found()


def _translate(repo: Repository, args: dict[str, Any], rid: str | None) -> Response:
    concept_map = _concept_map(repo, args, rid)
    coding = args.get("coding") or {}
    system = args.get("system") or coding.get("system")
    code = args.get("code") or coding.get("code")
    target = args.get("targetsystem") or args.get("target")
    matches: list[dict[str, Any]] = []
    for group in concept_map.get("group") or []:
        if system and group.get("source") not in (None, system):
            continue
        if target and group.get("target") not in (None, target):
            continue
        for element in group.get("element") or []:
            if element.get("code") != code:
                continue
            for mapped in element.get("target") or []:
                matches.append(
                    {
                        "name": "match",
                        "part": [
                            {"name": "equivalence",
                             "valueCode": mapped.get("equivalence", "equivalent")},
                            {"name": "concept",
                             "valueCoding": {"system": group.get("target"),
                                             "code": mapped.get("code")}},
                            {"name": "source", "valueString": concept_map.get("url", "")},
                        ],
                    }
                )  # fmt: skip
    answer = [{"name": "result", "valueBoolean": bool(matches)}, *matches]
    return _response(200, {"resourceType": "Parameters", "parameter": answer})


def observation_status_concept_map() -> dict[str, Any]:
    """The demo ConceptMap the seed stores (observation-status -> local codes)."""
    return {
        "resourceType": "ConceptMap",
        "url": CONCEPT_MAP_URL,
        "status": "active",
        "sourceUri": OBS_STATUS_VALUESET,
        "group": [
            {
                "source": OBS_STATUS_SYSTEM,
                "target": LOCAL_SYSTEM,
                "element": [
                    {"code": code, "target": [{"code": local, "equivalence": "equivalent"}]}
                    for code, local in LOCAL_CODES.items()
                ],
            }
        ],
    }


def _match(repo: Repository, args: dict[str, Any]) -> Response:
    patient = args.get("resource")
    if not isinstance(patient, dict):
        raise bad_request("$match needs a Patient resource parameter")
    family = ((patient.get("name") or [{}])[0].get("family") or "").lower()
    birth = patient.get("birthDate")
    where, values = [], []
    if family:
        where.append("r.seq IN (SELECT seq FROM search_index WHERE param='name' AND value=?)")
        values.append(family)
    if birth:
        where.append("r.seq IN (SELECT seq FROM search_index WHERE param='birthdate' AND value=?)")
        values.append(birth)
    if not where:
        raise bad_request("$match needs a name or birthDate")
    rows = repo.store.query(
        ["Patient"],
        [" OR ".join(f"({w})" for w in where)],
        values,
        order="r.seq",
        limit=100,
        offset=0,
    )
    entries = []
    for _seq, _u, found in rows:
        score = 0.0
        names = [(n.get("family") or "").lower() for n in found.get("name") or []]
        if family and family in names:
            score += 0.5
        if birth and found.get("birthDate") == birth:
            score += 0.5
        entries.append({"resource": found, "search": {"mode": "match", "score": score}})
    entries.sort(key=lambda e: -e["search"]["score"])
    return _response(200, {"resourceType": "Bundle", "type": "searchset", "entry": entries})


def instance_operation(
    repo: Repository,
    rtype: str,
    rid: str,
    op: str,
    method: str,
    query: list[tuple[str, str]],
    view: Any,
    base: str,
) -> Response:
    if rtype == "ConceptMap" and op == "translate":
        return _translate(repo, _params(op, query, None), rid)
    if rtype != "Patient" or op not in ("everything", "ccda-export"):
        raise not_found()
    patient = repo.read("Patient", rid)
    members = repo.store.compartment_members(f"Patient/{rid}")
    if op == "everything":
        entries = [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": view(r)}
            for r in [patient, *members]
        ]
        return _response(200, {"resourceType": "Bundle", "type": "searchset", "entry": entries})
    return _response(200, _ccda(patient, members), "application/xml")


def _ccda(patient: dict[str, Any], members: list[dict[str, Any]]) -> str:
    name = (patient.get("name") or [{}])[0]
    given = " ".join(name.get("given") or [])
    family = name.get("family") or ""
    birth = str(patient.get("birthDate") or "").replace("-", "")
    rows = []
    for r in members:
        if r.get("resourceType") != "Observation":
            continue
        code = escape(str((r.get("code") or {}).get("text") or "observation"))
        rows.append(f"<tr><td>{code}</td><td>{escape(str(r.get('status', '')))}</td></tr>")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ClinicalDocument xmlns="urn:hl7-org:v3">\n'
        '  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>\n'
        '  <templateId root="2.16.840.1.113883.10.20.22.1.2"/>\n'
        '  <code code="34133-9" codeSystem="2.16.840.1.113883.6.1" '
        'displayName="Summarization of Episode Note"/>\n'
        "  <title>Continuity of Care Document</title>\n"
        "  <recordTarget><patientRole>\n"
        f'    <id extension="{escape(str(patient["id"]))}"/>\n'
        f"    <patient><name><given>{escape(given)}</given><family>{escape(family)}</family>"
        f'</name><birthTime value="{escape(birth)}"/></patient>\n'
        "  </patientRole></recordTarget>\n"
        "  <component><structuredBody><component><section>\n"
        '    <code code="30954-2" codeSystem="2.16.840.1.113883.6.1" displayName="Results"/>\n'
        "    <title>Observations</title>\n"
        f"    <text><table><tbody>{''.join(rows)}</tbody></table></text>\n"
        "  </section></component></structuredBody></component>\n"
        "</ClinicalDocument>\n"
    )
