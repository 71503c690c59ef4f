"""The whole tool through a hostile proxy of our own (hardening, points 3, 5 and 6): links and
job URLs rewritten to a second loopback address that records what reaches it, `next` links to
the page itself, errors that echo the token and the secret, answers that drip."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from reconciler.medplum.client import MedplumClient
from tests.reliability.conftest import CREDS, FIGURES, SECRET, TOKEN_PREFIX, Sandbox
from tests.reliability.helpers import build, state
from tests.reliability.proxy import hostile_proxy

Run = Any


def through(sb: Sandbox, url: str) -> Sandbox:
    """The same sandbox, reached through the proxy (the CLI reads MEDPLUM_BASE_URL)."""

    class Proxied(Sandbox):
        @property
        def url(self) -> str:
            return url

    return Proxied(sb.proc)


def test_links_and_job_urls_to_another_host_never_get_the_token(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory("--job-delay-ms", "30")
    client = sb.client()
    scenario = build(client, tmp_path, n=12, compartment=2)
    with hostile_proxy(sb.url, "rewrite") as proxy:
        code, out, err = run(through(sb, proxy.url), "apply", scenario.manifests,
                             "--auto-approve", "--allow-mass-grant")  # fmt: skip
        assert code == 0, out + err
        assert "Apply complete! 8 patients updated" in out, out
        # Paging: every `next` link points at the recorder; the pages still all arrive.
        paged = MedplumClient(proxy.url, *CREDS)
        found = list(paged.search_all("Patient", {"_count": "5"}))
        paged.close()
        assert len(found) == len(scenario.patients)
        assert proxy.recorder.requests == [], proxy.recorder.requests
    FIGURES["hostile proxy runs"] += 1
    assert {p: set(a) for p, a in state(client, scenario.patients).items()} == {
        p: set(a) for p, a in scenario.desired.items()
    }


def test_a_next_link_to_the_page_itself_ends_the_plan_with_one_line(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory()
    scenario = build(sb.client(), tmp_path, n=6, compartment=1)
    with hostile_proxy(sb.url, "self-next") as proxy:
        started = time.monotonic()
        code, _, err = run(through(sb, proxy.url), "plan", scenario.manifests)
    FIGURES["hostile proxy runs"] += 1
    assert code == 1 and time.monotonic() - started < 30
    assert (
        err.strip().splitlines()[-1].endswith("the server's next link repeats a page already read")
    ), err
    assert "Traceback" not in err


def test_errors_that_echo_the_token_and_secret_are_masked(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory()
    scenario = build(sb.client(), tmp_path, n=4, compartment=0)
    bad = Path(scenario.manifests).read_text() + (
        "---\napiVersion: reconciler/v1\nkind: Tenant\nmetadata: {name: odd}\nspec:\n"
        f"  account: {scenario.legacy}\n  membership: additive\n  resources:\n"
        '    - search: "Practitioner?no-such-parameter=1"\n'
    )
    Path(scenario.manifests).write_text(bad)
    with hostile_proxy(sb.url, "echo") as proxy:
        code, _, err = run(through(sb, proxy.url), "plan", scenario.manifests)
        assert proxy.secret_seen == [SECRET]  # the proxy did have it to echo
    FIGURES["hostile proxy runs"] += 1
    assert code == 1
    assert "Bearer ***" in err and SECRET not in err and TOKEN_PREFIX not in err, err


def test_a_dripping_answer_ends_at_the_timeout_not_never(
    sandbox_factory: Any, run: Run, tmp_path: Path
) -> None:
    sb = sandbox_factory()
    scenario = build(sb.client(), tmp_path, n=4, compartment=0)
    with hostile_proxy(sb.url, "drip") as proxy:
        started = time.monotonic()
        code, _, err = run(through(sb, proxy.url), "plan", scenario.manifests, "--timeout", "1")
        took = time.monotonic() - started
    FIGURES["hostile proxy runs"] += 1
    assert code == 1 and "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .endswith(
            "the answer took longer than 1 s (--timeout covers the whole answer); stopped reading it"
        )
    ), err
    assert took < 60, took
