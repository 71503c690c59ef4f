"""`reconciler sandbox serve|seed|load`: the local Medplum-compatible server, its demo data and
your own resources in it."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from reconciler.errors import ExitCode, UsageError
from reconciler.views.output import Output

if TYPE_CHECKING:
    from reconciler.sandbox.app import Config

MakeParser = Callable[..., argparse.ArgumentParser]


def _client(value: str) -> tuple[str, str, str]:
    parts = value.split(":")
    if len(parts) != 3 or parts[2] not in ("admin", "member", "reader") or not all(parts):
        raise argparse.ArgumentTypeError("expected ID:SECRET:ROLE with ROLE admin|member|reader")
    return parts[0], parts[1], parts[2]


def _client_quota(value: str) -> tuple[str, int]:
    client_id, _, points = value.rpartition(":")
    if not client_id or not points.isdigit() or int(points) < 1:
        raise argparse.ArgumentTypeError("expected ID:POINTS, e.g. sandbox-admin:3000")
    return client_id, int(points)


def _fault(value: str) -> tuple[int, float]:
    try:
        status, rate = value.split(":")
        code, fraction = int(status), float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError("expected STATUS:RATE, e.g. 429:0.2") from None
    if not 0 <= fraction <= 1 or not 400 <= code <= 599:
        raise argparse.ArgumentTypeError("STATUS must be 4xx/5xx and RATE between 0 and 1")
    return code, fraction


def config_from_args(options: argparse.Namespace) -> Config:
    """The sandbox's typed configuration from `sandbox serve` options."""
    from reconciler.sandbox.app import DEFAULT_CLIENTS, Config

    faults = list(options.fault or [])
    if options.fault_rate is not None:
        faults.append((options.fault_status, options.fault_rate))
    if sum(rate for _, rate in faults) > 1:
        raise UsageError("the --fault rates add up to more than 1")
    clients = (
        {cid: (secret, role) for cid, secret, role in options.client}
        if options.client
        else dict(DEFAULT_CLIENTS)
    )
    return Config(
        clients=clients,
        latency_ms=options.latency_ms,
        spike_ms=options.spike_ms,
        spike_rate=options.spike_rate,
        faults=faults,
        fault_jobs=options.fault_jobs,
        retry_after=options.retry_after,
        job_delay_ms=options.job_delay_ms,
        job_fail_rate=options.job_fail_rate,
        job_fail_after_writes=options.job_fail_after_writes,
        propagate_cap=options.propagate_cap,
        max_search_offset=options.max_search_offset,
        fhir_quota=options.fhir_quota,
        client_quotas=dict(options.client_quota or []),
        quota_window_s=options.quota_window_s,
        token_ttl_s=options.token_ttl,
        seed=options.random_seed,
        set_accounts_author=options.set_accounts_author,
    )


def serve(options: argparse.Namespace) -> int:
    from reconciler.sandbox.server import serve as run_server

    return run_server(config_from_args(options), options.data, options.host, options.port)


def seed(options: argparse.Namespace) -> int:
    from reconciler.sandbox import seed as seeding
    from reconciler.sandbox.store import Store

    if options.data == ":memory:":
        raise UsageError("seeding :memory: would be lost at once; give --sandbox-data FILE")
    started = time.monotonic()
    store = Store(options.data)
    try:
        if options.reset:
            with store.transaction() as conn:
                conn.execute("DELETE FROM search_index")
                conn.execute("DELETE FROM resources")
        result = seeding.seed(
            store,
            patients=options.patients,
            per_patient=options.resources_per_patient,
            seed=options.seed,
        )
    finally:
        store.close()
    elapsed = time.monotonic() - started
    Output().result(
        f"Seeded {options.data}: {result.patients:,} patients, {result.resources:,} resources "
        f"({result.written:,} new) in {elapsed:.1f} s."
    )
    return ExitCode.OK


