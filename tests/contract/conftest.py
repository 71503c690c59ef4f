"""The contract suite runs against a sandbox process by default (in `make test`), or against
any Medplum server with `make contract` (RECONCILER_CONTRACT_SERVER=1 and the MEDPLUM_*
variables of a project-admin client). It creates its own data under a unique identifier
system and deletes nothing it did not create."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from reconciler.medplum.client import MedplumClient
from tests.sandbox_process import ADMIN, SandboxProcess


@dataclass
class Target:
    url: str
    client_id: str
    client_secret: str
    real: bool  # a real Medplum server, not the sandbox
    run: str  # unique per run: identifier systems and names carry it

    def client(self, **kwargs: object) -> MedplumClient:
        return MedplumClient(self.url, self.client_id, self.client_secret, **kwargs)  # type: ignore[arg-type]

    @property
    def system(self) -> str:
        return f"urn:reconciler-contract:{self.run}"


@pytest.fixture(scope="session")
def target() -> Iterator[Target]:
    run = uuid.uuid4().hex[:12]
    if os.environ.get("RECONCILER_CONTRACT_SERVER") == "1":
        url = os.environ.get("MEDPLUM_BASE_URL", "")
        cid = os.environ.get("MEDPLUM_CLIENT_ID", "")
        secret = os.environ.get("MEDPLUM_CLIENT_SECRET", "")
        if not (url and cid and secret):
            pytest.exit(
                "make contract needs MEDPLUM_BASE_URL, MEDPLUM_CLIENT_ID, MEDPLUM_CLIENT_SECRET"
            )
        yield Target(url, cid, secret, True, run)
        return
    # Metered, with a quota no test reaches: the RateLimit header shows what each call cost
    # (tests/contract/test_cost_facts.py), as on a Medplum.
    proc = SandboxProcess(args=("--fhir-quota", "100000000")).start()
    yield Target(proc.url, *ADMIN, False, run)
    proc.stop()
