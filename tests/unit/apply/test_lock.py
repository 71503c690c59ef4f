"""apply/lock.py against the sandbox app."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.apply.lock import ApplyLock, force_unlock
from reconciler.errors import ApplyRefused, LockLost
from reconciler.medplum.client import MedplumClient


def test_lock_is_exclusive_released_and_an_expired_one_taken_over(client: MedplumClient) -> None:
    first = ApplyLock(client, plan_digest="sha256:a", ttl_s=600)
    first.acquire()
    second = ApplyLock(client, plan_digest="sha256:b", ttl_s=600)
    with pytest.raises(ApplyRefused, match="another apply holds the lock") as info:
        second.acquire()
    assert info.value.args[0].endswith(f"reconciler force-unlock {first.info.id}")  # type: ignore[union-attr]
    first.release()
    second.acquire()  # free again
    second.release()
    stale = ApplyLock(client, plan_digest="sha256:c", ttl_s=0.05)
    stale.acquire()
    stale._stop.set()  # a crashed apply: never renewed, never released
    time.sleep(1.1)  # past its TTL on the server's clock (a Date header has 1 s resolution)
    taker = ApplyLock(client, plan_digest="sha256:d", ttl_s=600)
    taker.acquire()  # expired: taken over with If-Match on the version it saw
    assert taker.info is not None and stale.info is not None
    assert taker.info.id == stale.info.id and taker.info.run == taker.run_id
    stale.release()  # the old holder must not delete a lock it lost
    assert client.read_resource("Basic", taker.info.id)["id"] == taker.info.id
    taker.release()


def test_force_unlock_removes_only_lock_records(client: MedplumClient) -> None:
    other = client.create_resource({"resourceType": "Basic", "code": {"text": "not a lock"}})
    with pytest.raises(ApplyRefused, match="is not a reconciler apply lock"):
        force_unlock(client, other["id"])
    lock = ApplyLock(client, plan_digest="sha256:e")
    lock.acquire()
    lock._stop.set()
    assert lock.info is not None
    with pytest.raises(ApplyRefused, match="is live: held by"):
        force_unlock(client, lock.info.id)  # renewed within its TTL: an apply may be writing
    assert force_unlock(client, lock.info.id, force=True).id == lock.info.id
    after = ApplyLock(client, plan_digest="sha256:f")
    after.acquire()  # the lock is free again
    after.release()


def test_release_never_raises_and_says_how_to_clear_a_lock_it_could_not_remove(
    client: MedplumClient,
) -> None:
    lock = ApplyLock(client, plan_digest="sha256:gone")
    lock.acquire()
    lock._stop.set()
    assert lock.info is not None
    lock_id = lock.info.id
    # The server is gone: one quick DELETE (a second Ctrl-C), no retries, a line to act on.
    lock.client = MedplumClient("http://127.0.0.1:9", "c", "s3cr3t-x", timeout=1, max_retries=0)
    started = time.monotonic()
    note = lock.release(quick=True)
    assert time.monotonic() - started < 5
    assert note is not None and note.startswith(f"The apply lock Basic/{lock_id} was not released")
    assert note.endswith(f"or remove it with: reconciler force-unlock {lock_id}")


def shifted(minutes: float) -> Any:
    return lambda: datetime.now(UTC) + timedelta(minutes=minutes)


@pytest.mark.parametrize(("holder", "other"), [(-15, +15), (+15, -15), (-15, 0), (0, +15)])
def test_no_local_clock_lets_another_apply_take_over_a_live_lock(
    client: MedplumClient, holder: float, other: float
) -> None:
    """The lease is judged on the server's clock (its Date header against the lock's
    lastUpdated + TTL): a holder 15 minutes slow, or a taker 15 minutes fast, changes nothing."""
    first = ApplyLock(client, plan_digest="sha256:a", ttl_s=600, wall=shifted(holder))
    first.acquire()
    second = ApplyLock(client, plan_digest="sha256:b", ttl_s=600, wall=shifted(other))
    with pytest.raises(ApplyRefused, match="another apply holds the lock"):
        second.acquire()
    first.ensure_held()  # and the holder still knows it holds it
    first.release()


def test_an_expired_lease_is_expired_whatever_the_local_clocks_say(client: MedplumClient) -> None:
    slow = ApplyLock(client, plan_digest="sha256:a", ttl_s=1, wall=shifted(+15))
    slow.acquire()
    slow._stop.set()  # never renewed
    fast = ApplyLock(client, plan_digest="sha256:b", ttl_s=600, wall=shifted(-15))
    with pytest.raises(ApplyRefused):
        fast.acquire()  # still within its second on the server's clock
    time.sleep(2.1)  # past it, on the server's clock (Date has 1 s resolution)
    fast.acquire()
    with pytest.raises(LockLost):
        slow.ensure_held()  # and the old holder, on its own monotonic clock, stopped writing
    fast.release()


def test_the_holder_confirms_its_lock_and_stops_when_it_is_replaced(client: MedplumClient) -> None:
    lock = ApplyLock(client, plan_digest="sha256:a", ttl_s=600)
    lock.acquire()
    lock.confirm()
    assert lock.info is not None
    record = client.read_resource("Basic", lock.info.id)
    ext = [e for e in record["extension"] if not e["url"].endswith("#run")]
    client.update_resource({**record, "extension": [*ext, {
        "url": "https://github.com/medplum-tenancy-reconciler/lock#run", "valueString": "other"}]})  # fmt: skip
    with pytest.raises(LockLost, match="another apply holds it now"):
        lock.confirm()
    with pytest.raises(LockLost):
        lock.ensure_held()  # and every write after
    lock.release()
