"""Who is on the local segment, asked with ARP before any TCP connect (the pre-sweep).

A TCP connect to an unused address on the segment makes the kernel resolve it: the
attempt holds a neighbour-table entry until resolution gives up (~3 s by default), so a
connect sweep of a /16 must crawl to stay a good neighbour (docs/ARCHITECTURE.md,
invariant 8). Asking "who has 10.0.3.7?" ourselves, on a raw packet socket, touches no
neighbour entry on our side; the kernel does not learn from replies it did not ask for
(arp_accept=0). Only the addresses that answer go on to the TCP + HTTP probe. A live
host answers ARP within microseconds, so a /16 is asked in a few seconds, and asked
twice: a reply lost in a busy bridge must not become a missed node.

Needs CAP_NET_RAW and an Ethernet interface whose network holds the subnet; `usable_link`
says where that holds, and `open_socket` fails with `ArpUnavailable` otherwise, so the
caller can fall back to the connect sweep. The frame codec is pure; the socket work is
one coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import ipaddress
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from poller.discovery.interfaces import host_networks
from poller.discovery.targets import Scope

ETH_P_ARP = 0x0806
_SOL_PACKET = 263
_PACKET_IGNORE_OUTGOING = 23  # Linux 4.20+: our own requests do not loop back to us
_SO_ATTACH_FILTER = 26
_SIOCGIFHWADDR = 0x8927
_ARPHRD_ETHER = 1
_BROADCAST = b"\xff" * 6
_RECEIVE_BUFFER = 4 * 1024 * 1024
_BATCH_SECONDS = 0.005  # send in small bursts, sleeping between them, to hold the rate
_SEND_RETRY_SECONDS = 0.002  # a full transmit queue (ENOBUFS) is waited out, not skipped
_MAX_SEND_RETRIES = 500


class ArpUnavailable(Exception):
    """An ARP pre-sweep cannot run here; the message says why (shown in the logs)."""


@dataclass(frozen=True)
class Link:
    """An Ethernet interface of ours, with the IPv4 network it sits on."""

    interface: str
    index: int
    mac: bytes
    address: str
    network: ipaddress.IPv4Network


def request_frame(link: Link, target: int) -> bytes:
    """A broadcast 'who has `target`? tell `link.address`' Ethernet frame."""
    sender = socket.inet_aton(link.address)
    return (
        _BROADCAST
        + link.mac
        + struct.pack("!HHHBBH", ETH_P_ARP, 1, 0x0800, 6, 4, 1)
        + link.mac
        + sender
        + b"\0" * 6
        + target.to_bytes(4, "big")
    )


def reply_sender(frame: bytes, own_address: int) -> int | None:
    """The IPv4 address that answered in an ARP reply to us, or None for anything else."""
    if len(frame) < 42:
        return None
    ethertype, htype, ptype, hlen, plen, op = struct.unpack_from("!HHHBBH", frame, 12)
    if (ethertype, htype, ptype, hlen, plen, op) != (ETH_P_ARP, 1, 0x0800, 6, 4, 2):
        return None
    if int.from_bytes(frame[38:42], "big") != own_address:
        return None
    return int.from_bytes(frame[28:32], "big")


def _filter_program(own_address: int) -> bytes:
    """Classic BPF: keep ARP replies whose target is us, drop the rest in the kernel, so
    the broadcast chatter of a busy segment never fills our receive buffer."""
    ld_h, ld_w, jeq, ret = 0x28, 0x20, 0x15, 0x06
    code = [
        (ld_h, 0, 0, 12),  # ethertype
        (jeq, 0, 5, ETH_P_ARP),
        (ld_h, 0, 0, 20),  # ARP operation
        (jeq, 0, 3, 2),  # reply
        (ld_w, 0, 0, 38),  # target protocol address
        (jeq, 0, 1, own_address),
        (ret, 0, 0, 0xFFFF),
        (ret, 0, 0, 0),
    ]
    return b"".join(struct.pack("HBBI", *instruction) for instruction in code)


def usable_link(network: str) -> Link | None:
    """The Ethernet interface whose own network holds all of `network`, if any."""
    subnet = ipaddress.ip_network(network, strict=False)
    if subnet.version != 4:
        return None
    for item in host_networks():
        on_link = ipaddress.IPv4Network(item.network)
        if not subnet.subnet_of(on_link):
            continue
        mac = _hardware_address(item.interface)
        if mac is None:
            continue
        return Link(
            item.interface, socket.if_nametoindex(item.interface), mac, item.address, on_link
        )
    return None


def _hardware_address(interface: str) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = interface.encode()[:15].ljust(40, b"\0")
        try:
            answer = fcntl.ioctl(sock.fileno(), _SIOCGIFHWADDR, request)
        except OSError:
            return None
    family = struct.unpack_from("H", answer, 16)[0]
    return answer[18:24] if family == _ARPHRD_ETHER else None


def open_socket(link: Link) -> socket.socket:
    """A non-blocking packet socket on `link` that only ever receives ARP replies to us."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    except PermissionError as exc:
        raise ArpUnavailable("no CAP_NET_RAW (raw packet sockets are not allowed)") from exc
    except OSError as exc:
        raise ArpUnavailable(f"packet socket: {exc.strerror or exc}") from exc
    try:
        program = _filter_program(int(ipaddress.IPv4Address(link.address)))
        buffer = ctypes.create_string_buffer(program)
        fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
        with contextlib.suppress(OSError):  # older kernels: the filter drops them anyway
            sock.setsockopt(_SOL_PACKET, _PACKET_IGNORE_OUTGOING, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
        sock.bind((link.interface, ETH_P_ARP))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ArpUnavailable(f"packet socket on {link.interface}: {exc.strerror or exc}") from exc
    return sock


@dataclass
class ArpSweep:
    """What the pre-sweep saw: the addresses that answered, and what it cost."""

    asked: int
    answered: set[int]
    requests_sent: int
    duration_seconds: float
    refused: list[int] = field(default_factory=list)  # outside the scope: never asked


async def ask(
    link: Link,
    addresses: Sequence[int],
    rate_per_second: int,
    attempts: int,
    reply_wait_seconds: float,
    on_answer: Callable[[int], None] | None = None,
    *,
    scope: Scope,
) -> ArpSweep:
    """Ask every address in `addresses` (IPv4 as ints), at most `rate_per_second` requests
    per second; addresses still silent are asked again, `attempts` times in all, and each
    round waits `reply_wait_seconds` after its last request. `on_answer` hears of each
    address at its first reply, so probing can start while the asking goes on. Raises
    `ArpUnavailable` when the socket cannot be opened, and OSError when the link itself
    fails mid-sweep. An address outside `scope` (the target plan) is refused before the
    socket opens: the seat belt for a bug that would make targets nobody named."""
    started = time.perf_counter()
    refused = [address for address in addresses if not scope.holds(4, address)]
    if refused:
        addresses = [address for address in addresses if scope.holds(4, address)]
    if not addresses:
        return ArpSweep(0, set(), 0, time.perf_counter() - started, refused)
    loop = asyncio.get_running_loop()
    own = int(ipaddress.IPv4Address(link.address))
    wanted = set(addresses)
    answered: set[int] = set()
    sent = 0
    sock = open_socket(link)

    def drain() -> None:
        while True:
            try:
                frame = sock.recv(128)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # surfaces on the next send
            sender = reply_sender(frame, own)
            if sender is not None and sender in wanted and sender not in answered:
                answered.add(sender)
                if on_answer is not None:
                    on_answer(sender)

    loop.add_reader(sock.fileno(), drain)
    try:
        template = bytearray(request_frame(link, 0))
        per_batch = max(1, int(rate_per_second * _BATCH_SECONDS))
        for _ in range(attempts):
            pending = [address for address in addresses if address not in answered]
            if not pending:
                break
            next_batch = loop.time()
            for offset in range(0, len(pending), per_batch):
                delay = next_batch - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_batch += _BATCH_SECONDS
                for address in pending[offset : offset + per_batch]:
                    template[38:42] = address.to_bytes(4, "big")
                    await _send(sock, template)
                    sent += 1
            await asyncio.sleep(reply_wait_seconds)
            drain()
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()
    return ArpSweep(len(wanted), answered, sent, time.perf_counter() - started, refused)


async def _send(sock: socket.socket, frame: bytearray) -> None:
    """Send one frame; a full transmit queue is waited out (bounded), never skipped."""
    for _ in range(_MAX_SEND_RETRIES):
        try:
            sock.send(frame)
            return
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
        await asyncio.sleep(_SEND_RETRY_SECONDS)
    raise OSError(errno.ENOBUFS, "the transmit queue stayed full")
