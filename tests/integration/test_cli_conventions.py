"""CLI conventions (issue: targeting, every error at once, honest messages, consistent flags)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import reconciler.connect
from reconciler import __version__
from reconciler.cli import main
from reconciler.medplum.client import MedplumClient
from tests.integration.helpers import create_org, create_patients, tenant_yaml, write
from tests.sandbox_process import InProcessSandbox


def run(capsys: Any, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "0"], "argument --timeout: must be more than 0 seconds, got '0'"),
        (["--parallelism", "0"], "argument --parallelism/-parallelism: must be 1 or more, got '0'"),
        (["--parallelism", "-3"], "argument --parallelism/-parallelism: must be 1 or more, got '-3'"),
        (["--server", "https://medplum.example/fhir/R4/"],
         "'https://medplum.example/fhir/R4/' is the server's FHIR base; give its base URL "
         "(https://medplum.example/): the tool adds /fhir/R4/ and /oauth2/token itself"),
    ],
)  # fmt: skip
def test_bad_numbers_and_a_fhir_base_are_refused_with_the_real_cause(
    args: list[str], message: str, capsys: Any, tmp_path: Path
) -> None:
    manifests = write(tmp_path, "t.yaml", tenant_yaml("t", "Organization/o", ["Patient/p"]))
    code, out, err = run(capsys, "plan", manifests, *args)
    assert (code, out) == (1, "")
    assert message in err.splitlines()[-1]


def test_a_token_endpoint_answering_404_says_it_is_not_a_medplum_server(
    monkeypatch: pytest.MonkeyPatch, capsys: Any, tmp_path: Path
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="<html>nginx</html>")

    def build_client(url: str, cid: Any, secret: Any, **_: Any) -> MedplumClient:
        return MedplumClient(
            url, cid, secret, http=httpx.Client(transport=httpx.MockTransport(handler))
        )

    monkeypatch.setattr(reconciler.connect, "build_client", build_client)
    monkeypatch.setenv("MEDPLUM_BASE_URL", "https://wrong.example/")
    monkeypatch.setenv("MEDPLUM_CLIENT_ID", "c")
    monkeypatch.setenv("MEDPLUM_CLIENT_SECRET", "s3cr3t-value")
    manifests = write(tmp_path, "t.yaml", tenant_yaml("t", "Organization/o", ["Patient/p"]))
    code, _, err = run(capsys, "plan", manifests)
    assert code == 1
    assert "no token endpoint there: not a Medplum server, or the wrong URL" in err


def test_target_plans_only_the_named_tenants_and_others_do_not_block(
    sandbox: InProcessSandbox, tmp_path: Path, cli: Any
) -> None:
    client = sandbox.client()
    north, south = create_org(client), create_org(client)
    refs = create_patients(client, 2)
    manifests = write(
        tmp_path, "t.yaml",
        tenant_yaml("north", north, refs[:1]) + "---\n"
        + tenant_yaml("south", south, ["Patient/00000000-0000-4000-8000-00000000dead"]),
    )  # fmt: skip
    assert cli(sandbox, "plan", manifests)[0] == 1  # south's merged-away patient blocks all
    code, out, _ = cli(sandbox, "plan", manifests, "-target", "north", "--no-estimate")
    assert code == 0
    assert out.splitlines()[1] == "Only the tenants north (--target)"
    assert (
        out.splitlines()[-1] == "Plan: 1 patient to update, 1 account to add, 0 accounts to remove."
    )
    plan_file = str(tmp_path / "plan.json")
    assert cli(sandbox, "plan", manifests, "--target", "north", "-out", plan_file)[0] == 0
    assert json.loads(Path(plan_file).read_text())["targets"] == ["north"]
    code, out, _ = cli(sandbox, "show", plan_file)
    assert "Only the tenants north (--target)" in out
    code, _, err = cli(sandbox, "apply", plan_file, "--target", "south")
    assert code == 1 and "--target goes with manifests" in err
    code, out, _ = cli(sandbox, "apply", manifests, "-target", "north", "-auto-approve")
    assert code == 0 and "Apply complete! 1 patient updated" in out


def test_version_schema_and_commands_take_only_their_flags(capsys: Any) -> None:
    assert run(capsys, "--version")[1] == f"reconciler {__version__}\n"
    code, out, _ = run(capsys, "schema", "tenant")
    assert code == 0 and json.loads(out)["$id"] == "urn:medplum-tenancy-reconciler:schema:tenant:v1"
    code, _, err = run(capsys, "validate", "x.yaml", "--server", "https://medplum.example")
    assert code == 1 and "unrecognized arguments: --server" in err
    code, _, err = run(capsys, "sandbox", "seed", "--server", "https://medplum.example")
    assert code == 1 and "unrecognized arguments: --server" in err
