"""The server facts that authority and the other-writers check rely on (issue 26): the server
sends its clock (`Date`) and stamps versions on the same clock; a `$set-accounts` write is in
the instance history, newest first; and its author is the caller (Medplum 5.0.10) or `system`
(5.1.29) — apply never needs to know which. Runs against the sandbox in `make test` and against
any Medplum with `make contract`."""

from __future__ import annotations

from datetime import timedelta

from reconciler.clock import parse_iso_utc
from reconciler.medplum.accounts import get_resource_accounts
from tests.contract.conftest import Target
from tests.contract.test_contract import org, patients


def test_the_server_sends_its_clock_and_stamps_versions_on_it(target: Target) -> None:
    client = target.client()
    (ref,) = patients(target, client, 1, "clock")
    result = client.request("GET", ref)
    now = result.server_time
    assert now is not None, "no Date header: the lease would fall back to the local clock"
    stored = parse_iso_utc(result.body["meta"]["lastUpdated"])
    assert stored <= now + timedelta(seconds=1)  # the Date header has 1-second resolution
    assert now - stored < timedelta(minutes=5)


def test_set_accounts_versions_are_in_the_history_newest_first(target: Target) -> None:
    client = target.client()
    o1, o2 = org(target, client, "h1"), org(target, client, "h2")
    (ref,) = patients(target, client, 1, "hist")
    first = client.set_accounts_result(ref, [o1])
    second = client.set_accounts_result(ref, [o1, o2])
    ((_, history),) = list(client.read_histories([ref]))
    assert isinstance(history, list)
    accounts = [get_resource_accounts(e["resource"]) for e in history if "resource" in e]
    assert accounts[:3] == [[o1, o2], [o1], []]
    newest = parse_iso_utc(history[0]["resource"]["meta"]["lastUpdated"])
    done = second.server_time
    assert done is not None and newest <= done + timedelta(seconds=1)
    assert first.server_time is not None


def test_who_authors_a_set_accounts_version(target: Target) -> None:
    client = target.client()
    me = client.request("GET", client.base_url + "auth/me").body
    caller = me["membership"]["profile"]["reference"]
    o1 = org(target, client, "author")
    (sync_ref,) = patients(target, client, 1, "author-sync")
    (async_ref,) = patients(target, client, 1, "author-async")
    client.set_accounts(sync_ref, [o1])
    job = client.set_accounts(async_ref, [o1], propagate=True, prefer_async=True)
    client.wait_for_async_job(job, timeout=120)
    authors = {
        client.read_resource(*ref.split("/"))["meta"].get("author", {}).get("reference")
        for ref in (sync_ref, async_ref)
    }
    # 5.0.10 names the calling client, 5.1.29 `system`; sync and async agree. Apply tells its
    # own versions by their lists and times, so either holds.
    assert authors in ({caller}, {"system"}), authors
