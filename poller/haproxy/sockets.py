"""One command over one of HAProxy's UNIX sockets (runtime API or master CLI).

HAProxy's CLI answers one command per connection in non-interactive mode. The write side
is shut down after sending (the master CLI waits for it before answering), and every wait
is bounded.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from poller.errors import HAProxyUnavailable

MAX_ANSWER_BYTES = 16 * 1024 * 1024


async def command(path: Path, line: str, within: float) -> str:
    """Send one command; return HAProxy's whole answer."""
    if "\n" in line or "\r" in line:
        raise ValueError(f"one command per call: {line!r}")
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                writer.write(line.encode() + b"\n")
                await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()
                chunks: list[bytes] = []
                size = 0
                while chunk := await reader.read(65536):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        raise HAProxyUnavailable(f"{path}: answer over {MAX_ANSWER_BYTES} bytes")
            finally:
                writer.close()
    except TimeoutError as exc:
        verb = line.split(maxsplit=1)[0] if line.strip() else line
        raise HAProxyUnavailable(f"{path}: no answer to {verb!r} within {within:g} s") from exc
    except OSError as exc:
        raise HAProxyUnavailable(f"{path}: {exc.strerror or exc}") from exc
    return b"".join(chunks).decode("utf-8", "replace")
