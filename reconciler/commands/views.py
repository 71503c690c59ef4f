"""Views: the one way commands write. Results go to stdout, messages to stderr; with
`--format json`, stdout carries only JSON lines and every human line goes to stderr.

Apply's events come from worker threads: every write happens under one lock, so a JSON-lines
stream parses line by line at any parallelism (Terraform's views, style.md).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterable
from typing import Any

from reconciler.scrub import scrub


class View:
    def __init__(self, *, json_events: bool = False) -> None:
        self.json_events = json_events
        self._lock = threading.Lock()

    def result(self, line: str = "") -> None:
        """A line of the command's result (stderr when stdout is reserved for JSON)."""
        self._write(sys.stderr if self.json_events else sys.stdout, line + "\n")

    def results(self, lines: Iterable[str]) -> None:
        stream = sys.stderr if self.json_events else sys.stdout
        for line in lines:
            self._write(stream, line + "\n", flush=False)
        with self._lock:
            stream.flush()

    def raw(self, text: str) -> None:
        """Text for stdout as it is (a markdown or JSON document)."""
        self._write(sys.stdout, text)

    def message(self, line: str = "") -> None:
        """A diagnostic or hint: always stderr, never mixed into a result someone pipes."""
        self._write(sys.stderr, line + "\n")

    def event(self, name: str, data: dict[str, Any]) -> None:
        """A JSON-lines event on stdout (only with --format json); safe from any thread."""
        if self.json_events:
            self._write(sys.stdout, json.dumps({"event": name, **data}) + "\n")

    def prompt(self, text: str) -> str:
        self._write(sys.stderr, text)
        return sys.stdin.readline()

    def _write(self, stream: Any, text: str, *, flush: bool = True) -> None:
        text = scrub(text)  # whatever a server echoed, no known secret is printed
        with self._lock:
            stream.write(text)
            if flush:
                stream.flush()
