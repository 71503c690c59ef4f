"""Crashes: `kill -9` of apply mid-way, and the sandbox server restarting mid-apply."""

from __future__ import annotations

import random
import re
import signal
import time
from pathlib import Path
from typing import Any

from reconciler.apply.lock import LOCK_SYSTEM, LOCK_VALUE
from tests.reliability.conftest import FIGURES, finish, run_process
from tests.reliability.helpers import assert_invariants, build, unlock
from tests.sandbox_process import SandboxProcess

Run = Any


def wait_for(predicate: Any, timeout: float = 60, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError("timed out waiting")


def test_kill_9_mid_apply_then_remainder_unlock_and_converge(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory("--latency-ms", "10", "--job-delay-ms", "30")
    client = sb.client()
    scenario = build(client, tmp_path, n=60, compartment=2)
    initial = len(assert_invariants(client, scenario))
    proc = run_process(
        sb,
        "apply",
        scenario.manifests,
        "--auto-approve",
        "--allow-mass-grant",
        "--parallelism",
        "2",
        "--lock-ttl",
        "3s",
        "--timeout",
        "1.5",
    )
    goal = random.Random().randint(4, 15)  # a random point after some writes
    wait_for(lambda: initial - len(assert_invariants(client, scenario)) >= goal)
    proc.send_signal(signal.SIGKILL)
    code, _, _ = finish(proc)
    assert code == -signal.SIGKILL
    FIGURES["apply processes killed"] += 1
    time.sleep(0.5)  # jobs already accepted finish on the server
    behind = assert_invariants(client, scenario)
    assert behind, "the kill came too late to test anything"
    # The next plan shows exactly the remainder.
    code, out, _ = run(sb, "plan", scenario.manifests, "--format", "json", "--no-estimate")
    import json

    assert {c["patient"] for c in json.loads(out)["changes"]} == behind
    # The dead run's lock is still there: a new apply is refused until it expires or is removed.
    locks = list(client.search_all("Basic", {"identifier": f"{LOCK_SYSTEM}|{LOCK_VALUE}"}))
    assert len(locks) == 1
    code, _, err = run(sb, "apply", scenario.manifests, "--auto-approve", "--allow-mass-grant")
    if code == 1:  # still held (not yet expired): clear it by hand
        assert "another apply holds the lock" in err
        assert unlock(run, sb, locks[0]["id"]) == 0
        code, _, err = run(sb, "apply", scenario.manifests, "--auto-approve", "--allow-mass-grant")
    assert code == 0, err
    assert assert_invariants(client, scenario) == set()


def test_expired_lock_of_a_killed_apply_is_taken_over(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory("--latency-ms", "10", "--job-delay-ms", "30")
    client = sb.client()
    scenario = build(client, tmp_path, n=40, compartment=1)
    proc = run_process(
        sb,
        "apply",
        scenario.manifests,
        "--auto-approve",
        "--allow-mass-grant",
        "--parallelism",
        "1",
        "--lock-ttl",
        "1s",
        "--timeout",
        "0.5",
    )
    wait_for(
        lambda: bool(
            list(client.search_all("Basic", {"identifier": f"{LOCK_SYSTEM}|{LOCK_VALUE}"}))
        )
    )
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    FIGURES["apply processes killed"] += 1
    time.sleep(2.2)  # past its 1 s TTL on the server's clock (a Date header has 1 s resolution)
    code, _, err = run(sb, "apply", scenario.manifests, "--auto-approve", "--allow-mass-grant")
    assert code == 0, err
    assert "took over an expired apply lock" in err
    assert assert_invariants(client, scenario) == set()


def test_sandbox_restart_mid_apply(sandbox_factory: Any, run: Run, tmp_path: Path) -> None:
    data = str(tmp_path / "restart.sqlite")
    sb = sandbox_factory("--latency-ms", "10", "--job-delay-ms", "30", data=data, process=True)
    client = sb.client()
    scenario = build(client, tmp_path, n=60, compartment=2)
    port = sb.url.rsplit(":", 1)[1]
    initial = len(assert_invariants(client, scenario))
    proc = run_process(
        sb,
        "apply",
        scenario.manifests,
        "--auto-approve",
        "--allow-mass-grant",
        "--parallelism",
        "2",
    )
    wait_for(lambda: initial - len(assert_invariants(client, scenario)) >= 5)
    sb.proc.stop()  # SIGTERM: the server goes away mid-apply ...
    time.sleep(0.5)
    restarted = SandboxProcess(
        # the fixed port comes after the default --port 0 and wins
        args=[
            "--port",
            port,
            "--client",
            f"{sb.env()['MEDPLUM_CLIENT_ID']}:{sb.env()['MEDPLUM_CLIENT_SECRET']}:admin",
            "--latency-ms",
            "10",
        ],
        data=data,
    )
    restarted.start()
    FIGURES["server restarts"] += 1
    try:
        code, out, err = finish(proc)
        # ... and apply either recovered or failed cleanly, naming what it did not update.
        assert "Traceback" not in err and "unexpected" not in err
        assert code in (0, 1), err
        if code == 1:
            assert re.search(r"^Apply failed: \d+ of \d+ patients not updated\.$", out, re.M), out
        new_client = restarted.client(
            (sb.env()["MEDPLUM_CLIENT_ID"], sb.env()["MEDPLUM_CLIENT_SECRET"])
        )
        assert_invariants(new_client, scenario)
        from tests.reliability.conftest import Sandbox

        again = Sandbox(restarted)
        code, _, err = run(
            again,
            "apply",
            scenario.manifests,
            "--auto-approve",
            "--allow-mass-grant",
            "--lock-timeout",
            "5s",
        )
        if code == 1 and "another apply holds the lock" in err:
            lock = next(
                iter(new_client.search_all("Basic", {"identifier": f"{LOCK_SYSTEM}|{LOCK_VALUE}"}))
            )
            unlock(run, again, lock["id"])
            code, _, err = run(
                again, "apply", scenario.manifests, "--auto-approve", "--allow-mass-grant"
            )
        assert code == 0, err
        assert assert_invariants(new_client, scenario) == set()
    finally:
        restarted.stop()


def test_server_lost_mid_apply_ends_with_the_summary_and_a_lock_line(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory("--latency-ms", "10", process=True)
    client = sb.client()
    scenario = build(client, tmp_path, n=60, compartment=0)
    initial = len(assert_invariants(client, scenario))
    proc = run_process(sb, "apply", scenario.manifests, "--auto-approve", "--allow-mass-grant",
                       "--parallelism", "2", "--timeout", "2")  # fmt: skip
    wait_for(lambda: initial - len(assert_invariants(client, scenario)) >= 3)
    assert sb.proc.proc is not None
    sb.proc.proc.send_signal(signal.SIGKILL)  # the server is gone for good
    code, out, err = finish(proc, timeout=180)
    assert code == 1, err
    assert re.search(r"^Apply failed: \d+ of \d+ patients not updated\.$", out, re.M), out
    assert "Traceback" not in err
    assert re.search(r"The apply lock Basic/\S+ was not released .*reconciler force-unlock \S+$",
                     err, re.M), err  # fmt: skip
