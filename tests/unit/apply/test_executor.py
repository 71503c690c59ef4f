"""apply/executor.py against the sandbox app: exact server state, the report, the events, and
what happens to a patient that moves between plan and write."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from reconciler.apply.events import ChangeFinished, Event
from reconciler.apply.executor import Executor
from reconciler.manifest import load_manifests
from reconciler.medplum.client import MedplumClient
from reconciler.plan.build import build_plan
from tests.integration.helpers import (
    accounts_by_ref,
    accounts_of,
    create_org,
    create_patients,
    tenant_yaml,
    write,
)


def _plan(client: MedplumClient, tmp_path: Path, org: str, refs: list[str]) -> Any:
    manifests = load_manifests([write(tmp_path, "t.yaml", tenant_yaml("t", org, refs))])
    plan, _ = build_plan(client, "sandbox:test", manifests)
    return plan


def test_applies_every_change_propagates_verifies_and_reports(
    client: MedplumClient, tmp_path: Path
) -> None:
    org = create_org(client)
    refs = create_patients(client, 7, compartment=2)
    plan = _plan(client, tmp_path, org, refs)
    events: list[Event] = []
    lock = threading.Lock()

    def sink(event: Event) -> None:
        with lock:
            events.append(event)

    report = Executor(client, plan.managed, parallelism=3, on_event=sink, batch_size=3).run(plan)
    assert (len(report.succeeded), len(report.failed), report.skipped) == (7, 0, 0)
    assert (report.added, report.removed, report.propagated) == (7, 0, 14)
    assert (report.verified, report.compartment_read, report.stragglers) == (True, 14, 0)
    assert all(a == [org] for a in accounts_by_ref(client, refs).values())
    for resource in client.read_compartments(refs):
        assert resource["meta"]["accounts"] == [{"reference": org}]
    finished = [e.ref for e in events if isinstance(e, ChangeFinished) and e.ok]
    assert sorted(finished) == sorted(refs)


def test_saved_plan_fails_a_patient_that_moved_and_a_deleted_one(
    client: MedplumClient, tmp_path: Path
) -> None:
    org, other = create_org(client), create_org(client)
    moved, deleted, fine = create_patients(client, 3)
    plan = _plan(client, tmp_path, org, [moved, deleted, fine])
    client.set_accounts(moved, [other])  # someone else wrote it after the plan
    client.delete_resource(*deleted.split("/"))
    report = Executor(client, plan.managed, verify=False).run(plan)
    reasons = {o.ref: o.reason for o in report.failed}
    assert set(reasons) == {moved, deleted}
    assert reasons[deleted] == "deleted during apply"
    assert reasons[moved].startswith("changed during apply (version ")
    assert accounts_of(client, moved) == [other]  # untouched
    assert accounts_of(client, fine) == [org]


def test_with_manifests_a_moved_patient_is_replanned_from_its_fresh_accounts(
    client: MedplumClient, tmp_path: Path
) -> None:
    org, legacy = create_org(client), create_org(client)
    moved, done_elsewhere = create_patients(client, 2)
    plan = _plan(client, tmp_path, org, [moved, done_elsewhere])
    client.set_accounts(moved, [legacy])  # an unmanaged account appeared: keep it
    client.set_accounts(done_elsewhere, [org])  # someone already made this change

    def replan(fresh: Any) -> Any:
        from reconciler.plan.planner import change_for

        after = [*fresh.accounts, *([org] if org not in fresh.accounts else [])]
        return change_for(fresh, after, plan.managed)

    report = Executor(client, plan.managed, verify=False, replan=replan).run(plan)
    assert (len(report.succeeded), report.skipped, len(report.failed)) == (1, 1, 0)
    assert accounts_of(client, moved) == [legacy, org]


def test_a_stop_request_starts_no_new_change(client: MedplumClient, tmp_path: Path) -> None:
    org = create_org(client)
    refs = create_patients(client, 5)
    plan = _plan(client, tmp_path, org, refs)
    executor = Executor(client, plan.managed, verify=False)
    executor.stop.set()
    report = executor.run(plan)
    assert report.interrupted and report.outcomes == []
    assert all(a == [] for a in accounts_by_ref(client, refs).values())


def test_changes_waiting_in_the_pool_queue_do_not_start_after_a_stop(
    client: MedplumClient, tmp_path: Path
) -> None:
    # At the full window a few changes wait in the pool's queue (pipeline.QUEUED_AHEAD): once
    # the phase is stopped, those are not written — only the ones already under way finish.
    org = create_org(client)
    refs = create_patients(client, 8)
    plan = _plan(client, tmp_path, org, refs)
    executor: Executor

    def stop_at_the_first(event: Event) -> None:
        if isinstance(event, ChangeFinished):
            executor.stop.set()

    executor = Executor(
        client, plan.managed, parallelism=2, verify=False, on_event=stop_at_the_first,
        batch_size=8,
    )  # fmt: skip
    report = executor.run(plan)
    written = [r for r, a in accounts_by_ref(client, refs).items() if a == [org]]
    assert report.interrupted
    assert 1 <= len(written) <= 2  # the first, and the one in flight beside it
    assert sorted(o.ref for o in report.outcomes) == sorted(written)


def _moving(client: MedplumClient, tmp_path: Path, count: int) -> tuple[list[str], Any]:
    """`count` patients with one compartment resource each, and the plan moving them."""
    org = create_org(client)
    refs = create_patients(client, count, compartment=1)
    return refs, _plan(client, tmp_path, org, refs)


def test_a_batch_is_re_read_and_sized_at_the_same_time(
    client: MedplumClient, tmp_path: Path, monkeypatch: Any
) -> None:
    # The preparation of a batch takes one read's time, not two: the compartment sizes are
    # asked for while the re-read is under way. Each read waits (5 s at most) for the other
    # to have started; one after the other, neither would see the other started.
    import reconciler.apply.executor as executor_module

    _, plan = _moving(client, tmp_path, 3)
    started = {"re-read": threading.Event(), "sizes": threading.Event()}
    overlapped: dict[str, bool] = {}
    real_read, real_sizes = executor_module.read_resources, client.compartment_sizes

    def meet(mine: str, other: str) -> None:
        started[mine].set()
        overlapped.setdefault(mine, started[other].wait(5))

    def read_resources(c: MedplumClient, batch_refs: Any) -> Any:
        meet("re-read", "sizes")
        return real_read(c, batch_refs)

    def compartment_sizes(batch_refs: Any, **kwargs: Any) -> dict[str, int]:
        meet("sizes", "re-read")
        return real_sizes(batch_refs, **kwargs)

    monkeypatch.setattr(executor_module, "read_resources", read_resources)
    monkeypatch.setattr(client, "compartment_sizes", compartment_sizes)
    report = Executor(client, plan.managed, verify=False).run(plan)
    assert overlapped == {"re-read": True, "sizes": True}
    assert (len(report.succeeded), report.sync_calls) == (3, 3)  # the sizes were used


def test_a_sizes_read_that_breaks_fails_the_apply_as_a_re_read_would(
    client: MedplumClient, tmp_path: Path, monkeypatch: Any
) -> None:
    # A server error there only means unknown sizes (the calls go async); anything else is a
    # bug, raised on the thread that prepares the batch, never swallowed on the helper thread.
    refs, plan = _moving(client, tmp_path, 2)

    def broken(batch_refs: Any, **kwargs: Any) -> dict[str, int]:
        raise RuntimeError("sizes broke")

    monkeypatch.setattr(client, "compartment_sizes", broken)
    with pytest.raises(RuntimeError, match="sizes broke"):
        Executor(client, plan.managed, verify=False).run(plan)
    assert all(a == [] for a in accounts_by_ref(client, refs).values())  # nothing written
