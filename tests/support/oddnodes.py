"""Badly behaved nodes for tests: each argument `KIND@ADDRESS:PORT` starts one listener.

KIND is one of: silent (accepts, never answers), banner (speaks SSH, as sshd),
status500, redirect (302 to an address outside any subnet), bigbody (200 with an 8 MiB body),
drip (headers, then a body byte every 100 ms), reset (accepts, then resets), endless (200
with a chunked body that never ends), gzipbomb (200, `Content-Encoding: gzip`, 64 KiB that
inflate to 64 MiB), garbage (random bytes instead of HTTP), headers (10,000 header lines),
mismatch (200 whose body lacks "hello"), evilid (a JSON identity carrying newlines, quotes
and HAProxy keywords), hugeid (a 4 MiB JSON identity), dies (passes checks of `/`, drops
any other request unanswered after reading it, saying `took METHOD PATH` on stdout), tls
(a real TLS server; needs
`--cert FILE` with key and certificate in one PEM).
Prints `ready` on stdout once every listener is bound; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import os
import signal
import socket
import ssl
import struct
import sys

BIG = 8 * 1024 * 1024
EVIL_IDENTITY = "x\"\n    server evil 10.9.9.9:80 check\n# ' backend nodes {{ hq }} \r\n\x00"


@functools.cache
def bomb() -> bytes:
    """64 MiB of zeros, gzipped to ~64 KiB (made once, at start)."""
    return gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)


def _json_response(document: object) -> bytes:
    body = json.dumps(document).encode()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    return head % len(body) + body


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
        head = await reader.readuntil(b"\r\n\r\n")
        if kind == "dies":
            # Health checks (`/`) pass; any other request is read whole, counted on
            # stdout (`took METHOD PATH`), then the connection is dropped unanswered, as by
            # a server that died mid-request.
            method, path = head.split(b" ", 2)[:2]
            if path == b"/":
                writer.write(_json_response({"hello": "world!", "host": "dies"}))
                await writer.drain()
                return
            length = next(
                (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                 if line.lower().startswith(b"content-length:")),
                0,
            )  # fmt: skip
            if length:
                await reader.readexactly(length)
            print(f"took {method.decode()} {path.decode()}", flush=True)
            return
        if kind == "endless":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n%s\r\n" % (65536, b"y" * 65536)
            for _ in range(100_000):  # bounded: ~6 GiB, far beyond any probe's patience
                writer.write(chunk)
                await writer.drain()
        elif kind == "gzipbomb":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                % len(bomb())
                + bomb()
            )
        elif kind == "garbage":
            writer.write(os.urandom(4096))
        elif kind == "headers":
            lines = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"z" * 40) for i in range(10_000))
            writer.write(b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 2\r\n\r\nok")
        elif kind == "mismatch":
            writer.write(_json_response({"bonjour": "monde"}))
        elif kind == "evilid":
            writer.write(_json_response({"hello": "world!", "host": EVIL_IDENTITY}))
        elif kind == "hugeid":
            writer.write(_json_response({"hello": "world!", "host": "h" * (4 * 1024 * 1024)}))
        elif kind == "status500":
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
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def main(argv: list[str]) -> None:
    tls = None
    if argv[:1] == ["--cert"]:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(argv[1])
        argv = argv[2:]
    if any(spec.startswith("gzipbomb@") for spec in argv):
        bomb()  # made before `ready`: no probe waits for it
    servers = []
    for spec in argv:
        kind, _, where = spec.partition("@")
        address, _, port = where.rpartition(":")
        handler_kind = "mismatch" if kind == "tls" else kind  # behind TLS: a plain answer
        server = await asyncio.start_server(
            lambda r, w, kind=handler_kind: serve(kind, r, w),
            address,
            int(port),
            ssl=tls if kind == "tls" else None,
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
