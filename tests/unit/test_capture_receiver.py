"""The Python and the compiled receive loops agree byte for byte (real loopback UDP sockets), frame
exactly as pcapng.enhanced_packet / pcap_record do, account for every datagram of a batch however
many VNIs it holds, check outer sources, and keep their state per receiver."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

import pytest

from trafficmirror.capture import pcapng, receiver, vxlan
from trafficmirror.capture.batch import MAX_BATCH, Batch, Receiver
from trafficmirror.capture.fastrecv import FastReceiver

FRAME = bytes.fromhex("020000000002020000000001") + b"\x08\x00" + bytes([0x45, 0]) + struct.pack("!H", 1000)
LOOPS: list[type[Receiver]] = [receiver.PyReceiver, FastReceiver]  # type: ignore[list-item]


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


def _socket() -> socket.socket:
    sock, _ = receiver.open_socket("127.0.0.1", 0, 4 << 20)
    return sock


def _send(sock: socket.socket, datagrams: list[bytes], source: str = "127.0.0.1") -> None:
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind((source, 0))
    try:
        for d in datagrams:
            tx.sendto(d, sock.getsockname())
    finally:
        tx.close()


def _receive_all(rx: Receiver, expected: int) -> list[Batch]:
    out: list[Batch] = []
    got, deadline = 0, time.monotonic() + 10
    while got < expected and time.monotonic() < deadline:
        b = rx.recv_batch(MAX_BATCH)
        got += b.datagrams
        out.append(b)
    assert got == expected
    return out


def _run(rx_cls: type[Receiver], fmt: str, snaplen: int) -> Batch:
    sock = _socket()
    try:
        _send(sock, _datagrams())
        r = rx_cls(sock, fmt=fmt, snaplen=snaplen, keep_malformed=True)  # type: ignore[call-arg]
        return r.recv_batch(64)
    finally:
        sock.close()


def _strip_ts(buf: bytes, fmt: str) -> bytes:
    out = bytearray(buf)
    for start, _end, _ts, _orig in pcapng.iter_records(buf, fmt):
        if fmt == "pcapng":
            out[start + 12 : start + 20] = bytes(8)
        else:
            out[start : start + 8] = bytes(8)
    return bytes(out)


def _frame(buf: bytes, start: int) -> bytes:
    caplen = struct.unpack_from("<I", buf, start + 20)[0]
    return buf[start + 28 : start + 28 + caplen]


@pytest.mark.parametrize(("fmt", "snaplen"), [("pcapng", 0), ("pcap", 0), ("pcapng", 64)])
def test_python_and_compiled_loops_agree(fmt: str, snaplen: int) -> None:
    slow, fast = _run(receiver.PyReceiver, fmt, snaplen), _run(FastReceiver, fmt, snaplen)  # type: ignore[arg-type]
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


@pytest.mark.parametrize("rx_cls", LOOPS, ids=["python", "compiled"])
@pytest.mark.parametrize(("fmt", "snaplen"), [("pcapng", 0), ("pcap", 0), ("pcapng", 40), ("pcap", 17)])
def test_framing_is_pcapng_module_framing(rx_cls: type[Receiver], fmt: str, snaplen: int) -> None:
    """Each record, timestamps included, is exactly what pcapng.enhanced_packet / pcap_record
    write for that frame: one framing, held byte for byte."""
    rng = random.Random(7)
    sizes = [14, 15, 16, 17, 60, 61, 62, 63, 1400, 1401, 9001]
    dgrams = [vxlan.header(9) + FRAME + rng.randbytes(n) for n in sizes]
    sock = _socket()
    try:
        _send(sock, dgrams)
        (b,) = _receive_all(rx_cls(sock, fmt=fmt, snaplen=snaplen), len(dgrams))  # type: ignore[call-arg]
    finally:
        sock.close()
    g = b.groups[9]
    records = list(pcapng.iter_records(bytes(g.buf), fmt))
    assert len(records) == len(dgrams) == g.packets
    for (start, end, ts, orig), d in zip(records, dgrams, strict=True):
        frame = d[8:]
        cap = frame[: snaplen or len(frame)]
        expected_orig = vxlan.original_length(d, 8, len(frame))
        assert orig == expected_orig
        want = (
            pcapng.enhanced_packet(ts, cap, expected_orig)
            if fmt == "pcapng"
            else pcapng.pcap_record(ts, cap, expected_orig)
        )
        assert bytes(g.buf[start:end]) == want


@pytest.mark.parametrize("rx_cls", LOOPS, ids=["python", "compiled"])
@pytest.mark.parametrize("seed", range(4))
def test_every_datagram_of_a_batch_is_framed_or_counted_however_many_vnis(rx_cls: type[Receiver], seed: int) -> None:
    """A full batch of up to 256 distinct VNIs (more than any fixed group table would hold):
    datagrams = framed + rejected, and each VNI gets exactly its frames, in order."""
    rng = random.Random(seed)
    n_vnis = rng.choice([1, 63, 64, 65, 200, 256, 5000])
    dgrams: list[bytes] = []
    for i in range(3 * MAX_BATCH):
        if rng.random() < 0.1:
            dgrams.append(rng.randbytes(rng.randint(0, 30)))  # garbage of every kind
        else:
            dgrams.append(vxlan.header(rng.randrange(n_vnis)) + FRAME + i.to_bytes(4, "big"))
    sock = _socket()
    try:
        _send(sock, dgrams)
        batches = _receive_all(rx_cls(sock), len(dgrams))  # type: ignore[call-arg]
    finally:
        sock.close()
    framed: dict[int, list[bytes]] = {}
    rejected = 0
    for b in batches:
        rejected += sum(b.malformed.values())
        for vni, g in b.groups.items():
            recs = list(pcapng.iter_records(bytes(g.buf), "pcapng"))
            assert len(recs) == g.packets
            framed.setdefault(vni, []).extend(_frame(bytes(g.buf), s) for s, _e, _t, _o in recs)
    assert sum(map(len, framed.values())) + rejected == len(dgrams)
    want: dict[int, list[bytes]] = {}
    for d in dgrams:
        res = vxlan.parse(d)
        if not isinstance(res, vxlan.Reason):
            want.setdefault(res.vni, []).append(d[8:])
    assert framed == want


@pytest.mark.parametrize("rx_cls", LOOPS, ids=["python", "compiled"])
def test_a_checked_vni_accepts_only_its_sources(rx_cls: type[Receiver]) -> None:
    sock = _socket()
    try:
        rx = rx_cls(sock, keep_malformed=True)  # type: ignore[call-arg]
        rx.set_sources({7: {"127.0.0.2"}, 8: set()})
        _send(sock, [vxlan.header(7) + FRAME, vxlan.header(8) + FRAME, vxlan.header(9) + FRAME], "127.0.0.1")
        _send(sock, [vxlan.header(7) + FRAME, vxlan.header(8) + FRAME, vxlan.header(9) + FRAME], "127.0.0.2")
        b = _receive_all(rx, 6)
    finally:
        sock.close()
    packets = {vni: sum(x.groups[vni].packets for x in b if vni in x.groups) for vni in (7, 8, 9)}
    assert packets == {7: 1, 8: 0, 9: 2}  # 9 is unchecked; 8 has no known source: nothing passes
    assert sum((x.malformed for x in b), start=type(b[0].malformed)()) == {"spoofed": 3}
    kept = [k for x in b for k in x.kept]
    assert [(k.source[0], k.reason) for k in kept] == [
        ("127.0.0.1", "spoofed"),
        ("127.0.0.1", "spoofed"),
        ("127.0.0.2", "spoofed"),
    ]


@pytest.mark.parametrize("rx_cls", LOOPS, ids=["python", "compiled"])
def test_two_receivers_on_two_threads_never_mix_frames(rx_cls: type[Receiver]) -> None:
    """Each receiver's buffers are its own: two threads, two sockets, every frame lands in its
    own receiver's batch intact (the compiled loop releases the GIL around recvmmsg)."""
    n = 20_000
    socks = [_socket(), _socket()]
    results: list[list[bytes]] = [[], []]

    def consume(i: int) -> None:
        rx = rx_cls(socks[i])  # type: ignore[call-arg]
        got, deadline = 0, time.monotonic() + 60
        while got < n and time.monotonic() < deadline:
            b = rx.recv_batch(MAX_BATCH)
            got += b.datagrams
            for g in b.groups.values():
                buf = bytes(g.buf)
                results[i].extend(_frame(buf, s) for s, _e, _t, _o in pcapng.iter_records(buf, "pcapng"))
            if not b.datagrams:
                time.sleep(0.0005)

    threads = [threading.Thread(target=consume, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    try:
        for chunk in range(0, n, 500):  # two senders interleaved, paced so no buffer overflows
            for i in (0, 1):
                _send(
                    socks[i],
                    [
                        vxlan.header(100 + i) + FRAME + bytes([i]) * 40 + k.to_bytes(4, "big")
                        for k in range(chunk, chunk + 500)
                    ],
                )
            time.sleep(0.002)
    finally:
        for t in threads:
            t.join()
        for s in socks:
            s.close()
    for i in (0, 1):
        assert results[i] == [_numbered(100 + i, i, k)[8:] for k in range(n)]


def _numbered(vni: int, fill: int, k: int) -> bytes:
    return vxlan.header(vni) + FRAME + bytes([fill]) * 40 + k.to_bytes(4, "big")


@pytest.mark.parametrize("nvni", [1, 3, 40, 256, 257, 600])
@pytest.mark.parametrize("fmt", ["pcapng", "pcap"])
def test_holding_hands_out_every_record_in_order_once(nvni: int, fmt: str) -> None:
    """The compiled loop with ``hold``: over the batches and take_held, each VNI's records are
    exactly those the loop without hold frames (same bytes, same order), at most one group per
    VNI per batch, packet and wire counts adding up; and with more VNIs than it may hold, it says
    so (held_full) and hands the rest out batch by batch. Only the VNIs given to set_hold are
    held (one VNI is left out: it is handed out in every batch). Seeded random VNIs, sizes,
    malformed datagrams in between, several sends with receives in between."""
    rng = random.Random(nvni)
    vnis = [rng.randrange(1, 1 << 24) for _ in range(nvni)]
    holdable = set(vnis[1:]) if nvni > 1 else set(vnis)
    rounds = [
        [
            vxlan.header(rng.choice(vnis)) + FRAME + rng.randbytes(rng.choice([0, 50, 1400, 9000]))
            if rng.random() > 0.05
            else b"\0" * 20
            for _ in range(rng.randrange(1, 3 * MAX_BATCH))
        ]
        for _ in range(rng.randrange(1, 6))
    ]
    outputs: dict[bool, dict[int, bytearray]] = {}
    for hold in (False, True):
        per_vni: dict[int, bytearray] = {}
        packets: dict[int, int] = {}
        full_seen = False
        sock = _socket()
        try:
            rx = FastReceiver(sock, fmt=fmt, hold=hold)
            rx.set_hold(holdable)
            batches: list[Batch] = []
            for datagrams in rounds:
                _send(sock, datagrams)
                got = _receive_all(rx, len(datagrams))
                batches += got
                for b in got:
                    full_seen |= b.held_full
                    if b.held_full:
                        held = rx.take_held()
                        assert not held.groups.keys() - holdable
                        batches.append(held)
            held = rx.take_held()
            assert not held.groups.keys() - holdable
            batches.append(held)
            assert rx.take_held().groups == {}
        finally:
            sock.close()
        for b in batches:
            for vni, g in b.groups.items():  # a dict: one group per VNI per batch by construction
                recs = list(pcapng.iter_records(bytes(g.buf), fmt))
                assert len(recs) == g.packets > 0
                assert sum(orig for *_x, orig in recs) == g.wire_bytes
                assert (recs[0][2], recs[-1][2]) == (g.first_ts, g.last_ts)
                per_vni.setdefault(vni, bytearray()).extend(_strip_ts(bytes(g.buf), fmt))
                packets[vni] = packets.get(vni, 0) + g.packets
        sent = sum(1 for r in rounds for d in r if len(d) > 20)
        assert sum(packets.values()) == sent
        if hold:
            used = {vxlan.parse(d, len(d))[0] for r in rounds for d in r if len(d) > 20}  # type: ignore[index]
            assert full_seen == (len(used & holdable) >= 256)
        outputs[hold] = per_vni
    assert outputs[True] == outputs[False]
