"""The audit record: one FHIR AuditEvent per apply that writes — digests, counts, outcome, tool
version, and the git commit / CI run from the environment. Counts only: no patient identifiers."""

from __future__ import annotations

import os
from typing import Any

from reconciler import __version__
from reconciler.clock import iso_utc

AUDIT_SYSTEM = "https://github.com/medplum-tenancy-reconciler/audit"


def ci_context(env: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ) if env is None else env
    out: dict[str, str] = {}
    commit = env.get("GITHUB_SHA") or env.get("CI_COMMIT_SHA")
    if commit:
        out["git_commit"] = commit
    if env.get("GITHUB_SERVER_URL") and env.get("GITHUB_REPOSITORY") and env.get("GITHUB_RUN_ID"):
        out["ci_run_url"] = (
            f"{env['GITHUB_SERVER_URL']}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
        )
    elif env.get("CI_JOB_URL"):
        out["ci_run_url"] = env["CI_JOB_URL"]
    return out


def audit_event(
    *,
    plan_digest: str,
    manifests_digest: str,
    counts: dict[str, int],
    success: bool,
    summary: str,
    action: str = "apply",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`action`: "apply", or "verify-repair" for what `verify --repair` wrote."""
    details: list[dict[str, str]] = [
        {"type": "plan_digest", "valueString": plan_digest},
        {"type": "manifests_digest", "valueString": manifests_digest},
        {"type": "tool_version", "valueString": f"medplum-tenancy-reconciler {__version__}"},
    ]
    details += [{"type": k, "valueString": str(v)} for k, v in counts.items()]
    details += [{"type": k, "valueString": v} for k, v in ci_context(env).items()]
    return {
        "resourceType": "AuditEvent",
        "type": {
            "system": "http://dicom.nema.org/resources/ontology/DCM",
            "code": "110100",
            "display": "Application Activity",
        },
        "subtype": [
            {
                "system": AUDIT_SYSTEM,
                "code": action,
                "display": f"reconciler {action.replace('-', ' ')}",
            }
        ],
        "action": "U",
        "recorded": iso_utc(),
        "outcome": "0" if success else "4",
        "outcomeDesc": summary,
        "agent": [
            {
                "type": {"text": "automation"},
                "who": {"display": f"medplum-tenancy-reconciler {__version__}"},
                "requestor": True,
            }
        ],
        "source": {"observer": {"display": "medplum-tenancy-reconciler"}},
        "entity": [{"what": {"display": "tenancy plan"}, "detail": details}],
    }
