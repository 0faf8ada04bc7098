"""Rotation by wall-clock time and by size, the retention ring, gzip, crash recovery."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from frames import ipv4_udp
from netbed import PYTHON, UND_AGT, UND_SRC, AgentProc, Bed, capinfos_count, files_of, in_netns, sh, tshark_clean

from trafficmirror.capture import pcapng, vxlan

pytestmark = pytest.mark.root

NS = 1_000_000_000


def _send(bed: Bed, vni: int, n: int, tag: bytes = b"p", size: int = 100) -> None:
    bed.send_datagrams(
        [vxlan.header(vni) + ipv4_udp("10.0.0.1", "10.0.0.2", 5, 6, tag + b"%06d" % i + b"." * size) for i in range(n)]
    )


def test_time_rotation_is_aligned_to_the_wall_clock_and_retention_keeps_the_newest(bed: Bed, work: Path) -> None:
    agent = AgentProc(
        bed,
        work,
        [
            "--session",
            "9=ns/timed",
            "--output-dir",
            str(work / "out"),
            "--rotate-interval",
            "1",
            "--retain-files",
            "3",
            "--gzip",
        ],
    )
    agent.wait_ready()
    sent = 0
    end = time.monotonic() + 6.5
    while time.monotonic() < end:
        _send(bed, 9, 20, b"t%03d" % (sent // 20))
        sent += 20
        time.sleep(0.1)
    agent.quiesce()
    m = agent.metrics()
    files_total = m['trafficmirror_capture_files_total{namespace="ns",session="timed"}']
    assert files_total >= 6  # at least one file per second boundary crossed
    assert agent.stop() == 0

    kept = files_of(work / "out", "ns", "timed")
    assert len(kept) == 3  # the ring
    assert all(f.name.endswith(".pcapng.gz") for f in kept)
    windows = []
    for f in kept:
        tshark_clean(f)  # tshark reads the gzip directly
        cap = pcapng.read_file(str(f))
        first, last = cap.packets[0].ts_ns // NS, cap.packets[-1].ts_ns // NS
        assert first == last  # every packet of a file lies in one aligned 1 s window
        windows.append(first)
    assert windows == sorted(windows) and len(set(windows)) == 3
    # The three kept are the newest: the last packet sent is in the last file.
    last_payload = pcapng.read_file(str(kept[-1])).packets[-1].data
    assert b"t%03d" % (sent // 20 - 1) in last_payload


def test_size_rotation_and_byte_retention(bed: Bed, work: Path) -> None:
    agent = AgentProc(
        bed,
        work,
        [
            "--session",
            "10=ns/sized",
            "--output-dir",
            str(work / "out"),
            "--rotate-size",
            "64k",
            "--rotate-interval",
            "0",
            "--retain-bytes",
            "300k",
        ],
    )
    agent.wait_ready()
    for i in range(10):
        _send(bed, 10, 200, b"s%02d" % i, size=400)  # ~95 KB per round, ~1 MB in all
    agent.quiesce()
    m = agent.metrics()
    assert m['trafficmirror_capture_packets_total{namespace="ns",session="sized"}'] == 2000
    files_total = m['trafficmirror_capture_files_total{namespace="ns",session="sized"}']
    assert agent.stop() == 0
    kept = files_of(work / "out", "ns", "sized")
    sizes = [f.stat().st_size for f in kept]
    assert all(s <= 64 * 1024 for s in sizes), sizes
    assert sum(sizes) <= 300 * 1024
    assert sum(sizes) > 300 * 1024 - 64 * 1024  # the ring is full, not over-pruned
    assert files_total >= 2000 * 466 // (64 * 1024)
    for f in kept:
        tshark_clean(f)
    # Newest kept: the very last packet is in the last file.
    assert b"s09" in pcapng.read_file(str(kept[-1])).packets[-1].data
    assert sum(capinfos_count(f) for f in kept) < 2000


def test_files_left_open_by_a_crash_are_recovered_and_shipped(bed: Bed, work: Path) -> None:
    args = ["--session", "11=ns/crash", "--output-dir", str(work / "out"), "--flush-interval", "0.1"]
    agent = AgentProc(bed, work, args)
    agent.wait_ready()
    _send(bed, 11, 50)
    agent.quiesce()
    time.sleep(0.3)  # one flush interval: the packets are on disk, the file is still open
    # A crash: every agent process (supervisor and worker) dies at once, nothing is flushed.
    for pid in sh(f"ip netns pids {bed.agt}").stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    agent.proc.wait()
    (part,) = list((work / "work" / "open").rglob("*.part"))
    with open(part, "ab") as f:
        f.write(b"\x06\x00\x00\x00\xff")  # a torn block, as a crash mid-write leaves
    agent.stop()

    agent2 = AgentProc(bed, work, args)
    agent2.wait_ready()
    assert "recovered 1 file(s)" in agent2.log()
    assert agent2.stop() == 0
    (f,) = files_of(work / "out", "ns", "crash")
    tshark_clean(f)
    assert capinfos_count(f) == 50


def test_pcap_get_merges_a_sessions_files_in_time_order(bed: Bed, work: Path) -> None:
    agent = AgentProc(
        bed,
        work,
        [
            "--session",
            "12=ns/merge",
            "--output-dir",
            str(work / "out"),
            "--rotate-size",
            "8k",
            "--rotate-interval",
            "0",
            "--gzip",
        ],
    )
    agent.wait_ready()
    for i in range(5):
        _send(bed, 12, 40, b"m%d" % i)
    agent.quiesce()
    assert agent.stop() == 0
    files = files_of(work / "out", "ns", "merge")
    assert len(files) >= 4
    out = work / "merged.pcapng"
    ls = sh(f"{PYTHON} -m trafficmirror.capture pcap ls --dir {work / 'out'}").stdout
    assert f"ns/merge\t{len(files)}\t" in ls
    r = sh(f"{PYTHON} -m trafficmirror.capture pcap get ns/merge --dir {work / 'out'} -o {out}")
    assert "200 packets" in r.stderr
    os.chmod(out, 0o644)
    tshark_clean(out)
    cap = pcapng.read_file(str(out))
    ts = [p.ts_ns for p in cap.packets]
    assert ts == sorted(ts) and len(ts) == 200
    # --since cuts by packet time, not just by file.
    cut = ts[100]
    r = sh(f"{PYTHON} -m trafficmirror.capture pcap get ns/merge --dir {work / 'out'} -o {out} --since {cut / 1e9:.9f}")
    assert abs(len(pcapng.read_file(str(out)).packets) - 100) <= 2  # float seconds: sub-µs rounding


def test_time_rotation_follows_packet_time_when_the_worker_stalls_across_boundaries(bed: Bed, work: Path) -> None:
    """A worker that stalls (CPU starvation, here SIGSTOP) across a time boundary while packets
    keep arriving: once it runs again, the packets stamped before the boundary still go to the
    file of their window. No file holds packets of two windows, no two files share a window
    (no stray 1-packet file of an already closed window), and every packet is in one in order."""
    agent = AgentProc(
        bed, work, ["--session", "13=ns/stall", "--output-dir", str(work / "out"), "--rotate-interval", "1"]
    )
    agent.wait_ready()
    (worker,) = [int(x) for x in Path(f"/proc/{agent.proc.pid}/task/{agent.proc.pid}/children").read_text().split()]
    stop_sending = threading.Event()
    sent: list[int] = []

    def sender() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((UND_SRC, 0))
        while not stop_sending.is_set():
            for _ in range(20):
                n = len(sent)
                s.sendto(vxlan.header(13) + ipv4_udp("10.0.0.1", "10.0.0.2", 5, 6, b"%08d" % n), (UND_AGT, 4789))
                sent.append(n)
            time.sleep(0.005)
        s.close()

    t = threading.Thread(target=in_netns, args=(bed.srv, sender))
    t.start()
    try:
        for _ in range(6):  # stall from 100 ms before a boundary to 150 ms after it
            now = time.time_ns()
            time.sleep(((now // NS + 1) * NS - now) / NS - 0.1 + (0 if now % NS < 0.8 * NS else 1))
            _stop_between_batches(worker)
            time.sleep(0.25)
            os.kill(worker, signal.SIGCONT)
            time.sleep(0.2)
    finally:
        stop_sending.set()
        t.join()
        os.kill(worker, signal.SIGCONT)
    agent.quiesce()
    assert agent.stop() == 0
    windows: list[int] = []
    payloads: list[bytes] = []
    for f in files_of(work / "out", "ns", "stall"):
        cap = pcapng.read_file(str(f))
        assert cap.packets
        first, last = cap.packets[0].ts_ns // NS, cap.packets[-1].ts_ns // NS
        assert first == last, f"{f.name} holds packets of two windows"
        windows.append(first)
        payloads += [p.data[-8:] for p in cap.packets]
    assert len(set(windows)) == len(windows), f"two files share a window: {windows}"
    assert windows == sorted(windows)
    assert payloads == [b"%08d" % n for n in sent]


def _stop_between_batches(pid: int) -> None:
    """SIGSTOP the worker while it waits between two receive batches (in clock_nanosleep, 230 on
    x86-64): the moment after which it used to look at the clock and close files."""
    end = time.monotonic() + 0.05
    while time.monotonic() < end:
        if Path(f"/proc/{pid}/syscall").read_text().split()[0] == "230":
            break
    os.kill(pid, signal.SIGSTOP)
