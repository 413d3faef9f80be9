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

from poller import logs
from poller.arguments import build_parser, misused, overrides, subcommand, unknown_flags
from poller.config import Settings, load_settings
from poller.discovery.plans import plan_sweep
from poller.discovery.probing import Prober
from poller.discovery.sweeping import run_sweep
from poller.endpoints import Endpoint
from poller.errors import CheckUnavailable, ConfigError, InstallError, PollerError, SweepError
from poller.files import write_atomic
from poller.results import Progress, Sweep
from poller.status import terminal
from poller.status.reports import scan_json, scan_table, summary_line

log = logging.getLogger("poller")

EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug: please report it with the log
EXIT_USAGE = 2  # argparse's own code for bad flags
EXIT_CONFIG = 3  # the configuration (file, environment or flags) is invalid
EXIT_SWEEP_FAILED = 4  # the sweep failed on the poller's own side (its network)
EXIT_IO = 5  # a file or directory poller must write could not be (the message names it)
EXIT_HAPROXY = 6  # HAProxy could not be asked (`haproxy -c` missing or hanging)
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES: list[tuple[type[PollerError], int]] = [
    (ConfigError, EXIT_CONFIG),
    (SweepError, EXIT_SWEEP_FAILED),
    (InstallError, EXIT_IO),
    (CheckUnavailable, EXIT_HAPROXY),
]


def _scan(args: argparse.Namespace, settings: Settings) -> int:
    resolved = plan_sweep(settings.discovery, settings.ports())

    # A person watching a terminal sees how far a long sweep has come; a pipe sees nothing.
    live = sys.stderr.isatty() and not args.quiet and not (args.json and not sys.stdout.isatty())

    async def sweep() -> Sweep:
        services = settings.resolved_services
        concurrency = settings.discovery.concurrency
        scope = resolved.scope
        async with Prober(settings.probe, concurrency, scope, services=services) as prober:
            if not live:
                return await run_sweep(resolved, prober, keep_all=args.all)
            progress = Progress(resolved.plan.count, time.monotonic())
            async with asyncio.TaskGroup() as group:
                line = group.create_task(terminal.show(progress, sys.stderr))
                try:
                    return await run_sweep(resolved, prober, args.all, progress=progress)
                finally:
                    line.cancel()

    found = asyncio.run(sweep())
    if found.failure is not None:
        raise SweepError(f"sweep failed, its results mean nothing: {found.failure}")
    if args.render:
        backends = {s.name: s.backend for s in settings.resolved_services}
        servers: dict[str, list[Endpoint]] = {}
        for result in found.healthy:
            servers.setdefault(backends[result.service], []).append(result.endpoint)
        _emit_config(settings, servers, args.output)
        print(summary_line(resolved, found), file=sys.stderr)
    elif args.json:
        sys.stdout.write(json.dumps(scan_json(resolved, found), indent=2) + "\n")
    else:
        several = len(settings.resolved_services) > 1
        sys.stdout.write(scan_table(resolved, found, several))
    return EXIT_OK


def _emit_config(
    settings: Settings, servers: dict[str, list[Endpoint]], output: Path | None
) -> None:
    from poller.haproxy.rendering import context, load_template, render

    template = load_template(settings.haproxy.template, settings.haproxy.mode)
    text = render(template, context(settings, servers))
    if output is None:
        sys.stdout.write(text)
    else:
        write_atomic(output, text.encode())


def _parse_members(settings: Settings, texts: list[str]) -> dict[str, list[Endpoint]]:
    """`--member [SERVICE=]IP:PORT` values, by backend."""
    services = settings.resolved_services
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
        haproxy = settings.haproxy
        asyncio.run(validate(haproxy.binary, text, path, haproxy.user_configs))
    except ConfigRejected as exc:
        log.warning("existing config rejected; rewriting it", extra=_path(path, error=str(exc)))
        return False
    return True


def _path(path: Path, **more: str) -> dict[str, Any]:
    return {"fields": {"path": str(path), **more}}


def _user_configs(settings: Settings) -> None:
    """`haproxy.mode: backends`: the user's files must give poller what it needs (a
    ConfigError says what to add); what only may not work as expected is logged."""
    if settings.haproxy.mode != "backends":
        return
    from poller.haproxy.configs import check_user_configs

    backends = [service.backend for service in settings.resolved_services]
    for warning in check_user_configs(settings.haproxy, backends):
        log.warning("your HAProxy config", extra={"fields": {"warning": warning}})


def _run(args: argparse.Namespace, settings: Settings) -> int:
    def reload_settings() -> Settings:
        loaded = load_settings(args.config, overrides=overrides(args))
        _user_configs(loaded)
        return loaded

    from poller.daemon.runner import run_daemon  # the daemon's imports are not scan's to pay

    asyncio.run(run_daemon(settings, reload_settings))
    return EXIT_OK


def _check_config(args: argparse.Namespace, settings: Settings) -> int:
    resolved = plan_sweep(settings.discovery, settings.ports())
    if args.json:
        sys.stdout.write(json.dumps(settings.effective(), indent=2) + "\n")
    else:
        sys.stdout.write(
            f"ok: {resolved.plan.count:,} targets in {', '.join(resolved.subnets)}, "
            f"ports {', '.join(map(str, resolved.plan.ports))}\n"
        )
    return EXIT_OK


def _has_services(path: Path | None) -> bool:
    """Whether the settings (without flags) have `services:`; a file that cannot be
    loaded says so when it is loaded for real."""
    try:
        return bool(load_settings(path).services)
    except PollerError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    command = subcommand(parser, args.command)  # errors show the command's own usage
    if extras:
        command.error(unknown_flags(command, extras))
    problem = misused(args)
    if problem is not None:
        command.error(problem)
    logs.configure(args.log_level)
    try:
        ad_hoc = args.command == "scan" and bool(args.port) and _has_services(args.config)
        if ad_hoc:
            log.info(
                "--port: an ad-hoc scan of these ports with the top-level probe; the "
                "services in the config are set aside"
            )
        settings = load_settings(args.config, overrides=overrides(args, ad_hoc))
        if args.command in ("run", "render", "check-config"):
            _user_configs(settings)
        commands = {"scan": _scan, "run": _run, "render": _render, "check-config": _check_config}
        return commands[args.command](args, settings)
    except PollerError as exc:
        code = next((code for kind, code in EXIT_CODES if isinstance(exc, kind)), EXIT_INTERNAL)
        print(f"poller: error: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("poller: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
