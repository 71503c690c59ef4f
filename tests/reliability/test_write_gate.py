"""Writes need authority (issue 26): every write of every command passes one gate, and once the
apply lock's lease is lost nothing more is written — apply's account changes, the corrections
of other writers' changes, apply's verification repair, membership writes and verify --repair.
Each test loses the lease mid-run (a lock whose lease ends after a given write) and records
every write that reaches the server after that moment: there must be none."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import reconciler.apply.session
import reconciler.apply.verification
from reconciler.apply.lock import LOCK_SYSTEM, LOCK_VALUE, ApplyLock
from reconciler.medplum.accounts import get_resource_accounts
from reconciler.medplum.client import MedplumClient
from reconciler.sandbox import seed as seeding
from tests.integration.helpers import create_org, create_patients, tenant_yaml, write
from tests.reliability.conftest import run_through
from tests.sandbox_process import AppSandbox

READS = ("/_search",)


class Recorder(httpx.BaseTransport):
    """Counts the writes that reach the server, and those sent after the lease was lost."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.writes: list[str] = []
        self.after_loss: list[str] = []
        self.lost = False
        self.before: Callable[[httpx.Request], None] | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        is_read = request.method == "GET" or path.endswith(READS) or path.rstrip("/").endswith("R4")
        is_ours = "/Basic" in path or path.endswith("/AuditEvent") or "oauth2" in path
        if not is_read and not is_ours:
            if self.before is not None:
                self.before(request)
            (self.after_loss if self.lost else self.writes).append(f"{request.method} {path}")
        return self.inner.handle_request(request)


def lease_ends(recorder: Recorder, when: Callable[[], bool]) -> type[ApplyLock]:
    """An apply lock whose lease is lost as soon as `when()` holds (checked at every gate)."""

    class Ending(ApplyLock):
        def ensure_held(self) -> None:
            if self.lost is None and when():
                self.lost = "its lease ran out mid-run (test)"
                recorder.lost = True
            super().ensure_held()

    return Ending


def install(monkeypatch: pytest.MonkeyPatch, lock: type[ApplyLock]) -> None:
    monkeypatch.setattr(reconciler.apply.session, "ApplyLock", lock)
    monkeypatch.setattr(reconciler.apply.verification, "ApplyLock", lock)


def audit_outcomes(client: MedplumClient) -> list[str]:
    return [e["outcome"] for e in client.search_all("AuditEvent", {})]


def test_account_changes_stop_at_the_lost_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    sb = AppSandbox()
    admin = sb.client()
    org = create_org(admin)
    refs = create_patients(admin, 12)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("t", org, refs, propagate=False))
    recorder = Recorder(sb.transport)
    install(monkeypatch, lease_ends(recorder, lambda: len(recorder.writes) >= 5))
    code, out, err = run_through(recorder, sb, monkeypatch, capsys, "apply", manifests,
                                 "--auto-approve", "--parallelism", "1", "--allow-mass-grant")  # fmt: skip
    assert code == 1, out + err
    assert "Apply failed: lost the apply lock: its lease ran out mid-run (test)" in out
    assert "Apply complete!" not in out
    assert recorder.after_loss == []
    assert len(recorder.writes) == 5
    assert audit_outcomes(admin) == ["4"]  # the audit record says failed


def test_corrections_of_other_writers_changes_stop_at_the_lost_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    sb = AppSandbox()
    admin, other = sb.client(), sb.client()
    org, foreign = create_org(admin), create_org(admin)
    refs = create_patients(admin, 6)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("t", org, refs, propagate=False))
    recorder = Recorder(sb.transport)
    raced: set[str] = set()

    def race(request: httpx.Request) -> None:  # another admin adds an account right before
        ref = "/".join(request.url.path.split("/")[-3:-1])
        if request.url.path.endswith("/$set-accounts") and ref not in raced and not recorder.lost:
            raced.add(ref)
            other.set_accounts(ref, [*get_resource_accounts(other.read_resource(*ref.split("/"))),
                                     foreign])  # fmt: skip

    recorder.before = race
    # The lease ends once apply's own six writes are done: the corrections come after.
    install(monkeypatch, lease_ends(recorder, lambda: len(recorder.writes) >= 6))
    code, out, err = run_through(recorder, sb, monkeypatch, capsys, "apply", manifests,
                                 "--auto-approve", "--parallelism", "1")  # fmt: skip
    assert code == 1, out + err
    assert "Apply failed: lost the apply lock" in out and "Apply complete!" not in out
    assert recorder.after_loss == []
    assert "Kept other writers' changes" not in out


