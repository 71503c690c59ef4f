"""`reconciler diff` as text (a terminal, a CI log) or markdown (a pull request's summary: one
```diff block per tenant, so GitHub colours what is added and removed)."""

from __future__ import annotations

from reconciler.manifest.diff import ManifestDiff, Status
from reconciler.plan.render import plural
from reconciler.views.output import Output

NO_DIFFERENCES = "No differences: the manifests declare the same tenants, selectors and access."


def summary_line(diff: ManifestDiff) -> str:
    c = diff.counts
    return (
        f"Diff against {diff.base}: {plural(diff.count(Status.ADDED), 'tenant')} added, "
        f"{diff.count(Status.REMOVED):,} removed, {diff.count(Status.CHANGED):,} changed; "
        f"patient selectors +{c.patients[0]:,} -{c.patients[1]:,}, resource selectors "
        f"+{c.resources[0]:,} -{c.resources[1]:,}, grants +{c.grants[0]:,} -{c.grants[1]:,}, "
        f"members +{c.members[0]:,} -{c.members[1]:,}."
    )


class DiffView:
    def __init__(self) -> None:
        self.out = Output()

    def diff(self, diff: ManifestDiff) -> None:
        if diff.empty:
            self.out.result(f"{NO_DIFFERENCES} (against {diff.base})")
            return
        for tenant in diff.tenants:
            self.out.result(f"tenant {tenant.name} ({tenant.status.value}, {tenant.file})")
            for line in tenant.lines:
                self.out.result(f"  {line.sign} {line.text}")
            self.out.result()
        self.out.result(summary_line(diff))


class MarkdownDiffView(DiffView):
    def diff(self, diff: ManifestDiff) -> None:
        lines = ["### Medplum tenancy: manifest changes", ""]
        if diff.empty:
            self.out.raw("\n".join([*lines, f"{NO_DIFFERENCES} (against `{diff.base}`)", ""]))
            return
        lines += [f"**{summary_line(diff)}**", ""]
        for tenant in diff.tenants:
            lines += [f"#### Tenant `{tenant.name}` ({tenant.status.value})", "", "```diff"]
            lines += [
                f"{line.sign if line.sign != '~' else '!'} {line.text}" for line in tenant.lines
            ]
            lines += ["```", ""]
        self.out.raw("\n".join(lines) + "\n")


DIFF_VIEWS: dict[str, type[DiffView]] = {"text": DiffView, "markdown": MarkdownDiffView}
