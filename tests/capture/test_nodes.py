"""One session captured on two nodes: each agent writes files named by its node, and
`trafficmirror pcap get` returns one time-ordered file with every packet and both nodes' statistics.

Two test beds stand for two capture nodes behind a load balancer: each has its own mirror source
namespace and its own agent namespace, and both mirror the same VNI (one MirrorSession whose flows
the load balancer spread over two nodes). Both agents ship into one directory, as they would into
one bucket.
"""

from __future__ import annotations

import collections
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from frames import ipv4_udp
from netbed import NOBODY, PYTHON, AgentProc, Bed, capinfos_count, files_of, tshark_clean

from trafficmirror.capture import pcapng

pytestmark = pytest.mark.root

VNI = 300
ROUNDS = 6
PER_ROUND = 25


@pytest.fixture
def second_bed() -> Iterator[Bed]:
    b = Bed().up()
    try:
        yield b
    finally:
        b.down()


def _agent_dir(work: Path, node: str) -> Path:
    d = work / node
    for sub in ("", "work"):
        (d / sub).mkdir(exist_ok=True)
        os.chown(d / sub, NOBODY, NOBODY)
    return d


def _frames(node: str, round_no: int) -> list[bytes]:
    return [
        ipv4_udp("10.0.0.1", "10.0.0.2", 40000 + round_no, 53, f"{node}.{round_no:02d}.{i:04d}.".encode() + b"x" * 40)
        for i in range(PER_ROUND)
    ]


def _tag(data: bytes) -> tuple[str, int, int]:
    node, round_no, index = data[42:].split(b".")[:3]
    return node.decode(), int(round_no), int(index)


def test_pcap_get_merges_one_sessions_files_from_two_nodes_in_time_order(bed: Bed, second_bed: Bed, work: Path) -> None:
    beds = {"node-a": bed, "node-b": second_bed}
    agents: dict[str, AgentProc] = {}
    shared = work / "out"
    try:
        for node, b in beds.items():
            b.add_vxlan(VNI)
            agents[node] = AgentProc(
                b,
                _agent_dir(work, node),
                ["--node", node, "--session", f"{VNI}=shop/web@eni-0abc1234", "--output-dir", str(shared)],
            )
        for agent in agents.values():
            agent.wait_ready()
        # Rounds alternate between the nodes; each waits until its agent has counted the round,
        # so receive times across the two nodes are ordered by cause, not by luck.
        sent = collections.Counter[str]()
        for round_no in range(ROUNDS):
            for node, b in beds.items():
                b.send_frames(VNI, _frames(node, round_no))
                sent[node] += PER_ROUND
                agents[node].wait_for(
                    lambda m, n=sent[node]: (
                        m.get('trafficmirror_capture_packets_total{namespace="shop",session="web"}', 0) >= n
                    )
                )
        for agent in agents.values():
            agent.quiesce()
            assert agent.stop() == 0
    finally:
        for agent in agents.values():
            agent.stop()

    files = files_of(shared, "shop", "web")
    assert sorted({f.name.split("-2")[0] for f in files}) == ["node-a", "node-b"], files
    for f in files:
        os.chmod(f, 0o644)

    merged = work / "merged.pcapng"
    r = subprocess.run(
        [PYTHON, "-m", "trafficmirror.capture", "pcap", "get", "shop/web", "--dir", str(shared), "-o", str(merged)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    total = ROUNDS * PER_ROUND * len(beds)
    assert f"{total} packets from {len(files)} file(s)" in r.stderr
    os.chmod(merged, 0o644)

    # Wireshark's tools read it cleanly and count every packet.
    tshark_clean(merged)
    assert capinfos_count(merged) == total
    capinfos = subprocess.run(["capinfos", str(merged)], capture_output=True, text=True, check=True).stdout
    assert "Number of interfaces in file: 2" in capinfos
    assert "node=node-a" in capinfos and "node=node-b" in capinfos

    cap = pcapng.read_file(str(merged))
    ts = [p.ts_ns for p in cap.packets]
    assert ts == sorted(ts)
    tags = [_tag(p.data) for p in cap.packets]
    # Every packet exactly once, and the exact order the rounds caused: a0 b0 a1 b1 ...
    assert tags == [(node, round_no, i) for round_no in range(ROUNDS) for node in beds for i in range(PER_ROUND)]
    # Each node's packets sit on that node's interface; each node's statistics are kept on it.
    node_of_iface = {i: iface.description.split("node=")[1].split()[0] for i, iface in enumerate(cap.interfaces)}
    assert sorted(node_of_iface.values()) == ["node-a", "node-b"]
    assert all(node_of_iface[p.interface_id] == _tag(p.data)[0] for p in cap.packets)
    received = collections.Counter[str]()
    for st in cap.statistics:
        received[node_of_iface[st.interface_id]] = max(received[node_of_iface[st.interface_id]], st.received or 0)
    assert received == {node: ROUNDS * PER_ROUND for node in beds}
    assert all((st.os_dropped or 0) == 0 and (st.if_dropped or 0) == 0 for st in cap.statistics)
