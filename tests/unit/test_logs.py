"""Log lines never tear the progress line; secrets never reach a log line."""

from __future__ import annotations

import json
from typing import Any

from reconciler import logs, scrub


def test_a_log_line_clears_the_progress_line_and_redraws_it(capsys: Any) -> None:
    logs.configure("json", 0, color=False)
    logs.set_status_line("applying: 3/10")
    logs.get_logger("t").warning("patient", patient="Patient/p1", result="failed")
    logs.set_status_line("")
    err = capsys.readouterr().err
    clear, status = "\r\x1b[K", "applying: 3/10"
    # drawn; cleared for the log line; the log line; redrawn under it; cleared at the end
    assert err.startswith(clear + status + clear) and err.endswith("\n" + status + clear)
    line = err.removeprefix(clear + status + clear).removesuffix("\n" + status + clear)
    assert json.loads(line)["event"] == "patient"


def test_known_secrets_are_masked_in_log_lines(capsys: Any) -> None:
    scrub.register("very-secret-value-123")
    logs.configure("json", 0, color=False)
    logs.get_logger("t").warning("server said", error="bad very-secret-value-123 here")
    assert "very-secret-value-123" not in capsys.readouterr().err
