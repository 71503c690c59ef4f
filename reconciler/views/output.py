"""The one way anything is written. Results go to stdout, messages to stderr; when stdout
carries JSON (`--format json`), every human line goes to stderr.

Apply's events come from worker threads: every write happens under one lock, so a JSON-lines
stream parses line by line at any parallelism (Terraform's views, style.md). Every line is
scrubbed of known secrets first, whatever a server echoed.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterable
from typing import Any, TextIO

from reconciler.scrub import scrub


class Output:
    def __init__(self, *, json_stdout: bool = False) -> None:
        self.json_stdout = json_stdout  # stdout is reserved for JSON documents or lines
        self._lock = threading.Lock()

    @property
    def _results(self) -> TextIO:
        return sys.stderr if self.json_stdout else sys.stdout

    def result(self, line: str = "") -> None:
        """A line of the command's result (stderr when stdout is reserved for JSON)."""
        self._write(self._results, line + "\n")

    def results(self, lines: Iterable[str]) -> None:
        stream = self._results
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

    def json_line(self, data: dict[str, Any]) -> None:
        """One JSON-lines record on stdout; safe from any thread."""
        self._write(sys.stdout, json.dumps(data) + "\n")

    def prompt(self, text: str) -> str:
        """Ask on stderr, answer from stdin; no stdin to read from is no answer."""
        self._write(sys.stderr, text)
        try:
            answer = sys.stdin.readline() if sys.stdin is not None else ""
        except (OSError, ValueError):
            answer = ""
        if not answer.endswith("\n"):
            self._write(sys.stderr, "\n")  # no answer (end of input): end the prompt's line
        return answer

    def _write(self, stream: TextIO, text: str, *, flush: bool = True) -> None:
        text = scrub(text)  # whatever a server echoed, no known secret is printed
        with self._lock:
            stream.write(text)
            if flush:
                stream.flush()
