"""No lost updates: `$set-accounts` takes no If-Match, so another writer's change to an
unmanaged account between apply's re-read and its write used to be overwritten (issue 16,
point 4). Apply now reads the written resources' history and makes such changes good."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.medplum.accounts import get_resource_accounts
from reconciler.medplum.client import MedplumClient
from tests.integration.helpers import create_org
from tests.reliability.conftest import FIGURES, finish, run_process, run_through
from tests.reliability.helpers import build, state
from tests.sandbox_process import AppSandbox


class RacingTransport(httpx.BaseTransport):
    """Right before apply's first `$set-accounts` of each patient reaches the server, another
    admin changes that patient's unmanaged accounts (with propagation, as tools do): even
    patients gain `foreign`, odd ones lose `legacy`."""

    def __init__(self, inner: httpx.BaseTransport, other: MedplumClient, foreign: str, legacy: str):
        self.inner, self.other, self.foreign, self.legacy = inner, other, foreign, legacy
        self.raced: dict[str, str] = {}  # patient → "added" / "removed"

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path.endswith("/$set-accounts"):
            ref = "/".join(path.split("/")[-3:-1])
            if ref not in self.raced:
                accounts = get_resource_accounts(self.other.read_resource(*ref.split("/")))
                if len(self.raced) % 2 == 0:
                    self.raced[ref] = "added"
                    accounts = [*accounts, self.foreign]
                else:
                    self.raced[ref] = "removed"
                    accounts = [a for a in accounts if a != self.legacy]
                result = self.other.set_accounts(ref, accounts, propagate=True, prefer_async=True)
                self.other.wait_for_async_job(result, timeout=30)
        return self.inner.handle_request(request)


AUTHORS = ["caller", "system"]  # who a $set-accounts version names: 5.0.10, or 5.1.29


@pytest.mark.parametrize("author", AUTHORS)
@pytest.mark.parametrize("parallelism", [1, 4, 10])
def test_another_writers_change_made_between_reread_and_write_survives(
    parallelism: int, author: str, tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:

    sb = AppSandbox("--set-accounts-author", author)
    admin = sb.client()
    scenario = build(admin, tmp_path, n=12, compartment=2)
    foreign = create_org(admin, "Foreign clinic")
    racing = RacingTransport(sb.transport, sb.client(), foreign, scenario.legacy)

    code, out, err = run_through(
        racing, sb, monkeypatch, capsys, "apply", scenario.manifests, "--auto-approve",
        "--parallelism", str(parallelism),
    )  # fmt: skip
    assert code == 0, out + err
    added = sorted(p for p, how in racing.raced.items() if how == "added")
    removed = sorted(p for p, how in racing.raced.items() if how == "removed")
    assert len(added) + len(removed) == 8  # 6 joiners + 2 leavers, each raced once
    assert (
        f"Kept other writers' changes made during apply: {len(added)} unmanaged accounts put "
        f"back, {len(removed)} taken out again." in out
    ), out
    (audit,) = admin.search_all("AuditEvent", {})
    details = {d["type"]: d["valueString"] for d in audit["entity"][0]["detail"]}
    assert details["foreign_accounts_restored"] == str(len(added))
    assert details["foreign_accounts_dropped"] == str(len(removed))
    want = {p: set(a) for p, a in scenario.desired.items()}
    for p in added:
        want[p].add(foreign)
    for p in removed:
        want[p].discard(scenario.legacy)
    assert {p: set(a) for p, a in state(admin, scenario.patients).items()} == want
    for resource in admin.read_compartments(scenario.patients):
        patient = resource["subject"]["reference"]
        assert set(get_resource_accounts(resource)) == want[patient], (patient, resource["id"])
    # The next plan has nothing to do: foreign and legacy are not the manifests' accounts.
    code, out, _ = run_through(racing, sb, monkeypatch, capsys, "plan", scenario.manifests,
                               "--detailed-exitcode", "--no-estimate")  # fmt: skip
    assert code == 0 and "No changes." in out
    sb.stop()


@pytest.mark.parametrize("author", AUTHORS)
def test_a_concurrent_writer_loses_no_account_during_a_real_apply(
    author: str, sandbox_factory: Any, tmp_path: Path
) -> None:
    """The review's scenario over HTTP: while apply runs as its own process, another admin
    adds an unmanaged account to every planned patient as fast as it can — with the server
    naming the caller as the author of a $set-accounts version (5.0.10) or `system` (5.1.29)."""
    sb = sandbox_factory("--latency-ms", "10", "--set-accounts-author", author)
    admin = sb.client()
    scenario = build(admin, tmp_path, n=120, compartment=2)
    planned = [p for p in scenario.patients if set(scenario.desired[p]) != set(scenario.before[p])]
    foreign = create_org(admin, "Foreign clinic")
    writer = sb.client()
    done = threading.Event()
    touched: list[str] = []

    def write_concurrently() -> None:
        for ref in planned:
            if done.is_set():
                return
            accounts = get_resource_accounts(writer.read_resource(*ref.split("/")))
            writer.set_accounts(ref, [*accounts, foreign], propagate=True)
            touched.append(ref)

    proc = run_process(
        sb,
        "apply",
        scenario.manifests,
        "--auto-approve",
        "--allow-mass-grant",
        "--parallelism",
        "8",
    )
    thread = threading.Thread(target=write_concurrently)
    thread.start()
    code, out, err = finish(proc)
    done.set()
    thread.join()
    FIGURES["concurrent writers during apply"] += 1
    assert code == 0, out + err
    assert touched, "the writer did not get to write during the apply"
    now = state(admin, scenario.patients)
    lost = [p for p in touched if foreign not in now[p]]
    assert lost == [], f"{len(lost)} of {len(touched)} accounts lost: {out}"
    for resource in admin.read_compartments(touched):
        assert foreign in get_resource_accounts(resource), resource["id"]
    # Nothing beyond the plan and the writer's account.
    for ref, accounts in now.items():
        assert set(accounts) <= scenario.allowed() | {foreign}, (ref, accounts)
