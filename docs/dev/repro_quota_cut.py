"""Reproduces the residual quota cut of tests/integration/test_quota.py::
test_apply_bigger_than_a_window_converges_at_the_quota_pace (about 1 run in 20 with two busy
loops loading the CPU): a synchronous $set-accounts answered 429 part-way, its compartment
repaired by verification. Run: `.venv/bin/python docs/dev/repro_quota_cut.py` (with
`python3 -c "while True: pass" &` twice beside it); it prints the JSON log lines before the
first 429. Not part of the suite."""

import contextlib
import io
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pytest

import reconciler.connect
from reconciler.cli import main
from tests.integration.helpers import seed_store, tenant_yaml, write
from tests.sandbox_process import AppSandbox


def one_run(attempt: int) -> bool:
    """One apply like the test's; True when it left stragglers (and the lines were shown)."""
    tmp = Path(tempfile.mkdtemp())
    data = str(tmp / "q.sqlite")
    org, refs = seed_store(data, patients=60, compartment=4)
    sb = AppSandbox("--fhir-quota", "11000", data=data)
    manifests = write(tmp, "t.yaml", tenant_yaml("paced", org, refs))
    mp = pytest.MonkeyPatch()
    mp.setattr(reconciler.connect, "build_client", lambda _u, cid, sec, **_: sb.client((cid, sec)))
    for name, value in (("MEDPLUM_BASE_URL", sb.url), ("MEDPLUM_CLIENT_ID", "sandbox-admin"),
                        ("MEDPLUM_CLIENT_SECRET", "sandbox-secret")):  # fmt: skip
        mp.setenv(name, value)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        main(["apply", manifests, "--auto-approve", "--allow-mass-grant", "--log-format",
              "json", "-v"])  # fmt: skip
    mp.undo()
    last = out.getvalue().strip().splitlines()[-1]
    cut = "0 stragglers" not in last
    if cut:
        lines = err.getvalue().splitlines()
        at = next(i for i, line in enumerate(lines) if '"status": 429' in line)
        shown = [line[:300] for line in lines[max(0, at - 40) : at + 3]
                 if "quota" in line or "retry" in line]  # fmt: skip
        sys.stdout.write(f"attempt {attempt}: {last} throttled {sb.stats().get('throttled')}\n")
        sys.stdout.write("\n".join(shown) + "\n")
    sb.stop()
    return cut


if __name__ == "__main__":
    if not any(one_run(attempt) for attempt in range(60)):
        sys.stdout.write("no cut in 60 runs\n")
