"""Fencing: an apply that loses its lock (paused past its TTL while another apply took the lock
over) starts no write after that, reports it, and the other apply's result stands."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from tests.integration.helpers import (
    accounts_by_ref,
    create_org,
    create_patients,
    tenant_yaml,
    write,
)
from tests.reliability.conftest import FIGURES, finish, run_process
from tests.reliability.test_crash import wait_for

Run = Any


def test_a_paused_apply_that_lost_its_lock_writes_nothing_more(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory("--latency-ms", "20")
    client = sb.client()
    north, south = create_org(client), create_org(client)
    refs = create_patients(client, 60)
    first = tmp_path / "first"
    second = tmp_path / "second"
    first.mkdir()
    second.mkdir()
    # The first apply puts everyone into north (without propagation, to keep writes simple);
    # the second, run while the first is paused, puts everyone into south instead.
    write(
        first,
        "t.yaml",
        tenant_yaml("north", north, refs, propagate=False)
        + "---\n"
        + tenant_yaml("south", south, [refs[0]], membership="additive", propagate=False),
    )
    write(second, "t.yaml", tenant_yaml("north", north, [refs[0]], propagate=False) + "---\n"
          + tenant_yaml("south", south, refs, propagate=False))  # fmt: skip
    proc = run_process(sb, "apply", str(first), "--auto-approve", "--allow-mass-grant",
                       "--parallelism", "1", "--lock-ttl", "1.5s", "--timeout", "0.75",
                       "--no-verify")  # fmt: skip
    wait_for(lambda: sum(north in a for a in accounts_by_ref(client, refs).values()) >= 5)
    proc.send_signal(signal.SIGSTOP)  # a long GC pause, a suspended laptop, a stuck VM
    time.sleep(2.0)  # past the first apply's lock TTL
    code, out, err = run(sb, "apply", str(second), "--auto-approve", "--allow-mass-grant",
                         "--allow-mass-removal", "--lock-timeout", "10s", "--no-verify")  # fmt: skip
    assert code == 0, err
    assert "took over an expired apply lock" in err
    after_second = accounts_by_ref(client, refs)
    proc.send_signal(signal.SIGCONT)
    code, out, _ = finish(proc)
    FIGURES["paused applies that lost their lock"] += 1
    assert code == 1, out
    assert "Apply failed: lost the apply lock" in out
    # The second apply's result stands: at most the one write the first had already sent
    # when it was paused may land after it (it was under way with the lock held).
    now = accounts_by_ref(client, refs)
    changed = [r for r in refs if now[r] != after_second[r]]
    assert len(changed) <= 1, changed
    assert all(south in now[r] for r in refs[1:] if r not in changed)


def test_a_lock_ttl_shorter_than_twice_the_request_timeout_is_refused(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    """The lock must outlive a write in flight: a TTL the request deadline could outlast is a
    usage error before anything is read or written."""
    sb = sandbox_factory()
    client = sb.client()
    north = create_org(client)
    refs = create_patients(client, 3)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("north", north, refs))
    before = sb.snapshot()
    code, out, err = run(sb, "apply", manifests, "--auto-approve", "--lock-ttl", "50s",
                         "--timeout", "30")  # fmt: skip
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "Error: --lock-ttl 50s is too short for --timeout 30s: the lock must outlive a write in "
        "flight, so give a TTL of at least twice the request timeout; nothing was read or written"
    )
    assert out == "" and sb.snapshot() == before
    code, out, err = run(sb, "apply", manifests, "--auto-approve", "--lock-ttl", "60s",
                         "--timeout", "30")  # fmt: skip
    assert code == 0, err
