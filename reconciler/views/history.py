"""`reconciler history` as text (one block per run), markdown (a table for a job summary) or
JSON (one document)."""

from __future__ import annotations

import json

from reconciler.apply.history import Run
from reconciler.plan.render import plural
from reconciler.views.output import Output


def _short(digest: str) -> str:
    return digest[:19] if digest else "-"  # "sha256:" and 12 hex digits: enough to cite


def _outcome(run: Run) -> str:
    return "succeeded" if run.succeeded else "FAILED"


class HistoryView:
    def __init__(self) -> None:
        self.out = Output(json_stdout=False)

    def runs(self, runs: list[Run], limit: int) -> None:
        if not runs:
            self.out.result("No applies recorded (no AuditEvent written by the reconciler).")
            return
        for run in runs:
            self.out.result(f"{run.recorded}  {run.action}  {_outcome(run)}  by {run.client}")
            what = ", ".join(run.headline) or "no changes counted"
            self.out.result(f"  {run.outcome}: {what}")
            where = f"  plan {_short(run.plan_digest)}  manifests {_short(run.manifests_digest)}"
            if run.git_commit:
                where += f"  commit {run.git_commit[:12]}"
            self.out.result(where)
            if run.ci_run_url:
                self.out.result(f"  CI run {run.ci_run_url}")
            self.out.result(f"  AuditEvent/{run.id}  {run.tool_version}".rstrip())
            self.out.result()
        more = " (--limit for more)" if len(runs) == limit else ""
        self.out.result(f"{plural(len(runs), 'run')} shown, newest first{more}.")


class MarkdownHistoryView(HistoryView):
    def runs(self, runs: list[Run], limit: int) -> None:
        lines = ["### Medplum tenancy: recent applies", ""]
        if not runs:
            self.out.raw("\n".join([*lines, "No applies recorded.", ""]) + "\n")
            return
        lines += [
            "| Recorded | Action | Outcome | Client | Changes | Plan | Manifests | Commit "
            "| CI run |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for run in runs:
            run_link = f"[run]({run.ci_run_url})" if run.ci_run_url else ""
            cells = [
                run.recorded, run.action, f"{_outcome(run)}: {run.outcome}", f"`{run.client}`",
                ", ".join(run.headline) or "-", f"`{_short(run.plan_digest)}`",
                f"`{_short(run.manifests_digest)}`",
                f"`{run.git_commit[:12]}`" if run.git_commit else "", run_link,
            ]  # fmt: skip
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        self.out.raw("\n".join([*lines, ""]) + "\n")


class JsonHistoryView(HistoryView):
    def runs(self, runs: list[Run], limit: int) -> None:
        self.out.raw(json.dumps({"runs": [r.to_json() for r in runs]}, indent=2) + "\n")


HISTORY_VIEWS: dict[str, type[HistoryView]] = {
    "text": HistoryView,
    "markdown": MarkdownHistoryView,
    "json": JsonHistoryView,
}
