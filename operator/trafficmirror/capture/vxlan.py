"""VXLAN (RFC 7348) decapsulation of AWS Traffic Mirroring datagrams.

Pure functions only: the receive loop calls them per datagram, the tests drive them from tables.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

VXLAN_PORT = 4789
HEADER_LEN = 8
FLAG_VNI_VALID = 0x08  # the "I" flag; AWS sets exactly this flag
ETH_HEADER_LEN = 14
MAX_VNI = 2**24 - 1

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
# 802.1Q, 802.1ad and the pre-standard QinQ type; a mirrored frame may carry up to two tags.
_VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))


class Reason(enum.StrEnum):
    """Why a datagram was not written to a session's file (the label of the malformed counter)."""

    SHORT_HEADER = "short_header"  # fewer than 8 bytes: no VXLAN header at all
    BAD_FLAGS = "bad_flags"  # the I flag is clear, so the VNI field means nothing
    SHORT_FRAME = "short_frame"  # header present but no complete Ethernet header behind it
    RECEIVE_TRUNCATED = "receive_truncated"  # larger than our receive buffer (MSG_TRUNC)
    SPOOFED = "spoofed"  # a session's VNI from an outer source address that is not the session's
    UNKNOWN_VNI = "unknown_vni"  # well formed, but no MirrorSession has this VNI


# What the receive loops reject, in the order the compiled loop reports them.
RECEIVE_REASONS = (Reason.SHORT_HEADER, Reason.BAD_FLAGS, Reason.SHORT_FRAME, Reason.RECEIVE_TRUNCATED, Reason.SPOOFED)


class Decapsulated(NamedTuple):
    vni: int
    frame_offset: int  # the inner Ethernet frame starts here in the datagram
    caplen: int  # bytes of the inner frame we actually have
    orig_len: int  # bytes the frame had on the wire, >= caplen


def parse(datagram: bytes | bytearray | memoryview, length: int | None = None) -> Decapsulated | Reason:
    """Validate the VXLAN header of one UDP payload and locate the inner frame.

    ``length`` lets the caller pass a reused receive buffer together with the datagram's size.
    """
    n = len(datagram) if length is None else length
    if n < HEADER_LEN:
        return Reason.SHORT_HEADER
    if not datagram[0] & FLAG_VNI_VALID:
        return Reason.BAD_FLAGS
    caplen = n - HEADER_LEN
    if caplen < ETH_HEADER_LEN:
        return Reason.SHORT_FRAME
    vni = (datagram[4] << 16) | (datagram[5] << 8) | datagram[6]
    return Decapsulated(vni, HEADER_LEN, caplen, original_length(datagram, HEADER_LEN, caplen))


def original_length(buf: bytes | bytearray | memoryview, off: int, caplen: int) -> int:
    """The length the inner frame had before AWS truncated it (target MTU or PacketLength).

    Ethernet has no length field, so it comes from the IP header: IPv4 total length or IPv6
    payload length, after any VLAN tags. When the frame is whole (or padded to the Ethernet
    minimum), or the IP header itself is cut off or not IP, the captured length is the answer:
    writing caplen < orig_len is what makes Wireshark say "packet size limited during capture"
    rather than "malformed packet".
    """
    end = off + caplen
    p = off + 12
    for _ in range(3):
        if p + 2 > end:
            return caplen
        ethertype = (buf[p] << 8) | buf[p + 1]
        if ethertype not in _VLAN_TPIDS:
            break
        p += 4
    else:
        return caplen
    l3 = p + 2
    if ethertype == _ETHERTYPE_IPV4:
        if l3 + 4 > end or buf[l3] >> 4 != 4:
            return caplen
        ip_len = (buf[l3 + 2] << 8) | buf[l3 + 3]
        if ip_len < 20:
            return caplen
    elif ethertype == _ETHERTYPE_IPV6:
        if l3 + 6 > end or buf[l3] >> 4 != 6:
            return caplen
        payload = (buf[l3 + 4] << 8) | buf[l3 + 5]
        if payload == 0:  # a jumbogram's length is in a hop-by-hop option; don't guess
            return caplen
        ip_len = 40 + payload
    else:
        return caplen
    wire = (l3 - off) + ip_len
    return wire if wire > caplen else caplen


def header(vni: int, flags: int = FLAG_VNI_VALID) -> bytes:
    """A VXLAN header, as a sender (AWS, or a test) writes it."""
    if not 0 <= vni <= MAX_VNI:
        raise ValueError(f"VNI {vni} is not a 24-bit value")
    return bytes((flags, 0, 0, 0, (vni >> 16) & 0xFF, (vni >> 8) & 0xFF, vni & 0xFF, 0))
