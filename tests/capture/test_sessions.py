"""VNI -> session mapping: interleaved sessions with identical inner 5-tuples, one and two workers,
unknown VNIs, the kernel VNI filter, and frames AWS truncated."""

from __future__ import annotations

import collections
import os
import random
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest
from frames import ipv4_udp, ipv6_udp
from netbed import UND_AGT, UND_SRC, AgentProc, Bed, files_of, in_netns, tshark_clean

from trafficmirror.capture import pcapng, vxlan

pytestmark = pytest.mark.root

FLOWS = 24  # inner source ports per session; identical in both sessions


def _interleaved(bed: Bed, rounds: int) -> dict[int, list[bytes]]:
    """Frames alternating between VNI 100 and 101, same 5-tuples, payload naming the session."""
    sent: dict[int, list[bytes]] = {100: [], 101: []}
    for r in range(rounds):
        for vni in (100, 101):
            batch = [
                ipv4_udp("10.1.0.1", "10.1.0.2", 40000 + f, 53, f"vni{vni} round{r} flow{f}".encode())
                for f in range(FLOWS)
            ]
            bed.send_frames(vni, batch)
            sent[vni] += batch
    return sent


@pytest.mark.parametrize("workers", [1, 2])
def test_two_interleaved_sessions_get_exactly_their_packets(bed: Bed, work: Path, workers: int) -> None:
    bed.add_vxlan(100)
    bed.add_vxlan(101)
    agent = AgentProc(
        bed,
        work,
        [
            "--workers",
            str(workers),
            "--output-dir",
            str(work / "out"),
            "--session",
            "100=team-a/db",
            "--session",
            "101=team-b/db",
        ],
    )
    agent.wait_ready()
    sent = _interleaved(bed, rounds=10)
    agent.quiesce()
    assert agent.stop() == 0

    for vni, (ns, name) in {100: ("team-a", "db"), 101: ("team-b", "db")}.items():
        files = files_of(work / "out", ns, name)
        # One writer per session: with hash steering the 24 flows would spread over both workers.
        assert len(files) == 1, files
        cap = pcapng.read_file(str(files[0]))
        assert [p.data for p in cap.packets] == sent[vni]  # exactly theirs, in order
        assert f"vni={vni} " in cap.interfaces[0].description
        out = tshark_clean(files[0], "-T", "fields", "-e", "udp.srcport")
        assert collections.Counter(out.split()) == {str(40000 + f): 10 for f in range(FLOWS)}
    assert not (work / "out" / "_unknown").exists()


def test_unknown_vni_gets_its_own_file_and_is_counted(bed: Bed, work: Path) -> None:
    bed.add_vxlan(100)
    bed.add_vxlan(777)
    agent = AgentProc(bed, work, ["--output-dir", str(work / "out"), "--session", "100=a/s"])
    agent.wait_ready()
    bed.send_frames(777, [ipv4_udp("10.0.0.1", "10.0.0.2", 1, 2, b"x%d" % i) for i in range(7)])
    bed.send_frames(100, [ipv4_udp("10.0.0.1", "10.0.0.2", 1, 2, b"y%d" % i) for i in range(3)])
    m = agent.quiesce()
    assert m['trafficmirror_capture_malformed_total{reason="unknown_vni"}'] == 7
    assert m['trafficmirror_capture_packets_total{namespace="a",session="s"}'] == 3
    assert agent.stop() == 0
    (unknown,) = files_of(work / "out", "_unknown", "vni-777")
    assert len(pcapng.read_file(str(unknown)).packets) == 7


def test_kernel_vni_filter_drops_other_sessions_in_the_kernel(bed: Bed, work: Path) -> None:
    bed.add_vxlan(100)
    bed.add_vxlan(200)
    agent = AgentProc(bed, work, ["--output-dir", str(work / "out"), "--session", "100=a/s", "--kernel-vni-filter"])
    agent.wait_ready()
    bed.send_frames(200, [ipv4_udp("10.0.0.1", "10.0.0.2", 1, 2, b"x%d" % i) for i in range(50)])
    bed.send_frames(100, [ipv4_udp("10.0.0.1", "10.0.0.2", 1, 2, b"y%d" % i) for i in range(5)])
    m = agent.quiesce()
    # The 50 never reached user space: the agent saw only the 5 of its session.
    assert m["trafficmirror_capture_datagrams_total"] == 5
    assert m['trafficmirror_capture_malformed_total{reason="unknown_vni"}'] == 0
    # ...and the kernel's one drop counter (sk_drops) is where filtered datagrams are counted.
    assert m["trafficmirror_capture_kernel_drops_total"] == 50
    assert agent.stop() == 0
    assert not (work / "out" / "_unknown").exists()


