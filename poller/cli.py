"""The command line: `poller scan | check-config`. The only place that knows exit codes.

Data goes to stdout (a table, or JSON with --json); messages and logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from poller import __version__, logs
from poller.config import Settings, load_settings
from poller.errors import ConfigError, PollerError, SweepError
from poller.reports import scan_json, scan_table
from poller.sweeping import discover, resolve

log = logging.getLogger("poller")

EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug: please report it with the log
EXIT_USAGE = 2  # argparse's own code for bad flags
EXIT_CONFIG = 3  # the configuration (file, environment or flags) is invalid
EXIT_SWEEP_FAILED = 4  # the sweep failed on the poller's own side (its network)
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES: list[tuple[type[PollerError], int]] = [
    (ConfigError, EXIT_CONFIG),
    (SweepError, EXIT_SWEEP_FAILED),
]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poller",
        description="Keep HAProxy's backend equal to the web nodes alive on a subnet.",
    )
    parser.add_argument("--version", action="version", version=f"poller {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML settings (default: the built-in defaults, which match config/poller.yaml)",
    )
    common.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    scan = commands.add_parser(
        "scan", parents=[common], help="sweep the subnets once and print what answers"
    )
    scan.add_argument("--subnet", action="append", metavar="CIDR", help="repeatable")
    scan.add_argument("--port", action="append", type=int, metavar="N", help="repeatable")
    scan.add_argument("--timeout", type=float, metavar="SECONDS")
    scan.add_argument("--concurrency", type=int, metavar="N")
    scan.add_argument("--json", action="store_true", help="print JSON to stdout")
    scan.add_argument(
        "--all", action="store_true", help="list every target, not only those that answered"
    )

    check = commands.add_parser(
        "check-config", parents=[common], help="validate the configuration and exit"
    )
    check.add_argument("--json", action="store_true", help="print the effective settings")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    flags = {
        ("discovery", "subnets"): getattr(args, "subnet", None),
        ("discovery", "ports"): getattr(args, "port", None),
        ("discovery", "concurrency"): getattr(args, "concurrency", None),
        ("probe", "timeout_seconds"): getattr(args, "timeout", None),
    }
    for (section, key), value in flags.items():
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    return overrides


def _scan(args: argparse.Namespace, settings: Settings) -> int:
    resolved = resolve(settings.discovery)
    found = asyncio.run(
        discover(resolved, settings.probe, settings.discovery.concurrency, keep_all=args.all)
    )
    if found.failure is not None:
        raise SweepError(f"sweep failed, its results mean nothing: {found.failure}")
    if args.json:
        sys.stdout.write(json.dumps(scan_json(resolved, found), indent=2) + "\n")
    else:
        sys.stdout.write(scan_table(resolved, found))
    return EXIT_OK


def _check_config(args: argparse.Namespace, settings: Settings) -> int:
    resolved = resolve(settings.discovery)
    if args.json:
        sys.stdout.write(settings.model_dump_json(indent=2) + "\n")
    else:
        sys.stdout.write(
            f"ok: {resolved.plan.count:,} targets in {', '.join(resolved.subnets)}, "
            f"ports {', '.join(map(str, resolved.plan.ports))}\n"
        )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    logs.configure(args.log_level)
    try:
        settings = load_settings(args.config, overrides=_overrides(args))
        if args.command == "scan":
            return _scan(args, settings)
        return _check_config(args, settings)
    except PollerError as exc:
        code = next((code for kind, code in EXIT_CODES if isinstance(exc, kind)), EXIT_INTERNAL)
        print(f"poller: error: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("poller: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
