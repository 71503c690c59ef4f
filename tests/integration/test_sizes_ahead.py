"""Compartment sizes read once: apply's own plan sizes its first patients exactly and its
writes use those sizes while fresh; a saved plan, or sizes gone stale, are read batch by batch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import reconciler.apply.calls
import reconciler.plan.estimate
from reconciler.medplum.client import MedplumClient
from reconciler.plan.estimate import Extras, overhead_points
from tests.integration.helpers import (
    accounts_by_ref,
    accounts_of,
    log_events,
    run_cli,
    seed_store,
    tenant_yaml,
    write,
)

PATIENTS = 60
APPLY = ("--auto-approve", "--allow-mass-grant")


@dataclass
class Moving:
    """60 patients with 2 Observations each, all moving into `org`."""

    sb: Any
    refs: list[str]
    org: str
    manifests: str
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    def run(self, *args: str) -> tuple[str, dict[str, Any]]:
        """The CLI run, exit 0; its stdout and its `quota` event (apply) or {} (plan)."""
        code, out, err = run_cli(self.sb, self.monkeypatch, self.capsys, *args)
        assert code == 0, out + err
        events = log_events(err)
        return out, next((e for e in events if e.get("event") == "quota"), {})

    def all_moved(self) -> bool:
        found = accounts_by_ref(self.sb.client(), self.refs).values()
        return set(map(tuple, found)) == {(self.org,)}


@pytest.fixture
def moving(
    make_sandbox: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Moving:
    data = str(tmp_path / "sizes.sqlite")
    org, refs = seed_store(data, patients=PATIENTS, compartment=2)
    sb = make_sandbox("--fhir-quota", "1000000", data=data)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("moving", org, refs))
    return Moving(sb, refs, org, manifests, monkeypatch, capsys)


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """Every compartment_sizes call's patients, in order."""
    calls: list[list[str]] = []
    real = MedplumClient.compartment_sizes

    def recording(self: MedplumClient, refs: Any, **kwargs: Any) -> dict[str, int]:
        calls.append(list(refs))
        return real(self, calls[-1], **kwargs)

    monkeypatch.setattr(MedplumClient, "compartment_sizes", recording)
    monkeypatch.setattr(reconciler.plan.estimate, "SAMPLE", 20)  # a plan samples 20 of 60
    yield calls


def _overhead(extras: Extras) -> int:
    return overhead_points(PATIENTS, PATIENTS, PATIENTS * 2, sized=PATIENTS, extras=extras)


def test_apply_sizes_every_compartment_once_in_its_plan(
    moving: Moving, asked: list[list[str]]
) -> None:
    _, quota = moving.run("apply", moving.manifests, *APPLY)
    # One read, in the plan, of every patient (not a sample of 20): the batches asked nothing.
    assert [sorted(call) for call in asked] == [sorted(moving.refs)]
    assert (quota["sync_calls"], quota["async_calls"]) == (PATIENTS, 0)  # the sizes were used
    assert moving.all_moved()
    # Exact sizes, exact arithmetic: 60 synchronous calls of 120 + 100·2, and the overhead.
    assert quota["points_estimated"] == 60 * 320 + _overhead(Extras())
    assert abs(quota["points_spent"] - quota["points_estimated"]) <= 0.1 * quota["points_spent"]


def test_apply_estimates_what_its_options_leave_out(moving: Moving, asked: list[list[str]]) -> None:
    # No lock, no audit record, no verification: none of their points in apply's estimate.
    off = ("--lock=false", "--no-audit", "--no-verify")
    _, quota = moving.run("apply", moving.manifests, *APPLY, *off)
    bare = _overhead(Extras(lock=False, audit=False, verify=False))
    assert quota["points_estimated"] == 60 * 320 + bare < 60 * 320 + _overhead(Extras())
    assert abs(quota["points_spent"] - quota["points_estimated"]) <= 0.02 * quota["points_spent"]


def test_a_compartment_grown_since_the_plan_is_still_moved_whole(moving: Moving) -> None:
    # A size only prices a call and picks its mode; the server propagates to the whole
    # compartment. An Observation created right after the plan read the sizes (within the
    # minute they stand in for the batches' reads) moves with its patient, and verification
    # finds nothing to repair.
    admin = moving.sb.client()
    real = MedplumClient.compartment_sizes
    grown: list[str] = []

    def then_grow(self: MedplumClient, asked_refs: Any, **kwargs: Any) -> dict[str, int]:
        sizes = real(self, asked_refs, **kwargs)
        if not grown:
            created = admin.create_resource({
                "resourceType": "Observation", "status": "final", "code": {"text": "late"},
                "subject": {"reference": moving.refs[7]},
            })  # fmt: skip
            grown.append(f"Observation/{created['id']}")
        return sizes

    moving.monkeypatch.setattr(MedplumClient, "compartment_sizes", then_grow)
    out, quota = moving.run("apply", moving.manifests, *APPLY)
    assert quota["sync_calls"] == PATIENTS
    assert moving.all_moved()
    assert accounts_of(admin, grown[0]) == [moving.org]
    assert "Propagated to 121 compartment resources." in out  # 60 x 2, and the late one
    assert "Verified 121 compartment resources: 0 stragglers found, 0 repaired." in out


def test_the_plan_command_samples_and_a_saved_plan_sizes_batch_by_batch(
    moving: Moving, asked: list[list[str]], tmp_path: Path
) -> None:
    plan_file = str(tmp_path / "plan.json")
    moving.run("plan", moving.manifests, "--out", plan_file)
    assert [len(call) for call in asked] == [20]  # the estimate's sample only
    assert "known_sizes" not in Path(plan_file).read_text()
    asked.clear()
    _, quota = moving.run("apply", plan_file, "--allow-mass-grant")
    # The first batch (3 x parallelism), then the rest: each batch sized as it is written.
    assert [len(call) for call in asked] == [30, 30]
    assert sorted(r for call in asked for r in call) == sorted(moving.refs)
    assert quota["sync_calls"] == PATIENTS
    assert moving.all_moved()


def test_sizes_gone_stale_are_read_again_by_each_batch(
    moving: Moving, asked: list[list[str]]
) -> None:
    # A prompt answered late, or writes a quota holds back: what the plan read is no longer
    # what the batches go by.
    moving.monkeypatch.setattr(reconciler.apply.calls, "SIZES_FRESH_S", 0.0)
    _, quota = moving.run("apply", moving.manifests, *APPLY)
    assert [len(call) for call in asked] == [PATIENTS, 30, 30]
    assert quota["sync_calls"] == PATIENTS


def test_a_window_sizes_ahead_what_it_can_pay_for() -> None:
    from reconciler.plan.estimate import APPLY_AHEAD, sized_ahead

    assert sized_ahead(0) == APPLY_AHEAD  # no quota shown: the cap
    assert sized_ahead(3_000) == 25  # 3,000 points pay for 25 calls of 120
    assert sized_ahead(50_000) == 416
    assert sized_ahead(10_000_000) == APPLY_AHEAD
