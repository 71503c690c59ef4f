"""reconciler/memory.py: one malloc arena on glibc, nothing touched elsewhere."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from reconciler import memory


def test_off_linux_nothing_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")

    def refuse(*_: object) -> None:
        raise AssertionError("no libc is loaded off Linux")

    monkeypatch.setattr(ctypes, "CDLL", refuse)
    memory.one_malloc_arena()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_on_linux_threads_then_allocate_without_harm() -> None:
    # In a fresh process, as the CLI does it: set before any thread, then threads allocate.
    code = (
        "from reconciler import memory; memory.one_malloc_arena()\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "with ThreadPoolExecutor(4) as pool:\n"
        "    sizes = list(pool.map(lambda n: len(bytearray(n)), [10**6] * 16))\n"
        "print(sum(sizes))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(16 * 10**6)
