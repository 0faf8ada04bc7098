"""A million malformed, truncated, oversized and garbage datagrams mixed with good ones."""

from __future__ import annotations

import random
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from frames import ipv4_udp
from netbed import UND_AGT, UND_SRC, AgentProc, Bed, capinfos_count, files_of, tshark_clean

from trafficmirror.capture import vxlan

pytestmark = pytest.mark.root

TOTAL = 1_000_000
POOL = 4096


def _pool(rng: random.Random) -> list[tuple[str, bytes]]:
    """(category, datagram); a category says what the agent must do with it."""
    out: list[tuple[str, bytes]] = []
    for i in range(POOL):
        r = rng.random()
        if r < 0.40:
            vni = 500 + (i & 1)
            frame = ipv4_udp("10.0.0.1", "10.0.0.2", 1024 + i, 53, rng.randbytes(rng.randint(0, 200)))
            out.append((f"good{vni}", vxlan.header(vni) + frame))
        elif r < 0.41:  # oversized: jumbo inner frames up to the largest UDP payload there is
            size = rng.choice([9001, 32768, 65507 - 8 - 42])
            frame = ipv4_udp("10.0.0.1", "10.0.0.2", 7, 7, rng.randbytes(size - 42))
            out.append(("good500", vxlan.header(500) + frame))
        elif r < 0.45:  # truncated by AWS: orig_len from the IP header, still good
            frame = ipv4_udp("10.0.0.1", "10.0.0.2", 9, 9, rng.randbytes(1400))
            out.append(("good501", vxlan.header(501) + frame[: rng.randint(14, 200)]))
        elif r < 0.55:
            out.append(("short_header", rng.randbytes(rng.randint(0, 7))))
        elif r < 0.70:  # garbage without the I flag
            g = bytearray(rng.randbytes(rng.randint(8, 1600)))
            g[0] &= ~vxlan.FLAG_VNI_VALID & 0xFF
            out.append(("bad_flags", bytes(g)))
        elif r < 0.80:
            out.append(("short_frame", vxlan.header(500) + rng.randbytes(rng.randint(0, 13))))
        elif r < 0.90:  # garbage that looks like VXLAN for a VNI nobody owns
            g = bytearray(rng.randbytes(rng.randint(22, 1600)))
            g[0] |= vxlan.FLAG_VNI_VALID
            g[4:7] = (0xABCDE0 + (i % 3)).to_bytes(3, "big")
            out.append(("unknown_vni", bytes(g)))
        else:  # pure noise: classify it the way the spec says, whatever it turned out to be
            g = rng.randbytes(rng.randint(0, 64))
            res = vxlan.parse(g)
            if isinstance(res, vxlan.Reason):
                out.append((str(res), g))
            else:  # force an owner-less VNI so it is countable
                g = g[:4] + b"\xab\xcd\xef" + g[7:]
                out.append(("unknown_vni", g))
    return out


def test_a_million_bad_and_good_datagrams(bed: Bed, work: Path, vxsend: Path) -> None:
    rng = random.Random(4789)
    pool = _pool(rng)
    pool_file = work / "pool.bin"
    pool_file.write_bytes(b"".join(struct.pack("=I", len(d)) + d for _, d in pool))
    full, rest = divmod(TOTAL, POOL)
    expected: Counter[str] = Counter()
    for i, (cat, _) in enumerate(pool):
        expected[cat] += full + (1 if i < rest else 0)

    agent = AgentProc(
        bed,
        work,
        [
            "--output-dir",
            str(work / "out"),
            "--session",
            "500=fuzz/a",
            "--session",
            "501=fuzz/b",
            "--rotate-size",
            "0",
            "--rotate-interval",
            "0",
        ],
    )
    agent.wait_ready()
    res = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            bed.srv,
            str(vxsend),
            "-d",
            UND_AGT,
            "-s",
            UND_SRC,
            "-f",
            str(pool_file),
            "-n",
            str(TOTAL),
            "-b",
            "64",
            "-w",
            str(agent.proc.pid),
            "-q",
            str(2 << 20),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert f"sent={TOTAL}" in res.stdout
    m = agent.quiesce(timeout=300)
    assert agent.stop() == 0, agent.log()[-3000:]

    # On a loaded machine the kernel may drop at the input backlog, before the socket: that is
    # counted at the NIC layer (the device's rx_dropped, this namespace's own), so nothing is lost
    # uncounted, and what arrived is classified exactly.
    before_socket = m['trafficmirror_capture_layer_drops_total{layer="nic",scope="node"}']
    socket_drops = m["trafficmirror_capture_kernel_drops_total"]
    assert m["trafficmirror_capture_datagrams_total"] + before_socket + socket_drops == TOTAL
    got = {r: m[f'trafficmirror_capture_malformed_total{{reason="{r}"}}'] for r in ("short_header", "bad_flags")}
    got |= {r: m[f'trafficmirror_capture_malformed_total{{reason="{r}"}}'] for r in ("short_frame", "unknown_vni")}
    got["good500"] = m['trafficmirror_capture_packets_total{namespace="fuzz",session="a"}']
    got["good501"] = m['trafficmirror_capture_packets_total{namespace="fuzz",session="b"}']
    assert m['trafficmirror_capture_malformed_total{reason="receive_truncated"}'] == 0
    for cat, n in got.items():
        assert n <= expected[cat], cat
    assert sum(expected[c] - n for c, n in got.items()) == before_socket + socket_drops
    if not before_socket + socket_drops:
        assert got == {c: expected[c] for c in got}
    expected = Counter({**expected, **{c: int(n) for c, n in got.items()}})  # Counter.update would add

    (a,) = files_of(work / "out", "fuzz", "a")
    (b,) = files_of(work / "out", "fuzz", "b")
    assert capinfos_count(a) == expected["good500"]
    assert capinfos_count(b) == expected["good501"]
    tshark_clean(b, "-c", "20000")  # readable, no warnings (the whole file takes tshark too long)
    unknown = sum(capinfos_count(f) for d in (work / "out" / "_unknown").iterdir() for f in d.iterdir())
    assert unknown == expected["unknown_vni"]
