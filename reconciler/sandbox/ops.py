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


def _params(query: list[tuple[str, str]], body: Any) -> dict[str, Any]:
    """Operation inputs from the query string and/or a Parameters body, flattened."""
    values: dict[str, Any] = dict(query)
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for p in body.get("parameter") or []:
            for key, value in p.items():
                if key.startswith("value") or key == "resource":
                    values[p["name"]] = value
    return values


def _response(status: int, body: Any, content_type: str | None = None) -> Response:
    return Response(status, body, content_type=content_type or FHIR_JSON)


def type_operation(
    repo: Repository, rtype: str, op: str, method: str, query: list[tuple[str, str]], body: Any
) -> Response:
    args = _params(query, body)
    if rtype == "Patient" and op == "match":
        return _match(repo, args)
    if op == "validate-code" and rtype in ("ValueSet", "CodeSystem"):
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
        coding = args.get("coding") or {}
        system = args.get("system") or coding.get("system")
        code = args.get("code") or coding.get("code")
        target = args.get("targetsystem") or args.get("targetSystem")
        mapped = LOCAL_CODES.get(str(code)) if system == OBS_STATUS_SYSTEM else None
        answer: list[dict[str, Any]] = [{"name": "result", "valueBoolean": mapped is not None}]
        if mapped is not None and target in (None, LOCAL_SYSTEM):
            answer.append(
                {
                    "name": "match",
                    "part": [
                        {"name": "equivalence", "valueCode": "equivalent"},
                        {
                            "name": "concept",
                            "valueCoding": {"system": LOCAL_SYSTEM, "code": mapped},
                        },
                        {"name": "source", "valueString": CONCEPT_MAP_URL},
                    ],
                }
            )
        else:
            answer[0]["valueBoolean"] = False
        return _response(200, {"resourceType": "Parameters", "parameter": answer})
    raise bad_request(f"Unsupported operation: {rtype}/${op}")


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
    if rtype != "Patient" or op not in ("everything", "ccda-export"):
        raise bad_request(f"Unsupported operation: {rtype}/{rid}/${op}")
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
