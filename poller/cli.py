"""The command line: `poller scan | run | render | check-config`. The only place that
knows exit codes.

Data goes to stdout (a table, or JSON with --json); messages and logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from poller import __version__, logs, terminal
from poller.config import Settings, load_settings
from poller.endpoints import Endpoint
from poller.errors import CheckUnavailable, ConfigError, InstallError, PollerError, SweepError
from poller.files import write_atomic
from poller.probing import Prober
from poller.reports import scan_json, scan_table, summary_line
from poller.results import Progress, Sweep
from poller.sweeping import discover, resolve

log = logging.getLogger("poller")

EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug: please report it with the log
EXIT_USAGE = 2  # argparse's own code for bad flags
EXIT_CONFIG = 3  # the configuration (file, environment or flags) is invalid
EXIT_SWEEP_FAILED = 4  # the sweep failed on the poller's own side (its network)
EXIT_IO = 5  # a file or directory could not be read or written (the message names it)
EXIT_HAPROXY = 6  # HAProxy could not be asked (`haproxy -c` missing or hanging)
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES: list[tuple[type[PollerError], int]] = [
    (ConfigError, EXIT_CONFIG),
    (SweepError, EXIT_SWEEP_FAILED),
    (InstallError, EXIT_IO),
    (CheckUnavailable, EXIT_HAPROXY),
]
COMMON = ("config", "log_level")


def _default(section: str, key: str) -> str:
    """A setting's default as the README and check-config show it, for --help."""
    value = getattr(getattr(Settings(), section), key)
    if isinstance(value, tuple | list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def _describe(section: str, key: str) -> str:
    """A flag's help: the setting it overrides, its meaning and its default (all read from
    the settings model, so they never drift)."""
    field = type(getattr(Settings(), section)).model_fields[key]
    meaning = (field.description or "").split(". ")[0].rstrip(".")
    return f"{meaning} ({section}.{key}; default: {_default(section, key)})"


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """--config and --log-level, accepted before the command and after it. After it, they
    default to nothing, so a value given before the command stands."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        default=default,
        help="YAML settings (default: the built-in defaults, which name no subnet; "
        "config/poller.yaml is the compose lab's)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=argparse.SUPPRESS if suppress else "info",
        help="what reaches stderr (default: info)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poller",
        description="Keep HAProxy's backend equal to the web nodes alive on a subnet.",
    )
    parser.add_argument("--version", action="version", version=f"poller {__version__}")
    _common(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _common(common, suppress=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    scan = commands.add_parser(
        "scan",
        parents=[common],
        help="sweep the subnets once and print what answers",
        description="Sweep the subnets once and print what answers. A scan connects to every "
        "address of every subnet (ARP first where it can): point it only at networks you "
        "may probe. Nothing is swept by default (give --subnet, or discovery.subnets); "
        "`auto` means this host's own networks, and is meant for the sidecar container. "
        "Subnets outside the private ranges and loopback are refused unless --allow-public.",
    )
    scan.add_argument(
        "--subnet",
        action="append",
        metavar="CIDR",
        help=_describe("discovery", "subnets") + "; repeatable",
    )
    scan.add_argument(
        "--allow-public",
        action="store_const",
        const=True,
        help=_describe("discovery", "allow_public"),
    )
    scan.add_argument(
        "--port",
        action="append",
        type=int,
        metavar="N",
        help=_describe("discovery", "ports") + "; repeatable",
    )
    scan.add_argument(
        "--timeout", type=float, metavar="SECONDS", help=_describe("probe", "timeout_seconds")
    )
    scan.add_argument(
        "--concurrency", type=int, metavar="N", help=_describe("discovery", "concurrency")
    )
    scan.add_argument(
        "--method", choices=["auto", "arp", "connect"], help=_describe("discovery", "method")
    )
    scan.add_argument("--json", action="store_true", help="print JSON to stdout, not a table")
    scan.add_argument(
        "--all", action="store_true", help="list every target, not only those that answered"
    )
    scan.add_argument(
        "--quiet",
        action="store_true",
        help="no live progress line on the terminal (there is none when stderr is not one)",
    )
    scan.add_argument(
        "--render",
        action="store_true",
        help="print the HAProxy config for the healthy nodes instead of the table",
    )
    scan.add_argument(
        "--output", type=Path, metavar="FILE", help="with --render: write it here, atomically"
    )

    commands.add_parser(
        "run",
        parents=[common],
        help="the sidecar: keep HAProxy in step with the pool",
        description="The sidecar: sweep, probe, keep HAProxy in step with the pool. Every "
        "setting comes from --config and POLLER_SECTION__KEY variables; discovery.subnets "
        "has no default (`auto`: the container's own networks, meant for the sidecar).",
    )

    render = commands.add_parser(
        "render", parents=[common], help="print (or write) the HAProxy config for members"
    )
    render.add_argument(
        "--member",
        action="append",
        default=[],
        metavar="[SERVICE=]IP:PORT",
        help="a server of the rendered backend ([IPv6]:PORT for IPv6; with several services, "
        "SERVICE= names whose, else the first's); repeatable; none: an empty backend, "
        "which answers 503",
    )
    render.add_argument("--output", type=Path, metavar="FILE", help="write it here, atomically")
    render.add_argument(
        "--keep-valid",
        action="store_true",
        help="with --output: leave FILE as it is when it exists and `haproxy -c` accepts it "
        "(an init step that may run again must not empty a live backend)",
    )

    check = commands.add_parser(
        "check-config", parents=[common], help="validate the configuration and exit"
    )
    check.add_argument("--json", action="store_true", help="print the effective settings as JSON")
    return parser


def _misused(args: argparse.Namespace) -> str | None:
    """A flag that would be silently ignored in this combination: a usage error."""
    if args.command == "scan":
        if args.output is not None and not args.render:
            return "--output needs --render"
        for flag in ("json", "all"):
            if args.render and getattr(args, flag):
                return f"--{flag} does not go with --render (it prints a config, not a table)"
    if args.command == "render" and args.keep_valid and args.output is None:
        return "--keep-valid needs --output"
    return None


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    flags = {
        ("discovery", "subnets"): getattr(args, "subnet", None),
        ("discovery", "ports"): getattr(args, "port", None),
        ("discovery", "concurrency"): getattr(args, "concurrency", None),
        ("discovery", "method"): getattr(args, "method", None),
        ("discovery", "allow_public"): getattr(args, "allow_public", None),
        ("probe", "timeout_seconds"): getattr(args, "timeout", None),
    }
    for (section, key), value in flags.items():
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    return overrides


def _scan(args: argparse.Namespace, settings: Settings) -> int:
    resolved = resolve(settings.discovery, settings.ports())

    # A person watching a terminal sees how far a long sweep has come; a pipe sees nothing.
    live = sys.stderr.isatty() and not args.quiet and not (args.json and not sys.stdout.isatty())

    async def sweep() -> Sweep:
        services = settings.service_list()
        concurrency = settings.discovery.concurrency
        scope = resolved.plan.scope()
        async with Prober(settings.probe, concurrency, scope, services=services) as prober:
            if not live:
                return await discover(resolved, prober, keep_all=args.all)
            progress = Progress(resolved.plan.count, time.monotonic())
            async with asyncio.TaskGroup() as group:
                line = group.create_task(terminal.show(progress, sys.stderr))
                try:
                    return await discover(resolved, prober, args.all, progress=progress)
                finally:
                    line.cancel()

    found = asyncio.run(sweep())
    if found.failure is not None:
        raise SweepError(f"sweep failed, its results mean nothing: {found.failure}")
    if args.render:
        backends = {s.name: s.backend for s in settings.service_list()}
        servers: dict[str, list[Endpoint]] = {}
        for result in found.healthy:
            servers.setdefault(backends[result.service], []).append(result.endpoint)
        _emit_config(settings, servers, args.output)
        print(summary_line(resolved, found), file=sys.stderr)
    elif args.json:
        sys.stdout.write(json.dumps(scan_json(resolved, found), indent=2) + "\n")
    else:
        several = len(settings.service_list()) > 1
        sys.stdout.write(scan_table(resolved, found, several))
    return EXIT_OK


def _emit_config(
    settings: Settings, servers: dict[str, list[Endpoint]], output: Path | None
) -> None:
    from poller.rendering import context, load_template, render

    template = load_template(settings.haproxy.template)
    text = render(template, context(settings, servers))
    if output is None:
        sys.stdout.write(text)
    else:
        write_atomic(output, text.encode())


def _parse_members(settings: Settings, texts: list[str]) -> dict[str, list[Endpoint]]:
    """`--member [SERVICE=]IP:PORT` values, by backend."""
    services = settings.service_list()
    backends = {s.name: s.backend for s in services}
    found: dict[str, list[Endpoint]] = {}
    for text in texts:
        name, _, address = text.rpartition("=")
        if name and name not in backends:
            known = ", ".join(backends)
            raise ConfigError(f"command line (--member {text!r})", f"no service {name!r} ({known})")
        try:
            endpoint = Endpoint.parse(address)
        except ValueError as exc:
            raise ConfigError(f"command line (--member {text!r})", str(exc)) from None
        found.setdefault(backends[name or services[0].name], []).append(endpoint)
    return found


def _render(args: argparse.Namespace, settings: Settings) -> int:
    servers = _parse_members(settings, args.member)
    if args.keep_valid and _still_valid(settings, args.output):
        log.info("kept the existing config: haproxy -c accepts it", extra=_path(args.output))
        return EXIT_OK
    _emit_config(settings, servers, args.output)
    return EXIT_OK


def _still_valid(settings: Settings, path: Path) -> bool:
    """`path` holds a config HAProxy accepts (absent, empty or rejected: False). A checker
    that cannot run at all is an error, not a reason to overwrite a live config."""
    from poller.errors import ConfigRejected
    from poller.haproxy.configs import validate

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("existing config unreadable; rewriting it", extra=_path(path, error=str(exc)))
        return False
    if not text.strip():
        return False
    try:
        asyncio.run(validate(settings.haproxy.binary, text, path))
    except ConfigRejected as exc:
        log.warning("existing config rejected; rewriting it", extra=_path(path, error=str(exc)))
        return False
    return True


def _path(path: Path, **more: str) -> dict[str, Any]:
    return {"fields": {"path": str(path), **more}}


def _run(args: argparse.Namespace, settings: Settings) -> int:
    def reload_settings() -> Settings:
        return load_settings(args.config, overrides=_overrides(args))

    from poller.runner import run_daemon  # the daemon's imports are not scan's to pay

    asyncio.run(run_daemon(settings, reload_settings))
    return EXIT_OK


def _check_config(args: argparse.Namespace, settings: Settings) -> int:
    resolved = resolve(settings.discovery, settings.ports())
    if args.json:
        sys.stdout.write(settings.model_dump_json(indent=2) + "\n")
    else:
        sys.stdout.write(
            f"ok: {resolved.plan.count:,} targets in {', '.join(resolved.subnets)}, "
            f"ports {', '.join(map(str, resolved.plan.ports))}\n"
        )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    problem = _misused(args)
    if problem is not None:
        parser.error(problem)
    logs.configure(args.log_level)
    try:
        settings = load_settings(args.config, overrides=_overrides(args))
        commands = {"scan": _scan, "run": _run, "render": _render, "check-config": _check_config}
        return commands[args.command](args, settings)
    except PollerError as exc:
        code = next((code for kind, code in EXIT_CODES if isinstance(exc, kind)), EXIT_INTERNAL)
        print(f"poller: error: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("poller: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
