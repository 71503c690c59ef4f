"""`apply`: the plan, the prompt, progress while writing, and the result — as text, or as
JSON-lines events on stdout (`--format json`: every human line then goes to stderr)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from reconciler.apply.events import (
    ApplyStarted,
    ChangeCorrected,
    ChangeFinished,
    Event,
    MembershipFinished,
)
from reconciler.apply.report import Report
from reconciler.apply.session import ApplyResult, Ending
from reconciler.model import Plan
from reconciler.plan.render import iter_text, plural, use_color
from reconciler.views.output import Output
from reconciler.views.progress import Progress

PROMPT = "Do you want to apply these changes to {target}? Only 'yes' will be accepted: "


class ApplyView:
    """Text: the plan, a progress line while writing, the result lines."""

    json_stdout = False

    def __init__(self) -> None:
        self.out = Output(json_stdout=self.json_stdout)
        self._progress: Progress | None = None

    # --- before writing --------------------------------------------------------------------

    def plan(self, plan: Plan) -> None:
        self.out.results(iter_text(plan, color=use_color(sys.stdout.isatty())))

    def nothing_to_do(self) -> None:
        """The plan was empty: nothing written."""

    def prompt(self, target: str) -> str:
        return self.out.prompt("\n" + PROMPT.format(target=target))

    # --- while writing (the session's Observer) --------------------------------------------

    def event(self, event: Event) -> None:
        """Text shows progress instead of events."""

    def start(self, total: int) -> None:
        self._progress = Progress("applying", unit="changes", total=total)

    def progress(self, done: int, failed: int) -> None:
        if self._progress is not None:
            self._progress.update(done, failed=failed, waiting="")

    def waiting(self, delay_s: float) -> None:
        if self._progress is not None:
            self._progress.update(self._progress.done, waiting=f"for quota, {delay_s:.0f}s")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.close()

    def message(self, line: str) -> None:
        self.out.message(line)

    # --- after ------------------------------------------------------------------------------

    def result(self, result: ApplyResult, target: str) -> None:
        self.out.result()
        self.out.result(f"Target: {target}")
        self.out.results(result_lines(result))


def result_lines(result: ApplyResult) -> Iterator[str]:
    report, access = result.report, result.access
    accounts = (
        f"{plural(report.added, 'account')} added, {plural(report.removed, 'account')} removed"
    )
    who = plural(len(report.succeeded_patients), "patient")
    if report.resources_planned:
        who += f" and {plural(len(report.succeeded_resources), 'other resource')}"
    done = f"{who}, {accounts}"  # the design's "Updated: M patients, …"
    access_line = (
        f"Access updated: {plural(access.granted, 'grant')} added, "
        f"{plural(access.revoked, 'grant')} revoked, on "
        f"{plural(len(access.updated), 'membership')}."
    )
    ending = result.ending
    if ending is Ending.LOCK_LOST:
        yield (
            f"Apply failed: {report.lock_lost}; no new write was started after that. "
            f"{report.not_updated} of {report.planned + report.resources_planned} changes "
            "not made; run plan again."
        )
        yield from (f"  {line}" for line in result.failures)
    elif ending is Ending.INTERRUPTED:
        yield f"Apply interrupted: {report.not_updated} of {report.planned} patients not updated."
    elif ending is Ending.FAILED:
        parts = []
        if report.failed_patients or not (access.failed or report.failed_resources):
            parts.append(f"{len(report.failed_patients)} of {report.planned} patients")
        if report.failed_resources:
            parts.append(
                f"{len(report.failed_resources)} of {report.resources_planned} other resources"
            )
        if access.failed:
            parts.append(f"{len(access.failed)} of {access.planned} memberships")
        yield f"Apply failed: {' and '.join(parts)} not updated."
        yield from (f"  {line}" for line in result.failures)
    elif ending is Ending.UNCHECKED:
        count = len(report.foreign_unchecked)
        yield (
            f"Apply finished with {plural(count, 'unchecked resource')}: every change was made, "
            "but whether a write of ours overwrote another writer's change could not be "
            "checked for them; run plan again and look at them."
        )
    if ending is not Ending.COMPLETE:
        yield f"Updated: {done}."
        if access.planned:
            yield access_line
        if ending in (Ending.FAILED, Ending.UNCHECKED):
            yield from foreign_lines(report)
        return
    yield f"Apply complete! {who} updated, {accounts}."
    if access.planned:
        yield access_line
    if report.propagated:
        yield f"Propagated to {plural(report.propagated, 'compartment resource')}."
    if report.verified:
        yield (
            f"Verified {plural(report.compartment_read, 'compartment resource')}: "
            f"{report.stragglers} stragglers found, {report.repaired} repaired."
        )
    if report.skipped:
        yield f"{plural(report.skipped, 'patient')} already matched when re-read; skipped."
    yield from foreign_lines(report)


def foreign_lines(report: Report) -> list[str]:
    """Other writers' changes during the apply: what was made good, and what could not be
    checked (the server's history did not tell) — never silently assumed fine."""
    lines = [
        f"Checked a run that did not finish ({item.run}): "
        f"{plural(item.restored, 'unmanaged account')} another writer set put back, "
        f"{item.dropped} taken out again."
        for item in report.recovered
    ]
    if report.foreign_restored or report.foreign_dropped:
        lines.append(
            "Kept other writers' changes made during apply: "
            f"{plural(report.foreign_restored, 'unmanaged account')} put back, "
            f"{report.foreign_dropped} taken out again."
        )
    if report.foreign_unchecked:
        lines.append(
            f"Could not check {plural(len(report.foreign_unchecked), 'resource')} for other "
            "writers' changes made during apply; run plan again and look at them:"
        )
        lines += [f"  {line}" for line in report.foreign_unchecked[:10]]
        if len(report.foreign_unchecked) > 10:
            lines.append(f"  ... and {len(report.foreign_unchecked) - 10} more")
    return lines


class JsonApplyView(ApplyView):
    """JSON lines on stdout: apply_start, change_complete / change_errored, change_corrected,
    membership_complete / membership_errored, apply_summary. Human lines go to stderr."""

    json_stdout = True

    def plan(self, plan: Plan) -> None:
        if plan.is_empty:  # the one plan line that tells something: "No changes."
            self.out.results(iter_text(plan, color=False))

    def nothing_to_do(self) -> None:
        self.out.json_line(
            {"event": "apply_summary", "planned": 0, "updated": 0, "added": 0, "removed": 0,
             "failed": 0}
        )  # fmt: skip

    def event(self, event: Event) -> None:
        self.out.json_line(event_json(event))

    def result(self, result: ApplyResult, target: str) -> None:
        self.out.json_line(summary_json(result))
        super().result(result, target)


def _who(ref: str, is_patient: bool) -> dict[str, str]:
    return {("patient" if is_patient else "resource"): ref}


def event_json(event: Event) -> dict[str, Any]:
    if isinstance(event, ApplyStarted):
        return {
            "event": "apply_start",
            "patients": event.patients,
            "resources": event.resources,
            "add": event.add,
            "remove": event.remove,
            "memberships": event.memberships,
            "grants": event.grants,
            "revocations": event.revocations,
            "server": event.server,
        }
    if isinstance(event, ChangeFinished):
        return {
            "event": "change_complete" if event.ok else "change_errored",
            **_who(event.ref, event.is_patient),
            "add": list(event.add),
            "remove": list(event.remove),
            "duration_ms": event.duration_ms,
            **({"error": event.error} if event.error else {}),
        }
    if isinstance(event, ChangeCorrected):
        return {
            "event": "change_corrected",
            **_who(event.ref, event.is_patient),
            "restored": list(event.restored),
            "dropped": list(event.dropped),
        }
    assert isinstance(event, MembershipFinished)
    return {
        "event": "membership_complete" if event.ok else "membership_errored",
        "membership": event.membership,
        "grant": [i.to_json() for i in event.grant],
        "revoke": [i.to_json() for i in event.revoke],
        **({"error": event.error} if event.error else {}),
    }


def summary_json(result: ApplyResult) -> dict[str, Any]:
    report, access = result.report, result.access
    return {
        "event": "apply_summary",
        "planned": report.planned,
        "updated": len(report.succeeded_patients),
        "added": report.added,
        "removed": report.removed,
        "failed": len(report.failed),
        "resources_planned": report.resources_planned,
        "resources_updated": len(report.succeeded_resources),
        "skipped": report.skipped,
        "verified": report.verified,
        "stragglers": report.stragglers,
        "repaired": report.repaired,
        "propagated": report.propagated,
        "interrupted": report.interrupted,
        "lock_lost": report.lock_lost,
        "foreign_restored": report.foreign_restored,
        "foreign_dropped": report.foreign_dropped,
        "foreign_unchecked": len(report.foreign_unchecked),
        "memberships_planned": access.planned,
        "memberships_updated": len(access.updated),
        "memberships_failed": len(access.failed),
        "grants": access.granted,
        "revocations": access.revoked,
        "sync_calls": report.sync_calls,
        "async_calls": report.async_calls,
        "points_estimated": report.points_estimated,
        "points_spent": report.points_spent,
    }


APPLY_VIEWS: dict[str, type[ApplyView]] = {"text": ApplyView, "json": JsonApplyView}
