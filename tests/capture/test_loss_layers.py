"""Loss outside the socket is counted: every datagram sent is written or counted at a layer.

The agent's namespace is ours alone, so its NIC and UDP counters count only this test's traffic
and the invariant holds exactly: sent = written + NIC drops + socket drops. Two layers are made
to drop on purpose: the NIC (the agent side's MTU is smaller than the sender's, as when mirrored
frames exceed the target's MTU: the kernel drops them at the device, before any socket), and the
socket (the worker is stopped while its small receive buffer overflows). The softnet backlog is
node-wide and its limit a global sysctl, so it is only checked to be read, not provoked.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest
from frames import ipv4_udp
from netbed import UND_AGT, UND_SRC, AgentProc, Bed, files_of, tshark_clean

from trafficmirror.capture import pcapng, vxlan

pytestmark = pytest.mark.root

VNIS = (700, 701)
LAYER = "trafficmirror_capture_layer_drops_total"


def _children(pid: int) -> list[int]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except FileNotFoundError:  # a thread that ended meanwhile (e.g. a metrics request's) has none
            continue
    return out


def _send(bed: Bed, vxsend: Path, pool: Path, n: int) -> None:
    cmd = ["ip", "netns", "exec", bed.srv, str(vxsend), "-d", UND_AGT, "-s", UND_SRC, "-f", str(pool)]
    res = subprocess.run([*cmd, "-n", str(n), "-b", "32"], check=True, capture_output=True, text=True, timeout=120)
    assert f"sent={n}" in res.stdout


@pytest.mark.parametrize("seed", [1, 2])
def test_every_datagram_is_written_or_counted_at_its_layer(bed: Bed, work: Path, vxsend: Path, seed: int) -> None:
    rng = random.Random(seed)
    bed.ns(bed.agt, "ip link set und1 mtu 1500")  # the sender's side stays at 9000
    pool: list[tuple[int, bytes]] = []
    for i in range(rng.randint(200, 600)):
        big = rng.random() < rng.uniform(0.05, 0.4)
        size = rng.randint(2000, 8000) if big else rng.randint(60, 1400)
        frame = ipv4_udp("10.0.0.1", "10.0.0.2", 1000 + i, 80, rng.randbytes(size - 42))
        pool.append((int(big), vxlan.header(VNIS[i % 2]) + frame))
    pool_file = work / "pool.bin"
    pool_file.write_bytes(b"".join(struct.pack("=I", len(d)) + d for _, d in pool))
    total = rng.randint(20_000, 40_000)
    expect_big = sum(pool[i % len(pool)][0] for i in range(total))

    agent = AgentProc(
        bed,
        work,
        [
            "--output-dir",
            str(work / "out"),
            *(a for v in VNIS for a in ("--session", f"{v}=loss/s{v}")),
            "--rcvbuf",
            "128k",
            "--rotate-interval",
            "0",
            "--rotate-size",
            "1MiB",
        ],
    )
    agent.wait_ready()
    (worker,) = _children(agent.proc.pid)
    os.kill(worker, signal.SIGSTOP)  # a stalled worker: its socket's queue overflows
    try:
        _send(bed, vxsend, pool_file, total)
    finally:
        os.kill(worker, signal.SIGCONT)
    m = agent.quiesce()
    assert agent.stop() == 0, agent.log()[-3000:]

    written = sum(m[f'trafficmirror_capture_packets_total{{namespace="loss",session="s{v}"}}'] for v in VNIS)
    nic = m[f'{LAYER}{{layer="nic",scope="node"}}']
    socket_drops = m[f'{LAYER}{{layer="socket",scope="socket"}}']
    assert nic == expect_big  # dropped by the device, before any socket: counted
    assert socket_drops > 0 and socket_drops == m["trafficmirror_capture_kernel_drops_total"]
    # The same drops as UDP sees them, node-wide (here: this namespace, ours alone).
    assert m[f'{LAYER}{{layer="udp_rcvbuf",scope="node"}}'] == socket_drops
    assert m[f'{LAYER}{{layer="udp_inerrors",scope="node"}}'] == socket_drops
    assert m[f'{LAYER}{{layer="softnet",scope="node"}}'] >= 0
    assert m[f'{LAYER}{{layer="disk",scope="session"}}'] == 0
    assert total == written + nic + socket_drops  # sent = written + counted drops, exactly

    # The files say it too: per session, the statistics blocks of its files add up to the
    # socket and NIC drops since the agent started (shared layers: each session reports them).
    on_disk = 0
    for v in VNIS:
        files = files_of(work / "out", "loss", f"s{v}")
        assert files
        said_socket = said_nic = 0
        for f in files:
            tshark_clean(f)
            cap = pcapng.read_file(str(f))
            on_disk += len(cap.packets)
            (st,) = cap.statistics
            assert st.delivered == len(cap.packets) and st.if_dropped == 0
            fields = dict(kv.split("=") for kv in st.comment.replace(";", " ").split() if "=" in kv)
            said_socket += int(fields["socket"])
            said_nic += int(fields["nic"])
            assert st.os_dropped == int(fields["socket"]) + int(fields["softnet"])
        assert said_socket == socket_drops
        assert said_nic == nic
    assert on_disk == written


def test_node_counters_are_read_in_the_agents_namespace(bed: Bed, work: Path) -> None:
    """An idle agent reports zero at every node-wide layer of its own namespace except softnet
    (which the kernel keeps per CPU, for all namespaces)."""
    agent = AgentProc(bed, work, ["--output-dir", str(work / "out"), "--session", "1=a/b"])
    agent.wait_ready()
    time.sleep(0.3)
    m = agent.metrics()
    agent.stop()
    for layer in ("nic", "udp_rcvbuf", "udp_inerrors"):
        assert m[f'{LAYER}{{layer="{layer}",scope="node"}}'] == 0
