"""Process memory settings for the big commands, set once before any thread starts."""

from __future__ import annotations

import ctypes
import sys

M_ARENA_MAX = -8  # glibc's mallopt parameter


def one_malloc_arena() -> None:
    """glibc gives each thread that allocates its own malloc arena, and what one thread's
    arena frees the others never reuse: the plan's four reader threads each grew one for
    their pages. One arena costs nothing here — CPython allocates holding the GIL, so threads
    never malloc at once. Measured: plan over 200,000 patients 159 -> 148 MB peak RSS.
    Elsewhere (macOS, musl: no mallopt) nothing is changed."""
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mallopt(M_ARENA_MAX, 1)
