"""The command line's words: its commands and flags, their help (read from the settings'
own descriptions, so it never drifts), the combinations that are usage errors, and the
flags as settings overrides. Parses nothing but the arguments; no exit codes here.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from poller import __version__
from poller.config import Settings


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
        "-c",
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


def build_parser() -> argparse.ArgumentParser:
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
        action="extend",
        type=_ports,
        metavar="N[,N...]",
        help=_describe("discovery", "ports") + "; repeatable. With `services:` in the "
        "config: an ad-hoc scan of these ports with the top-level probe, the services aside",
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
        "render",
        parents=[common],
        help="print (or write) the HAProxy config for members",
        description="Print the HAProxy config for the members given (none: an empty "
        "backend, which answers 503), or write it atomically with --output. The template "
        "is haproxy.template, or the built-in one for haproxy.mode.",
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
        "check-config",
        parents=[common],
        help="validate the configuration and exit",
        description="Validate the settings (the file, POLLER_SECTION__KEY variables and "
        "flags together) and say how many targets they make; an invalid one exits 3 naming "
        "the field. --json prints the effective settings, every service resolved.",
    )
    check.add_argument("--json", action="store_true", help="print the effective settings as JSON")
    return parser


def _ports(text: str) -> list[int]:
    """`--port 3000` or `--port 3000,8080`, as POLLER_DISCOVERY__PORTS takes them."""
    try:
        return [int(word) for word in text.split(",") if word.strip()] or [int(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port or comma-separated ports: {text!r}") from None


def subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of command `name`, for its own usage line in an error."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise KeyError(name)


def unknown_flags(parser: argparse.ArgumentParser, extras: Sequence[str]) -> str:
    """What to say about arguments a command does not take: each one, and the flag it
    most likely meant (`--subnets`, the YAML key's spelling, is `--subnet`)."""
    known = [flag for action in parser._actions for flag in action.option_strings]
    said = []
    for extra in extras:
        flag = extra.split("=", 1)[0]
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
        if flag.startswith("-") and close:
            said.append(f"{extra} (did you mean {close[0]}?)")
        else:
            said.append(extra)
    return "unrecognized arguments: " + " ".join(said)


def misused(args: argparse.Namespace) -> str | None:
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


def overrides(args: argparse.Namespace, ad_hoc: bool = False) -> dict[str, Any]:
    """The flags as settings. `ad_hoc`: `scan --port` with services in the config scans
    those ports with the top-level probe, the services set aside."""
    overrides: dict[str, Any] = {}
    if ad_hoc:
        overrides["services"] = []
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
