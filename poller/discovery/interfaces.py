"""The host's own IPv4 networks, for `subnets: auto` (the sidecar's view of its network).

Reads the kernel's interface list with the classic ioctls, so no extra dependency and no
subprocess. Only this module touches the host's interfaces; what to do with the networks
is `targets`' job.
"""

from __future__ import annotations

import array
import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass

from poller.errors import TargetsError

_SIOCGIFCONF = 0x8912
_SIOCGIFFLAGS = 0x8913
_SIOCGIFNETMASK = 0x891B
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_IFREQ_SIZE = 40  # struct ifreq on 64-bit Linux: 16-byte name + 24-byte union
_MAX_INTERFACES = 1024


@dataclass(frozen=True)
class InterfaceNetwork:
    interface: str
    address: str
    network: str  # CIDR, e.g. 192.168.42.0/24


def host_networks() -> list[InterfaceNetwork]:
    """Every IPv4 address of an up, non-loopback interface, with its network."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        buffer = array.array("B", b"\0" * (_IFREQ_SIZE * _MAX_INTERFACES))
        address, _ = buffer.buffer_info()
        request = struct.pack("iL", len(buffer), address)
        length = struct.unpack("iL", fcntl.ioctl(sock.fileno(), _SIOCGIFCONF, request))[0]
        raw = buffer.tobytes()[:length]
        found: list[InterfaceNetwork] = []
        for offset in range(0, length, _IFREQ_SIZE):
            name_bytes = raw[offset : offset + 16]
            name = name_bytes.split(b"\0", 1)[0].decode()
            ip = socket.inet_ntoa(raw[offset + 20 : offset + 24])
            flags = struct.unpack("H", _ifreq(sock, _SIOCGIFFLAGS, name_bytes)[16:18])[0]
            if flags & _IFF_LOOPBACK or not flags & _IFF_UP or ip.startswith("127."):
                continue
            mask = socket.inet_ntoa(_ifreq(sock, _SIOCGIFNETMASK, name_bytes)[20:24])
            network = ipaddress.IPv4Network(f"{ip}/{mask}", strict=False)
            found.append(InterfaceNetwork(name, ip, str(network)))
    return sorted(found, key=lambda item: (item.network, item.address))


def _ifreq(sock: socket.socket, request: int, name: bytes) -> bytes:
    return fcntl.ioctl(sock.fileno(), request, name.ljust(_IFREQ_SIZE, b"\0"))


def auto_subnets() -> tuple[list[str], list[str]]:
    """(networks to sweep, own addresses to exclude) for `subnets: auto`."""
    found = host_networks()
    if not found:
        raise TargetsError(
            "discovery.subnets",
            "`auto` found no up, non-loopback IPv4 interface; list the subnets instead",
        )
    networks = sorted({item.network for item in found})
    return networks, sorted({item.address for item in found})