def test_truncated_mirror_packets_restore_orig_len(bed: Bed, work: Path) -> None:
    """AWS cuts packets at the target's MTU or the session's PacketLength; no kernel sender does,
    so these VXLAN payloads are sent from a plain UDP socket."""
    agent = AgentProc(bed, work, ["--output-dir", str(work / "out"), "--session", "300=a/trunc"])
    agent.wait_ready()
    full = [
        ipv4_udp("10.0.0.1", "10.0.0.2", 1000, 2000, bytes(range(256)) * 4),
        ipv4_udp("10.0.0.1", "10.0.0.2", 1000, 2000, b"v" * 900, vlan=42),
        ipv6_udp("fd00::1", "fd00::2", 1000, 2000, b"6" * 1200),
    ]
    # Cuts inside the UDP header, so the dissectors notice: the AWS default cut (the target MTU)
    # lands in a payload, where Wireshark shows the same frame/capture lengths without comment.
    cuts = [38, 44, 58]
    bed.send_datagrams(
        [vxlan.header(300) + f[:c] for f, c in zip(full, cuts, strict=True)] + [vxlan.header(300) + full[0]]
    )
    agent.quiesce()
    assert agent.stop() == 0
    (f,) = files_of(work / "out", "a", "trunc")
    cap = pcapng.read_file(str(f))
    expected = [(c, len(fr)) for fr, c in zip(full, cuts, strict=True)] + [(len(full[0]), len(full[0]))]
    assert [(p.caplen, p.orig_len) for p in cap.packets] == expected
    summary = tshark_clean(f).splitlines()
    assert ["Packet size limited during capture" in line for line in summary] == [True, True, True, False]
    assert tshark_clean(f, "-Y", "_ws.malformed") == ""
    lens = tshark_clean(f, "-T", "fields", "-e", "frame.len", "-e", "frame.cap_len").splitlines()
    assert lens == [f"{o}\t{c}" for c, o in expected]


def test_keep_malformed_writes_them_to_a_separate_file_wireshark_can_dissect(bed: Bed, work: Path) -> None:
    agent = AgentProc(bed, work, ["--output-dir", str(work / "out"), "--session", "5=a/s", "--keep-malformed"])
    agent.wait_ready()
    bad = [b"\x08\0\0", b"\x00" * 40, vxlan.header(5) + b"\x01\x02"]
    bed.send_datagrams([*bad, vxlan.header(5) + ipv4_udp("10.0.0.1", "10.0.0.2", 1, 2, b"ok")])
    agent.quiesce()
    assert agent.stop() == 0
    (kept,) = files_of(work / "out", "_malformed", "worker-0")
    cap = pcapng.read_file(str(kept))
    assert [p.comment for p in cap.packets] == ["short_header", "bad_flags", "short_frame"]
    assert [p.data[28:] for p in cap.packets] == bad  # the datagram behind a synthetic IPv4/UDP header
    ports = tshark_clean(kept, "-T", "fields", "-e", "udp.dstport", "-e", "frame.comment").splitlines()
    assert [line.split("\t")[0] for line in ports] == ["4789"] * 3
    (good,) = files_of(work / "out", "a", "s")
    assert len(pcapng.read_file(str(good)).packets) == 1


def test_an_unknown_vni_flood_is_bounded_and_counted(bed: Bed, work: Path, vxsend: Path) -> None:
    """10,000 random VNIs from one sender: at most --unknown-vni-max-open files are open at any
    time, new ones open at the configured rate, every refused packet is counted, and SIGTERM
    still finishes at once."""
    rng = random.Random(10_000)
    vnis = rng.sample(range(1000, 1 << 24), 10_000)
    frame = ipv4_udp("10.0.0.1", "10.0.0.2", 1, 2, b"flood")
    pool = work / "flood.bin"
    pool.write_bytes(b"".join(struct.pack("=I", 8 + len(frame)) + vxlan.header(v) + frame for v in vnis * 2))
    args = ["--output-dir", str(work / "out"), "--session", "100=a/s", "--unknown-vni", "write"]
    agent = AgentProc(bed, work, [*args, "--unknown-vni-max-open", "16", "--unknown-vni-new-per-second", "20"])
    agent.wait_ready()
    (worker,) = [int(x) for x in Path(f"/proc/{agent.proc.pid}/task/{agent.proc.pid}/children").read_text().split()]
    baseline = len(os.listdir(f"/proc/{worker}/fd"))
    most = 0
    cmd = ["ip", "netns", "exec", bed.srv, str(vxsend), "-d", UND_AGT, "-s", UND_SRC, "-f", str(pool)]
    sender = subprocess.Popen([*cmd, "-n", "20000", "-r", "4000"], stdout=subprocess.PIPE, text=True)
    while sender.poll() is None:
        most = max(most, len(os.listdir(f"/proc/{worker}/fd")))
        time.sleep(0.05)
    assert "sent=20000" in (sender.stdout.read() if sender.stdout else "")
    arrived = ("trafficmirror_capture_datagrams_total", "trafficmirror_capture_kernel_drops_total")
    agent.wait_for(lambda m: sum(m.get(k, 0) for k in arrived) >= 20_000)
    m = agent.quiesce()
    started = time.monotonic()
    assert agent.stop() == 0
    assert time.monotonic() - started < 10
    assert most <= baseline + 16
    unknown = m['trafficmirror_capture_malformed_total{reason="unknown_vni"}']
    refused = m['trafficmirror_capture_unknown_vni_refused_total{why="rate"}']
    written = m['trafficmirror_capture_packets_total{namespace="_unknown",session="all"}']
    assert unknown + m["trafficmirror_capture_kernel_drops_total"] == 20_000
    assert written + refused == unknown
    assert 0 < written < 20_000 * 0.2  # ~5 s at 20 new files/s (+ a burst of 20): a few hundred VNIs
    on_disk = sum(len(pcapng.read_file(str(f)).packets) for f in (work / "out" / "_unknown").rglob("*.pcapng"))
    assert on_disk == written


