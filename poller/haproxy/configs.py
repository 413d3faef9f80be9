"""The config file HAProxy runs: validate a candidate with `haproxy -c`, install it
atomically, and keep the last known good copy to return to."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path

from poller import files
from poller.config import HAProxySettings
from poller.errors import CheckUnavailable, ConfigError, ConfigRejected, InstallError
from poller.haproxy import userconfigs

MAX_MESSAGE_CHARS = 2000
CHECK_TIMEOUT_SECONDS = 60.0


def last_good_path(config: Path) -> Path:
    return config.with_name(config.name + ".last-good")


async def validate(binary: str, text: str, beside: Path, before: Sequence[Path] = ()) -> None:
    """Raise ConfigRejected with HAProxy's message if `haproxy -c` refuses `text`, loaded
    after the files `before` (the user's own, with `haproxy.mode: backends`), as HAProxy
    will load them."""
    staged = files.stage(beside, text.encode())
    loaded = [word for path in before for word in ("-f", str(path))]
    try:
        code, output = await _haproxy(binary, "-c", *loaded, "-f", str(staged))
        if code != 0:
            message = output.decode("utf-8", "replace").strip().replace(str(staged), "<staged>")
            raise ConfigRejected(
                f"HAProxy rejected the rendered config: {message[:MAX_MESSAGE_CHARS]}"
            )
    finally:
        staged.unlink(missing_ok=True)


async def binary_version(binary: str) -> str:
    """What `haproxy -v` says first (`HAProxy version 3.0.11-1 ...`), "" if it cannot run."""
    try:
        _, output = await _haproxy(binary, "-v")
    except CheckUnavailable:
        return ""
    return output.decode("utf-8", "replace").partition("\n")[0].strip()


async def _haproxy(binary: str, *args: str) -> tuple[int, bytes]:
    """Run the HAProxy binary (bounded); its exit code and what it printed."""
    try:
        proc = await asyncio.create_subprocess_exec(
            binary, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
    except OSError as exc:
        raise CheckUnavailable(f"cannot run {binary!r} to check the config: {exc}") from exc
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            output, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CheckUnavailable(
            f"{binary} {args[0]} took over {CHECK_TIMEOUT_SECONDS:g} s"
        ) from None
    return proc.returncode or 0, output


def major_minor(version: str) -> str | None:
    """`3.0` from `HAProxy version 3.0.11-1+deb13u4` or `3.0.11-1`; None without one."""
    found = re.search(r"(?<![\d.])(\d+\.\d+)\.\d+", version)
    return found.group(1) if found else None


def install(config: Path, text: str) -> None:
    files.write_atomic(config, text.encode())


def remember_good(config: Path, text: str) -> None:
    files.write_atomic(last_good_path(config), text.encode())


def restore_last_good(config: Path) -> bool:
    """Put the last known good config back; False when there is none."""
    good = files.read_bytes(last_good_path(config))
    if good is None:
        return False
    try:
        files.write_atomic(config, good)
    except InstallError:
        return False
    return True


def check_user_configs(settings: HAProxySettings, backends: Sequence[str]) -> list[str]:
    """`haproxy.mode: backends`: read the user's own config files and check they give
    poller what it needs; ConfigError naming what to add or change, else the warnings."""
    texts: dict[str, str] = {}
    for path in settings.user_configs:
        try:
            texts[str(path)] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError("haproxy.user_configs", f"{path}: cannot read: {reason}") from exc
    found = userconfigs.check(texts, settings.admin_socket, backends)
    if found.errors:
        raise ConfigError("haproxy.user_configs", "\n".join(found.errors))
    return found.warnings
