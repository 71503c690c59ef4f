"""Nothing lost after a crash (issue 26): kill -9 of apply while another admin adds unmanaged
accounts as fast as it can. The dead run never checked its writes for other writers' changes;
its journal lets the next apply do it — and say what it put back — whether the server names
the caller or `system` as the author of a $set-accounts version."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from reconciler.apply.journal import JOURNAL_SYSTEM, JOURNAL_VALUE
from reconciler.medplum.accounts import get_resource_accounts
from tests.integration.helpers import create_org
from tests.reliability.conftest import FIGURES, finish, run_process
from tests.reliability.helpers import build, state
from tests.reliability.test_crash import wait_for

Run = Any


@pytest.mark.parametrize("author", ["caller", "system"])
def test_kill_9_during_a_concurrent_writer_then_apply_again_loses_nothing(
    author: str, sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory("--latency-ms", "15", "--set-accounts-author", author)
    admin = sb.client()
    scenario = build(admin, tmp_path, n=90, compartment=1)
    planned = [p for p in scenario.patients if set(scenario.desired[p]) != set(scenario.before[p])]
    foreign = create_org(admin, "Foreign clinic")
    writer = sb.client()
    stop = threading.Event()
    touched: list[str] = []

    def write_concurrently() -> None:
        for ref in planned:
            if stop.is_set():
                return
            accounts = get_resource_accounts(writer.read_resource(*ref.split("/")))
            writer.set_accounts(ref, [*accounts, foreign], propagate=True)
            touched.append(ref)

    proc = run_process(sb, "apply", scenario.manifests, "--auto-approve", "--allow-mass-grant",
                       "--parallelism", "4", "--lock-ttl", "3s", "--timeout", "1.5")  # fmt: skip
    thread = threading.Thread(target=write_concurrently)
    thread.start()
    journal = {"identifier": f"{JOURNAL_SYSTEM}|{JOURNAL_VALUE}"}
    wait_for(lambda: len(touched) >= 20 and any(True for _ in admin.search_all("Basic", journal)))
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    FIGURES["apply processes killed"] += 1
    stop.set()
    thread.join()
    FIGURES["concurrent writers during apply"] += 1
    assert list(admin.search_all("Basic", journal)), "the dead run left no journal"
    # The next apply checks the dead run's writes first (the lock expires: it waits for it).
    code, out, err = run(sb, "apply", scenario.manifests, "--auto-approve", "--allow-mass-grant",
                         "--lock-timeout", "10s")  # fmt: skip
    assert code == 0, out + err
    assert "Checked a run that did not finish (run " in out, out
    now = state(admin, scenario.patients)
    lost = [p for p in touched if foreign not in now[p]]
    assert lost == [], f"{len(lost)} of {len(touched)} accounts lost: {out}"
    for resource in admin.read_compartments(touched):
        assert foreign in get_resource_accounts(resource), resource["id"]
    assert list(admin.search_all("Basic", journal)) == []  # checked: the journal is gone
    for ref, accounts in now.items():
        assert set(accounts) <= scenario.allowed() | {foreign}, (ref, accounts)
