"""The Python and the compiled receive loops agree byte for byte (real loopback UDP sockets)."""

from __future__ import annotations

import socket
import struct

import pytest

from trafficmirror.capture import pcapng, receiver, vxlan
from trafficmirror.capture.fastrecv import FastReceiver

FRAME = bytes.fromhex("020000000002020000000001") + b"\x08\x00" + bytes([0x45, 0]) + struct.pack("!H", 1000)


def _datagrams() -> list[bytes]:
    return [
        vxlan.header(1) + FRAME + bytes(200),
        vxlan.header(2) + FRAME + bytes(3),  # truncated: orig_len 1014
        b"\x08\0\0",  # short header
        b"\0" * 30,  # no I flag
        vxlan.header(1) + bytes(5),  # short frame
        vxlan.header(1) + FRAME + bytes(986),
        vxlan.header(3) + bytes(14),
    ]


def _run(rx_cls: type[receiver.Receiver], fmt: str, snaplen: int) -> receiver.Batch:
    sock, _ = receiver.open_socket("127.0.0.1", 0, 1 << 20)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for d in _datagrams():
            tx.sendto(d, sock.getsockname())
        r = rx_cls(sock, fmt=fmt, snaplen=snaplen, keep_malformed=True)
        return r.recv_batch(64)
    finally:
        tx.close()
        sock.close()


@pytest.mark.parametrize(("fmt", "snaplen"), [("pcapng", 0), ("pcap", 0), ("pcapng", 64)])
def test_python_and_compiled_loops_agree(fmt: str, snaplen: int) -> None:
    slow, fast = _run(receiver.Receiver, fmt, snaplen), _run(FastReceiver, fmt, snaplen)
    for b in (slow, fast):
        assert b.datagrams == 7
        assert dict(b.malformed) == {"short_header": 1, "bad_flags": 1, "short_frame": 1}
        assert b.kernel_drops == 0
        assert sorted(b.groups) == [1, 2, 3]
    for vni in (1, 2, 3):
        s, f = slow.groups[vni], fast.groups[vni]
        assert (s.packets, s.wire_bytes) == (f.packets, f.wire_bytes)
        # Same records except the receive timestamps: zero those and compare bytes.
        assert _strip_ts(bytes(s.buf), fmt) == _strip_ts(bytes(f.buf), fmt)
    assert slow.groups[2].wire_bytes == 1014
    assert [(k.datagram, k.reason) for k in slow.kept] == [(k.datagram, k.reason) for k in fast.kept]
    assert all(k.source[0] == "127.0.0.1" for k in fast.kept)


def _strip_ts(buf: bytes, fmt: str) -> bytes:
    out = bytearray(buf)
    for start, _end, _ts, _orig in pcapng.iter_records(buf, fmt):
        if fmt == "pcapng":
            out[start + 12 : start + 20] = bytes(8)
        else:
            out[start : start + 8] = bytes(8)
    return bytes(out)