@pytest.mark.parametrize("kernel_filter", [False, True], ids=["user-space", "kernel-filter"])
def test_forged_sources_are_counted_as_spoofed_and_kept_out_of_the_file(
    bed: Bed, work: Path, kernel_filter: bool
) -> None:
    """A host that is not the session's source sends datagrams with its VNI: they never reach the
    session's file and count as spoofed. With the kernel filter they are cut to their headers
    before the socket queue (a flood of forged jumbo frames costs the receive buffer little)."""
    bed.ns(bed.srv, "ip addr add 10.99.0.3/24 dev und0")
    args = ["--output-dir", str(work / "out"), "--session", f"100=a/s:{UND_SRC}", "--session", "200=a/open"]
    args += ["--keep-malformed", *(["--kernel-vni-filter"] if kernel_filter else [])]
    agent = AgentProc(bed, work, args)
    agent.wait_ready()
    good = [vxlan.header(100) + ipv4_udp("10.0.0.1", "10.0.0.2", 1, 2, b"g%d" % i) for i in range(5)]
    forged = [vxlan.header(v) + ipv4_udp("6.6.6.6", "10.0.0.2", 6, 6, b"F" * 8000) for v in (100, 200) * 4]

    def send_forged() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("10.99.0.3", 0))
        for d in forged:
            s.sendto(d, (UND_AGT, 4789))
        s.close()

    in_netns(bed.srv, send_forged)
    bed.send_datagrams(good)
    agent.wait_for(lambda m: m.get("trafficmirror_capture_datagrams_total", 0) >= len(good) + len(forged))
    m = agent.quiesce()
    assert agent.stop() == 0
    assert m['trafficmirror_capture_malformed_total{reason="spoofed"}'] == 4
    assert m["trafficmirror_capture_kernel_drops_total"] == 0
    assert m['trafficmirror_capture_packets_total{namespace="a",session="s"}'] == 5
    assert m['trafficmirror_capture_packets_total{namespace="a",session="open"}'] == 4  # no known source: open
    (f,) = files_of(work / "out", "a", "s")
    assert [p.data for p in pcapng.read_file(str(f)).packets] == [d[8:] for d in good]
    (kept,) = files_of(work / "out", "_malformed", "worker-0")
    packets = pcapng.read_file(str(kept)).packets
    assert [p.comment for p in packets] == ["spoofed"] * 4
    assert [len(p.data) - 28 for p in packets] == [8 if kernel_filter else len(forged[0])] * 4


@pytest.mark.parametrize("kernel_filter", [False, True], ids=["user-space", "kernel-filter"])
def test_without_the_source_check_a_known_vni_is_written_from_any_source(
    bed: Bed, work: Path, kernel_filter: bool
) -> None:
    """--no-source-check (chart: capture.sourceCheck=false) is for a NAT between the sources and the
    node: the session's datagrams from another outer address are written, none counted as spoofed."""
    bed.ns(bed.srv, "ip addr add 10.99.0.3/24 dev und0")
    args = ["--output-dir", str(work / "out"), "--session", f"100=a/s:{UND_SRC}", "--no-source-check"]
    args += ["--kernel-vni-filter"] if kernel_filter else []
    agent = AgentProc(bed, work, args)
    agent.wait_ready()
    good = [vxlan.header(100) + ipv4_udp("10.0.0.1", "10.0.0.2", 1, 2, b"g%d" % i) for i in range(3)]
    other = [vxlan.header(100) + ipv4_udp("10.0.0.1", "10.0.0.2", 1, 2, b"o%d" % i) for i in range(3)]

    def send_from_another_address() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("10.99.0.3", 0))
        for d in other:
            s.sendto(d, (UND_AGT, 4789))
        s.close()

    bed.send_datagrams(good)
    agent.wait_for(lambda m: m.get("trafficmirror_capture_datagrams_total", 0) >= len(good))
    in_netns(bed.srv, send_from_another_address)
    agent.wait_for(lambda m: m.get("trafficmirror_capture_datagrams_total", 0) >= len(good) + len(other))
    m = agent.quiesce()
    assert agent.stop() == 0
    assert m.get('trafficmirror_capture_malformed_total{reason="spoofed"}', 0) == 0
    assert m["trafficmirror_capture_kernel_drops_total"] == 0
    (f,) = files_of(work / "out", "a", "s")
    assert [p.data for p in pcapng.read_file(str(f)).packets] == [d[8:] for d in good + other]