def test_apply_verification_repair_stops_at_the_lost_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    sb = AppSandbox("--propagate-cap", "0")  # every compartment resource is left a straggler
    admin = sb.client()
    org = create_org(admin)
    refs = create_patients(admin, 4, compartment=2)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("t", org, refs))
    recorder = Recorder(sb.transport)
    install(monkeypatch, lease_ends(recorder, lambda: len(recorder.writes) >= 4))
    code, out, err = run_through(recorder, sb, monkeypatch, capsys, "apply", manifests,
                                 "--auto-approve", "--parallelism", "1")  # fmt: skip
    assert code == 1, out + err
    assert "Apply failed: lost the apply lock" in out and "Apply complete!" not in out
    assert recorder.after_loss == []  # no straggler was "repaired" without the lock
    for resource in admin.read_compartments(refs):
        assert get_resource_accounts(resource) == []


def _demo(tmp_path: Path) -> tuple[AppSandbox, Path]:
    import shutil

    sb = AppSandbox()
    seeding.seed(sb.app.store, patients=12, per_patient=1)
    manifests = tmp_path / "tenants"
    shutil.copytree(Path(__file__).resolve().parents[2] / "examples" / "tenants", manifests)
    return sb, manifests


def test_membership_writes_stop_at_the_lost_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    sb, manifests = _demo(tmp_path)
    recorder = Recorder(sb.transport)
    memberships = lambda: [w for w in recorder.writes if "ProjectMembership" in w]  # noqa: E731
    install(monkeypatch, lease_ends(recorder, lambda: len(memberships()) >= 2))
    code, out, err = run_through(recorder, sb, monkeypatch, capsys, "apply", str(manifests),
                                 "--auto-approve", "--parallelism", "1")  # fmt: skip
    assert code == 1, out + err
    assert "Apply failed: lost the apply lock" in out
    assert recorder.after_loss == []
    assert len(memberships()) == 2


def test_verify_repair_stops_at_the_lost_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    sb, manifests = _demo(tmp_path)
    admin = sb.client()
    assert run_through(sb.transport, sb, monkeypatch, capsys, "apply", str(manifests),
                       "--auto-approve")[0] == 0  # fmt: skip
    north = f"Organization/{seeding.ORG_NORTH}"
    stray = "Patient/" + admin.create_resource({"resourceType": "Patient"})["id"]
    for _ in range(3):  # three orphans: Observations of a patient in no tenant, carrying north
        admin.create_resource({"resourceType": "Observation", "status": "final",
                               "code": {"text": "x"}, "subject": {"reference": stray},
                               "meta": {"accounts": [{"reference": north}]}})  # fmt: skip
    recorder = Recorder(sb.transport)
    install(monkeypatch, lease_ends(recorder, lambda: len(recorder.writes) >= 1))
    code, out, err = run_through(recorder, sb, monkeypatch, capsys, "verify", str(manifests),
                                 "--repair", "--parallelism", "1")  # fmt: skip
    assert code == 1, out + err
    assert err.splitlines()[-1].startswith("Error: lost the apply lock")
    assert recorder.after_loss == [] and len(recorder.writes) == 1
    assert audit_outcomes(admin)[-1] == "4"


def test_a_lock_removed_under_a_running_apply_stops_it_at_the_next_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    sb = AppSandbox()
    admin = sb.client()
    org = create_org(admin)
    refs = create_patients(admin, 120)
    manifests = write(tmp_path, "t.yaml", tenant_yaml("t", org, refs, propagate=False))
    recorder = Recorder(sb.transport)

    def force_unlock(request: httpx.Request) -> None:
        if len(recorder.writes) == 3 and not recorder.lost:  # force-unlock --force, live lock
            (lock,) = admin.search_all("Basic", {"identifier": f"{LOCK_SYSTEM}|{LOCK_VALUE}"})
            admin.delete_resource("Basic", lock["id"])
            recorder.lost = True  # from here on, only the rest of this batch may land

    recorder.before = force_unlock
    code, out, err = run_through(recorder, sb, monkeypatch, capsys, "apply", manifests,
                                 "--auto-approve", "--parallelism", "1", "--allow-mass-grant")  # fmt: skip
    assert code == 1, out + err
    assert (
        "Apply failed: lost the apply lock: it was removed (force-unlock?) while this apply ran"
        in out
    )
    # The first batch is 3 x parallelism changes, the next max(100, 10 x parallelism): the
    # rest of the batch being written when the lock went may land, no more.
    assert 0 < len(recorder.after_loss) <= 100, len(recorder.after_loss)
    assert len(recorder.writes) + len(recorder.after_loss) <= 2 + 100 + 3
