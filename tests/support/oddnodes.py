"""Badly behaved nodes for tests: each argument `KIND@ADDRESS:PORT` starts one listener.

KIND is one of: silent (accepts, never answers), banner (speaks SSH, as sshd),
status500, redirect (302 to an address outside any subnet), bigbody (200 with an 8 MiB body),
drip (headers, then a body byte every 100 ms), reset (accepts, then resets).
Prints `ready` on stdout once every listener is bound; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import sys

BIG = 8 * 1024 * 1024


async def serve(kind: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        if kind == "banner":
            # What sshd does: its banner first, then, on a non-SSH greeting, a complaint
            # and a close.
            writer.write(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
            await writer.drain()
            await reader.readline()
            writer.write(b"Invalid SSH identification string.\r\n")
            await writer.drain()
            return
        if kind == "silent":
            await asyncio.sleep(60)
            return
        if kind == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()
            return
        await reader.readuntil(b"\r\n\r\n")
        if kind == "status500":
            writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops\n")
        elif kind == "redirect":
            writer.write(
                b"HTTP/1.1 302 Found\r\nLocation: http://203.0.113.9/\r\nContent-Length: 0\r\n\r\n"
            )
        elif kind == "bigbody":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
            chunk = b"x" * 65536
            for _ in range(BIG // len(chunk)):
                writer.write(chunk)
                await writer.drain()
        elif kind == "drip":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(1000):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.1)
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(specs: list[str]) -> None:
    servers = []
    for spec in specs:
        kind, _, where = spec.partition("@")
        address, _, port = where.rpartition(":")
        server = await asyncio.start_server(
            lambda r, w, kind=kind: serve(kind, r, w), address, int(port)
        )
        servers.append(server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
