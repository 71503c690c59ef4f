"""`plan` and `show`: a Plan as text (streamed), JSON (streamed) or markdown, chosen by name."""

from __future__ import annotations

import json
import sys

from reconciler.model import Plan
from reconciler.plan.jsonform import summary_json, write_plan_json
from reconciler.plan.render import (
    iter_summary,
    iter_text,
    render_markdown,
    render_markdown_summary,
    use_color,
    warning_prefix,
)
from reconciler.plan.signing import PlanKey
from reconciler.views.output import Output


class PlanView:
    """The text plan; the base of the others (the hints are the same in every format)."""

    json_stdout = False

    def __init__(self, out: Output | None = None) -> None:
        self.out = out or Output(json_stdout=self.json_stdout)

    def plan(self, plan: Plan) -> None:
        self.out.results(iter_text(plan, color=use_color(sys.stdout.isatty())))

    def summary(self, plan: Plan) -> None:
        """With `--out`: the counts only; the file holds the plan (what CI logs show)."""
        self.out.results(iter_summary(plan))

    def removals_over_limit(self, removed: int, limit: int) -> None:
        # A diagnostic of this run, not part of the plan: a saved plan (and its digest) does
        # not depend on which flags the person who planned it gave.
        self.out.message(
            f"{warning_prefix(use_color(sys.stderr.isatty()))} the plan removes {removed:,} "
            "accounts, more than --max-removals "
            f"{limit:,}; apply will refuse"
        )

    def saved(self, path: str, key: PlanKey) -> None:
        if key.created:  # said once: the file that signs every plan this user saves
            self.out.message(
                f"Created the plan-signing key {key.source} (private to this user; CI uses "
                "RECONCILER_PLAN_KEY instead)."
            )
        self.out.message(
            f"\nSaved the plan to {path} (mode 0600: it names patients). See it with:\n"
            f"    reconciler show {path}\n"
            "To apply exactly these changes, run:\n"
            f"    reconciler apply {path}"
        )


class JsonPlanView(PlanView):
    json_stdout = True

    def plan(self, plan: Plan) -> None:
        write_plan_json(plan, sys.stdout)  # streamed: large plans are never one string
        sys.stdout.flush()

    def summary(self, plan: Plan) -> None:
        self.out.raw(json.dumps(summary_json(plan), indent=2) + "\n")


class MarkdownPlanView(PlanView):
    def plan(self, plan: Plan) -> None:
        self.out.raw(render_markdown(plan))

    def summary(self, plan: Plan) -> None:
        self.out.raw(render_markdown_summary(plan))


PLAN_VIEWS: dict[str, type[PlanView]] = {
    "text": PlanView,
    "json": JsonPlanView,
    "markdown": MarkdownPlanView,
}


def plan_view(fmt: str) -> PlanView:
    return PLAN_VIEWS[fmt]()
