"""Splitting one VNI's framed packets by pod: the writer stage of a podSelector session.

The receive loop groups a batch by VNI (one source ENI); a pod's IP is one of that ENI's
addresses, so a packet belongs to a pod when its inner IPv4 or IPv6 source or destination is the
pod's IP. Only the pods of the packet's own source are looked at: a packet between pods on two
ENIs is mirrored once by each, and each copy goes to its own pod's file.

A packet between two selected pods of one source goes to both pods' files. For the accounting
(sent = written + filtered out + drops, each datagram once) one of the two copies is the
packet's own, the pod of its inner source; the other is an extra copy, counted only in the pod's
own figures. Packets that match no pod are counted as filtered out and written nowhere.

Pure functions over the framed bytes (our own EPBs or pcap records, little-endian); no I/O.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from trafficmirror.capture.batch import Group

_EPB = struct.Struct("<4xI4xIIII")  # total length, ts high, ts low, captured length, original length
_EPB_FRAME = 28
_PCAP = struct.Struct("<IIII")  # seconds, nanoseconds, captured length, original length
_PCAP_FRAME = 16
_IPV4 = b"\x08\x00"
_IPV6 = b"\x86\xdd"
_VLAN = (b"\x81\x00", b"\x88\xa8", b"\x91\x00")


def address_key(ip: str) -> bytes | None:
    """An address as the bytes it has in an IP header (4 or 16), None when it is no address."""
    try:
        return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    except (OSError, ValueError):
        return None


def index_of(ips: list[str]) -> dict[bytes, int]:
    """Address bytes -> the index of its pod in ``ips`` (the first one, should two share it)."""
    out: dict[bytes, int] = {}
    for i, ip in enumerate(ips):
        k = address_key(ip)
        if k is not None:
            out.setdefault(k, i)
    return out


def inner_addresses(frame: bytes, start: int, caplen: int) -> tuple[bytes, bytes] | None:
    """(source, destination) of the IPv4/IPv6 packet in the Ethernet frame at ``start``, after up
    to two VLAN tags; None when the frame is no IP or too short to hold both addresses."""
    et = start + 12
    end = start + caplen
    ethertype = frame[et : et + 2]
    for _ in range(2):
        if ethertype not in _VLAN:
            break
        et += 4
        ethertype = frame[et : et + 2]
    l3 = et + 2
    if ethertype == _IPV4:
        if l3 + 20 > end:
            return None
        return frame[l3 + 12 : l3 + 16], frame[l3 + 16 : l3 + 20]
    if ethertype == _IPV6:
        if l3 + 40 > end:
            return None
        return frame[l3 + 8 : l3 + 24], frame[l3 + 24 : l3 + 40]
    return None


@dataclass
class Run:
    """Consecutive records of one pod's file that are all the packet's own copy, or all extra."""

    group: Group
    extra: bool


@dataclass
class Split:
    runs: dict[int, list[Run]] = field(default_factory=dict)  # pod index -> its runs, in order
    filtered: int = 0  # packets that matched no pod
    filtered_bytes: int = 0


_SplitPods = Callable[
    [bytes | bytearray, bool, dict[bytes, int], bool],
    tuple[list[tuple[int, bool, bytes, int, int, int, int]], int, int],
]
_split_pods: _SplitPods | None
try:
    from trafficmirror.capture._fastrecv import split_pods as _split_pods
except ImportError:  # built without a compiler: the Python split below
    _split_pods = None


def split(g: Group, fmt: str, index: dict[bytes, int], per_pod: bool = True) -> Split:
    """Split a VNI's group by pod. ``per_pod`` False: one stream (index 0) with every packet that
    matches any pod, once (``perSession``). The compiled twin when built, else ``split_python``:
    the same runs, each pod's in order."""
    if _split_pods is None:
        return split_python(g, fmt, index, per_pod)
    runs, filtered, filtered_bytes = _split_pods(g.buf, fmt == "pcapng", index, per_pod)
    out = Split(filtered=filtered, filtered_bytes=filtered_bytes)
    for pod, extra, buf, packets, wire, first, last in runs:
        out.runs.setdefault(pod, []).append(Run(Group(buf, packets, wire, first, last), bool(extra)))
    return out


def split_python(g: Group, fmt: str, index: dict[bytes, int], per_pod: bool = True) -> Split:
    """``split`` in Python: the reference the compiled one is held to."""
    buf = g.buf if isinstance(g.buf, bytes) else bytes(g.buf)
    out = Split()
    runs = out.runs
    # Per pod: the open run's buffer, its kind, packets, wire bytes, first and last timestamp.
    open_: dict[int, _Open] = {}
    get = index.get
    pcapng_fmt = fmt == "pcapng"
    pos, n = 0, len(buf)
    while pos < n:
        if pcapng_fmt:
            total, hi, lo, caplen, orig = _EPB.unpack_from(buf, pos)
            frame = pos + _EPB_FRAME
            ts = (hi << 32) | lo
            end = pos + total
        else:
            sec, nsec, caplen, orig = _PCAP.unpack_from(buf, pos)
            frame = pos + _PCAP_FRAME
            ts = sec * 1_000_000_000 + nsec
            end = frame + caplen
        addrs = inner_addresses(buf, frame, caplen)
        src = dst = None
        if addrs is not None:
            src, dst = get(addrs[0]), get(addrs[1])
        if src is None and dst is None:
            out.filtered += 1
            out.filtered_bytes += orig
            pos = end
            continue
        record = buf[pos:end]
        if not per_pod:
            _append(open_, runs, 0, False, record, orig, ts)
        elif src is not None:
            _append(open_, runs, src, False, record, orig, ts)
            if dst is not None and dst != src:
                _append(open_, runs, dst, True, record, orig, ts)
        else:
            assert dst is not None
            _append(open_, runs, dst, False, record, orig, ts)
        pos = end
    for pod, state in open_.items():
        runs.setdefault(pod, []).append(_close(state))
    return out


class _Open:
    __slots__ = ("buf", "extra", "first", "last", "packets", "wire")

    def __init__(self, record: bytes, extra: bool, orig: int, ts: int) -> None:
        self.buf = bytearray(record)
        self.extra = extra
        self.packets = 1
        self.wire = orig
        self.first = self.last = ts


def _append(
    open_: dict[int, _Open], runs: dict[int, list[Run]], pod: int, extra: bool, record: bytes, orig: int, ts: int
) -> None:
    state = open_.get(pod)
    if state is None or state.extra is not extra:
        if state is not None:
            runs.setdefault(pod, []).append(_close(state))
        open_[pod] = _Open(record, extra, orig, ts)
        return
    state.buf += record
    state.packets += 1
    state.wire += orig
    state.last = ts


def _close(state: _Open) -> Run:
    return Run(Group(state.buf, state.packets, state.wire, state.first, state.last), state.extra)
