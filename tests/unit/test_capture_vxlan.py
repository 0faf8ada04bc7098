"""VXLAN header validation and original-length recovery, table-driven."""

from __future__ import annotations

import struct

import pytest

from trafficmirror.capture.vxlan import Decapsulated, Reason, header, original_length, parse

ETH = bytes(12)


def ipv4(total_len: int, have: int) -> bytes:
    """An Ethernet+IPv4 frame claiming ``total_len`` IP bytes, of which ``have`` frame bytes exist."""
    ip = bytes([0x45, 0]) + struct.pack("!H", total_len) + bytes(16)
    frame = ETH + b"\x08\x00" + ip + bytes(max(0, total_len - 20))
    return frame[:have]


def ipv6(payload_len: int, have: int) -> bytes:
    ip = bytes([0x60, 0, 0, 0]) + struct.pack("!H", payload_len) + bytes(34)
    return (ETH + b"\x86\xdd" + ip + bytes(payload_len))[:have]


@pytest.mark.parametrize(
    ("datagram", "expected"),
    [
        (b"", Reason.SHORT_HEADER),
        (b"\x08\0\0\0\0\0\x01", Reason.SHORT_HEADER),
        (b"\x00\0\0\0\0\0\x01\0" + bytes(60), Reason.BAD_FLAGS),
        (b"\xf7\0\0\0\0\0\x01\0" + bytes(60), Reason.BAD_FLAGS),  # every flag but I
        (header(1), Reason.SHORT_FRAME),
        (header(1) + bytes(13), Reason.SHORT_FRAME),
        (header(1) + bytes(14), Decapsulated(1, 8, 14, 14)),
        (header(0xFFFFFF) + ipv4(100, 114), Decapsulated(0xFFFFFF, 8, 114, 114)),
        (
            b"\x0c\0\0\0\x00\x30\x39\xff" + ipv4(100, 114),
            Decapsulated(12345, 8, 114, 114),
        ),  # reserved ignored
        (header(7) + ipv4(1500, 128), Decapsulated(7, 8, 128, 1514)),  # AWS truncated
    ],
)
def test_parse(datagram: bytes, expected: object) -> None:
    assert parse(datagram) == expected


def test_parse_with_a_reused_buffer_uses_the_given_length() -> None:
    buf = bytearray(header(5) + ipv4(100, 114)) + bytearray(1000)
    assert parse(buf, 8 + 114) == Decapsulated(5, 8, 114, 114)


VLAN = b"\x81\x00\x00\x2a"
QINQ = b"\x88\xa8\x00\x01" + VLAN


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (ipv4(1500, 1514), 1514),  # whole
        (ipv4(1500, 200), 1514),  # truncated
        (ipv4(28, 42) + bytes(18), 60),  # Ethernet padding: the captured length is right
        (ipv4(1500, 17), 17),  # IP header itself cut before the length field
        (ipv4(10, 34) + bytes(26), 60),  # nonsense total length: don't invent
        (ipv6(1460, 1514), 1514),
        (ipv6(1460, 100), 1514),
        (ipv6(0, 54) + bytes(46), 100),  # jumbogram: unknown
        (ETH + VLAN + b"\x08\x00" + ipv4(1000, 1014)[14:][:100], 1018),
        (ETH + QINQ + b"\x08\x00" + ipv4(1000, 1014)[14:][:100], 1022),
        (ETH + b"\x08\x06" + bytes(28), 42),  # ARP: no length to recover
        (ETH + b"\x08\x00" + bytes([0x60]) + bytes(30), 45),  # version says not IPv4
        (ETH + VLAN * 3 + b"\x08\x00" + bytes(40), 66),  # too many tags: leave it
        (ETH + b"\x81", 13),
    ],
)
def test_original_length(frame: bytes, expected: int) -> None:
    assert original_length(frame, 0, len(frame)) == expected


def test_header_rejects_values_over_24_bits() -> None:
    with pytest.raises(ValueError, match="24-bit"):
        header(1 << 24)
