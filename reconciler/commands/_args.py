"""Argument helpers shared by the commands: the option groups and value parsers."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from reconciler.connect import ServerOptions
from reconciler.model import DEFAULT_PARALLELISM


def _whole_number(value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < minimum:
        raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value!r}")
    return number


def bounded_int(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = _whole_number(value, minimum)
        if number > maximum:
            raise argparse.ArgumentTypeError(f"must be {maximum} or less, got {value!r}")
        return number

    return parse


def positive_int(value: str) -> int:
    return _whole_number(value, 1)


def non_negative_int(value: str) -> int:
    return _whole_number(value, 0)


def positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {value!r}")
    return seconds


def parse_duration(value: str) -> float:
    """`60`, `60s`, `2m`, `1h` → seconds."""
    text = value.strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(text[-1:])
    number = text[:-1] if scale else text
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {value!r} (e.g. 60s, 2m)") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"not a duration: {value!r}")
    return seconds


def add_log_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output options")
    group.add_argument(
        "--log-format",
        choices=("console", "json"),
        default=None,
        help="log lines on stderr (default: console on a terminal, json otherwise)",
    )
    group.add_argument("-v", "--verbose", action="count", default=0, help="more log lines")
    group.add_argument(
        "--no-color", action="store_true", help="no colours in plans and logs (also: NO_COLOR)"
    )
    group.add_argument("-q", "--quiet", action="count", default=0, help="fewer log lines")
    group.add_argument(
        "--redact",
        action="store_true",
        help="hide patient, membership and identifier values in every line written — plans, "
        "errors, logs, events (keyed hashes: $RECONCILER_REDACT_KEY, required under CI=true; "
        "else a random key for this run)",
    )


def add_server_options(parser: argparse.ArgumentParser, *, parallelism: bool = True) -> None:
    group = parser.add_argument_group("server options")
    group.add_argument(
        "--server",
        metavar="URL",
        help="Medplum base URL (default: $MEDPLUM_BASE_URL, else the embedded sandbox)",
    )
    group.add_argument(
        "--timeout",
        type=positive_seconds,
        default=30.0,
        metavar="S",
        help="per-request timeout in seconds (default: %(default)s)",
    )
    group.add_argument(
        "--sandbox",
        action="store_true",
        help="use the embedded local sandbox (required when CI=true or credentials are set)",
    )
    group.add_argument(
        "--sandbox-data",
        metavar="FILE",
        default=None,
        help="data file of the embedded sandbox (default: .reconciler/sandbox.sqlite)",
    )
    if parallelism:
        group.add_argument(
            "--parallelism",
            "-parallelism",
            type=positive_int,
            default=DEFAULT_PARALLELISM,
            metavar="N",
            help="requests in flight (default: %(default)s; plan reads use at most 4)",
        )


def server_options(ns: argparse.Namespace) -> ServerOptions:
    return ServerOptions(
        server=ns.server, timeout=ns.timeout, sandbox_data=ns.sandbox_data, sandbox=ns.sandbox
    )


def add_target_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        "-target",
        action="append",
        default=[],
        metavar="TENANT",
        help="only this tenant (repeatable): others are left as they are, their selectors "
        "unresolved",
    )


def add_guard_options(parser: argparse.ArgumentParser) -> None:
    """The removal and grant guards' flags (apply; later every command that writes)."""
    parser.add_argument(
        "--allow-mass-removal",
        action="store_true",
        help="apply even when a tenant would lose over half of its members",
    )
    parser.add_argument(
        "--max-removals",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="refuse when the plan removes more than N accounts in all",
    )
    parser.add_argument(
        "--allow-mass-grant",
        action="store_true",
        help="apply even when the plan grants access to more than 10 memberships",
    )
    parser.add_argument(
        "--max-grants",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="refuse when the plan adds more than N access grants in all",
    )


def add_lock_options(parser: argparse.ArgumentParser) -> None:
    """The apply lock's flags."""
    parser.add_argument(
        "--lock",
        choices=("true", "false"),
        default="true",
        help="take the server-side apply lock (default: true; false is for emergencies)",
    )
    parser.add_argument(
        "--lock-timeout",
        "-lock-timeout",
        type=parse_duration,
        default=0.0,
        metavar="DURATION",
        help="wait this long for another apply's lock (e.g. 60s; default: fail at once)",
    )
    parser.add_argument(
        "--lock-ttl",
        type=parse_duration,
        default=600.0,
        metavar="DURATION",
        help="lock expiry, renewed while applying (default: 10m)",
    )
