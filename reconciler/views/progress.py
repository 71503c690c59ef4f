"""Progress on stderr: a live line on a terminal, periodic log events otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

from reconciler.logs import get_logger, set_status_line

log = get_logger("reconciler.views.progress")


class Progress:
    def __init__(
        self, label: str, *, unit: str, total: int | None = None, every: int = 10_000
    ) -> None:
        self.label = label
        self.unit = unit  # what is counted, in the plural: "patients", "changes"
        self.total = total
        self.every = every
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_logged = 0
        self.done = 0
        self.extra: dict[str, Any] = {}

    def update(self, done: int, **extra: Any) -> None:
        self.done = done
        self.extra.update(extra)
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw >= 0.1:
                self._last_draw = now
                self._draw(now)
        elif done - self._last_logged >= self.every:
            self._last_logged = done
            log.info(self.label, done=done, total=self.total, unit=self.unit, **self.extra)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        parts = [f"{self.label}: {self.done:,}"]
        if self.total:
            parts[0] += f"/{self.total:,}"
        parts[0] += f" {self.unit}"
        parts.append(f"{rate:,.0f} {self.unit}/s")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"ETA {max(0.0, (self.total - self.done) / rate):.0f} s")
        parts += [f"{k} {v}" for k, v in self.extra.items() if v]
        set_status_line("  ".join(parts))

    def close(self) -> None:
        if self.tty and self._last_draw:
            set_status_line("")