def load(options: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from reconciler.sandbox import load as loading
    from reconciler.sandbox.store import Store

    if options.data == ":memory:":
        raise UsageError("loading into :memory: would be lost at once; give --sandbox-data FILE")
    source = options.file
    if source == "-":
        text, name = sys.stdin.read(), "<stdin>"
    else:
        try:
            text, name = Path(source).read_text(encoding="utf-8"), source
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise UsageError(f"{source}: cannot read: {why}") from None
    try:
        resources = loading.parse(text, name)
    except loading.LoadError as exc:
        raise UsageError(str(exc)) from None
    Path(options.data).parent.mkdir(parents=True, exist_ok=True)
    store = Store(options.data)
    try:
        loaded = loading.load(store, resources)
    finally:
        store.close()
    kinds = ", ".join(f"{n} {t}" for t, n in sorted(loaded.by_type.items()))
    Output().result(
        f"Loaded {loaded.resources:,} resources into {options.data} ({kinds}; "
        f"{loaded.new:,} new, {loaded.resources - loaded.new:,} replaced)."
    )
    return ExitCode.OK


def _data_option(p: argparse.ArgumentParser, default: str, what: str) -> None:
    """`--sandbox-data`, the one spelling every command uses; `--data` still works, unlisted."""
    p.add_argument(
        "--sandbox-data",
        dest="data",
        default=default,
        metavar="FILE",
        help=f"{what} (default: %(default)s)",
    )
    p.add_argument("--data", dest="data", help=argparse.SUPPRESS)


def add_group(group: argparse.ArgumentParser, add: MakeParser) -> None:
    """`sandbox serve`, `sandbox seed` and `sandbox load`, under the `sandbox` parser `group`."""
    from reconciler.sandbox.server import DEFAULT_DATA

    sub = group.add_subparsers(dest="sandbox_command", metavar="SUBCOMMAND")
    sub.required = True

    d = " (default: %(default)s)"
    p = add(sub, "serve", serve, "run the local Medplum-compatible server")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on" + d)
    p.add_argument(
        "--port",
        type=int,
        default=8104,
        help="0 picks a free port (default 8104: Medplum's own dev server uses 8103)",
    )
    _data_option(p, DEFAULT_DATA, "SQLite data file, or :memory:")
    p.add_argument(
        "--client",
        action="append",
        type=_client,
        metavar="ID:SECRET:ROLE",
        help="a client it accepts, ROLE admin, member or reader; repeatable (default: "
        "sandbox-admin, sandbox-member and sandbox-reader, secret sandbox-secret)",
    )
    p.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="delay before every answer, a network round trip" + d,
    )
    p.add_argument(
        "--spike-ms", type=float, default=0.0, metavar="MS", help="length of a latency spike" + d
    )
    p.add_argument(
        "--spike-rate", type=float, default=0.0, metavar="F", help="fraction of requests spiked" + d
    )
    p.add_argument(
        "--fault",
        action="append",
        type=_fault,
        metavar="STATUS:RATE",
        help="answer STATUS to a fraction RATE of requests; repeatable (default: none)",
    )
    p.add_argument(
        "--fault-rate",
        type=float,
        default=None,
        metavar="F",
        help="fraction of requests answered --fault-status (default: none)",
    )
    p.add_argument(
        "--fault-status",
        type=int,
        default=503,
        metavar="S",
        help="the status --fault-rate answers" + d,
    )
    p.add_argument("--fault-jobs", action="store_true", help="inject faults into job polls too")
    p.add_argument(
        "--retry-after",
        type=float,
        default=None,
        metavar="S",
        help="send Retry-After: S with injected faults (default: none, like Medplum)",
    )
    p.add_argument(
        "--job-delay-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="how long an async job waits in the queue before it runs" + d,
    )
    p.add_argument(
        "--job-fail-rate",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction of async jobs that fail" + d,
    )
    p.add_argument(
        "--job-fail-after-writes",
        type=int,
        default=None,
        metavar="N",
        help="every async job dies after N writes, leaving what it wrote (Medplum has no "
        "rollback; default: never)",
    )
    p.add_argument(
        "--propagate-cap",
        type=int,
        default=1000,
        metavar="N",
        help="compartment resources one $set-accounts propagates to at most" + d,
    )
    p.add_argument(
        "--max-search-offset",
        type=int,
        default=None,
        metavar="N",
        help="refuse _offset past N, as Medplum does past its limit (default: none)",
    )
    p.add_argument(
        "--fhir-quota",
        type=int,
        default=None,
        metavar="POINTS",
        help="every client's FHIR quota a window (default: unmetered)",
    )
    p.add_argument(
        "--client-quota",
        action="append",
        type=_client_quota,
        metavar="ID:POINTS",
        help="one client's FHIR quota a window (Medplum's membership option fhirQuota); "
        "repeatable; the others keep --fhir-quota, or none",
    )
    p.add_argument(
        "--quota-window-s",
        type=float,
        default=60.0,
        metavar="S",
        help="the quota's window, fixed like Medplum's" + d,
    )
    p.add_argument(
        "--token-ttl", type=int, default=3600, metavar="S", help="access token lifetime" + d
    )
    p.add_argument(
        "--random-seed",
        type=int,
        default=None,
        metavar="N",
        help="seed for fault injection (default: random)",
    )
    p.add_argument(
        "--set-accounts-author",
        choices=("caller", "system"),
        default="caller",
        help="who the version $set-accounts writes names as author: the calling client (like "
        "Medplum 5.0.10, the default) or system (like 5.1.29)",
    )

    p = add(sub, "seed", seed, "fill the sandbox with demo data matching examples/tenants/")
    _data_option(p, DEFAULT_DATA, "SQLite data file to fill")
    p.add_argument(
        "--patients",
        type=int,
        default=100,
        metavar="N",
        help="generated patients beside the six named ones" + d,
    )
    p.add_argument(
        "--resources-per-patient",
        type=int,
        default=4,
        metavar="K",
        help="Observations and Encounters per generated patient" + d,
    )
    p.add_argument(
        "--seed",
        type=int,
        default=1,
        metavar="S",
        help="varies the generated patients' ids and names" + d,
    )
    p.add_argument("--reset", action="store_true", help="delete everything first")

    p = add(sub, "load", load, "load your own resources (JSON: one, an array or a Bundle)")
    p.add_argument("file", metavar="FILE", help="a JSON file, or - for standard input")
    _data_option(p, DEFAULT_DATA, "SQLite data file to load into")
