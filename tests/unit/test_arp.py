"""The ARP frame codec and the kernel filter program: pure, no socket."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st

from poller.discovery import arp

LINK = arp.Link(
    "eth0", 2, bytes.fromhex("02aabbccddee"), "10.0.0.42", ipaddress.IPv4Network("10.0.0.0/16")
)
OWN = int(ipaddress.IPv4Address("10.0.0.42"))


def reply(sender: int, target: int = OWN, op: int = 2) -> bytes:
    """What a host sends back: an ARP reply from `sender` to `target`."""
    mac = bytes.fromhex("02ffffffff01")
    return (
        LINK.mac
        + mac
        + struct.pack("!HHHBBH", arp.ETH_P_ARP, 1, 0x0800, 6, 4, op)
        + mac
        + sender.to_bytes(4, "big")
        + LINK.mac
        + target.to_bytes(4, "big")
    )


def test_a_request_asks_for_the_target_on_behalf_of_our_address() -> None:
    frame = arp.request_frame(LINK, int(ipaddress.IPv4Address("10.0.3.7")))
    assert len(frame) == 42
    assert frame[:6] == b"\xff" * 6  # broadcast
    assert frame[6:12] == LINK.mac
    assert struct.unpack_from("!HH", frame, 12) == (arp.ETH_P_ARP, 1)
    assert struct.unpack_from("!H", frame, 20) == (1,)  # request
    assert frame[28:32] == ipaddress.IPv4Address("10.0.0.42").packed
    assert frame[38:42] == ipaddress.IPv4Address("10.0.3.7").packed


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_a_reply_to_us_names_its_sender(sender: int) -> None:
    assert arp.reply_sender(reply(sender), OWN) == sender


def test_requests_replies_to_others_and_runts_are_ignored() -> None:
    sender = int(ipaddress.IPv4Address("10.0.0.7"))
    assert arp.reply_sender(reply(sender, op=1), OWN) is None  # a request, not a reply
    assert arp.reply_sender(reply(sender, target=OWN + 1), OWN) is None  # not for us
    assert arp.reply_sender(reply(sender)[:41], OWN) is None
    ipv4 = bytearray(reply(sender))
    ipv4[12:14] = b"\x08\x00"
    assert arp.reply_sender(bytes(ipv4), OWN) is None


def test_the_filter_program_keeps_exactly_what_the_parser_accepts() -> None:
    """The kernel-side filter and `reply_sender` must agree; run the cBPF by hand."""
    program = arp._filter_program(OWN)
    code = [struct.unpack_from("HBBI", program, i) for i in range(0, len(program), 8)]

    def run(frame: bytes) -> bool:
        pc, acc = 0, 0
        for _ in range(len(code)):
            op, jt, jf, k = code[pc]
            if op == 0x28:
                acc = struct.unpack_from("!H", frame, k)[0]
            elif op == 0x20:
                acc = struct.unpack_from("!I", frame, k)[0]
            elif op == 0x15:
                pc += 1 + (jt if acc == k else jf)
                continue
            elif op == 0x06:
                return k != 0
            pc += 1
        raise AssertionError("the program ran off its end")

    sender = int(ipaddress.IPv4Address("10.0.0.7"))
    for frame in (reply(sender), reply(sender, op=1), reply(sender, target=OWN + 1)):
        assert run(frame) == (arp.reply_sender(frame, OWN) is not None)
