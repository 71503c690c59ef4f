"""The estimate's compartment-sizes read: in searches of COMPARTMENT_BATCH patients, a few at
a time, every asked patient answered once."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, cast

from reconciler.medplum.client import MedplumClient
from reconciler.medplum.reads import COMPARTMENT_BATCH
from reconciler.plan.estimate import read_sizes
from reconciler.plan.live import MAX_READS_IN_FLIGHT


class Sizes:
    """A server whose patient i has i % 7 compartment resources; the first `meet` searches
    each wait until all of them are running at once (or 2 s), so overlap is seen, not timed."""

    def __init__(self, meet: int) -> None:
        self.calls: list[list[str]] = []
        self.barrier = threading.Barrier(meet)
        self._lock = threading.Lock()

    def compartment_sizes(self, refs: Any) -> dict[str, int]:
        with self._lock:
            self.calls.append(list(refs))
            first = len(self.calls) <= self.barrier.parties
        if first:
            with contextlib.suppress(threading.BrokenBarrierError):
                self.barrier.wait(2)
        return {ref: int(ref.split("/")[1]) % 7 for ref in refs}


REFS = [f"Patient/{i}" for i in range(5 * COMPARTMENT_BATCH + 3)]


def test_sizes_are_read_a_few_searches_at_a_time() -> None:
    server = Sizes(meet=MAX_READS_IN_FLIGHT)
    sizes = read_sizes(cast(MedplumClient, server), REFS, parallelism=10)
    assert sizes == {ref: int(ref.split("/")[1]) % 7 for ref in REFS}
    assert sorted(len(call) for call in server.calls) == [3] + [COMPARTMENT_BATCH] * 5
    assert not server.barrier.broken  # the first four met: they ran at the same time


def test_one_at_a_time_is_one_search_of_every_patient_a_batch() -> None:
    server = Sizes(meet=1)
    assert read_sizes(cast(MedplumClient, server), REFS, parallelism=1) == {
        ref: int(ref.split("/")[1]) % 7 for ref in REFS
    }
    assert server.calls == [REFS]  # compartment_sizes cuts it into searches itself
    assert read_sizes(cast(MedplumClient, server), [], parallelism=4) == {}
