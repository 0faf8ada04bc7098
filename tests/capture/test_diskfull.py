"""Disk full (a small tmpfs): reported at once, closed files stay valid, writing resumes."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from frames import ipv4_udp
from netbed import NOBODY, AgentProc, Bed, tshark_clean

from trafficmirror.capture import pcapng, vxlan

pytestmark = pytest.mark.root


@pytest.fixture
def small_disk(work: Path) -> Iterator[Path]:
    d = work / "small"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(d)], check=True)
    try:
        for sub in ("work", "out"):
            (d / sub).mkdir()
            os.chown(d / sub, NOBODY, NOBODY)
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def disk_drops_said(files: list[Path], so_far: int = 0) -> int:
    """isb_ifdrop summed over the files' statistics blocks, each block checked for consistency."""
    for f in files:
        for st in pcapng.read_file(str(f)).statistics:
            assert st.received == (st.delivered or 0) + (st.if_dropped or 0)
            assert f"disk={st.if_dropped} " in st.comment
            so_far += st.if_dropped or 0
    return so_far


def _send(bed: Bed, n: int, tag: bytes) -> None:
    for start in range(0, n, 100):
        frames = [
            ipv4_udp("10.0.0.1", "10.0.0.2", 5, 6, tag + b"%06d" % i + b"." * 1300)
            for i in range(start, min(n, start + 100))
        ]
        bed.send_datagrams([vxlan.header(42) + f for f in frames])
        time.sleep(0.01)


def test_disk_full_is_reported_files_stay_valid_and_capture_resumes(bed: Bed, work: Path, small_disk: Path) -> None:
    out = small_disk / "out"
    agent = AgentProc(
        bed,
        work,
        [
            "--work-dir",
            str(small_disk / "work"),
            "--output-dir",
            str(out),
            "--session",
            "42=ops/full",
            "--rotate-size",
            "200k",
            "--flush-interval",
            "0.1",
        ],
    )
    agent.wait_ready()
    _send(bed, 1500, b"before")  # ~2 MB into 1 MiB

    t0 = time.monotonic()
    m = agent.wait_for(lambda m: m.get("trafficmirror_capture_write_errors_total", 0) > 0, timeout=10)
    reported_after = time.monotonic() - t0
    assert reported_after < 5
    code, body = agent.get("/healthz")
    assert code == 503 and "disk full" in body
    assert "disk full" in agent.log()

    agent.quiesce()
    m = agent.metrics()
    written = m['trafficmirror_capture_packets_total{namespace="ops",session="full"}']
    dropped = m['trafficmirror_capture_write_dropped_packets_total{namespace="ops",session="full"}']
    assert dropped > 0 and written > 0
    assert written + dropped == 1500  # every packet is either on disk or counted as lost

    closed = sorted((out / "ops" / "full").iterdir())
    assert closed
    on_disk = 0
    for f in closed:
        tshark_clean(f)  # every closed file, including the one cut back at the failure, is whole
        on_disk += len(pcapng.read_file(str(f)).packets)
    assert on_disk == written

    said_before = disk_drops_said(closed)
    for f in closed:  # space returns
        f.unlink()
    time.sleep(1.5)  # the writer retries once a second
    _send(bed, 100, b"after")
    agent.wait_for(lambda m: m['trafficmirror_capture_packets_total{namespace="ops",session="full"}'] == written + 100)
    assert agent.stop() == 0
    after = sorted((out / "ops" / "full").iterdir())
    assert after
    payloads = [p.data for f in after for p in pcapng.read_file(str(f)).packets]
    assert len(payloads) == 100 and all(b"after" in p for p in payloads)
    for f in after:
        tshark_clean(f)
    # The files say what the disk lost: every dropped packet is in exactly one statistics block
    # (isb_ifdrop, and the per-layer comment), and each block's received = delivered + dropped.
    said = disk_drops_said(after, said_before)
    assert said == dropped
