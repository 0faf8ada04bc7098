"""A podSelector session through kernel vxlan devices: the agent splits each source ENI's
mirrored packets by pod (perPod), or keeps only the selected pods' (perSession), counts the rest
as filtered out, and `pcap ls|get` show and merge the pods' files.

The session's sources come the way the operator writes them (a MirrorSession with
``status.sources[]``), from a sessions file: the agent reads the same objects from the watch.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from frames import ipv4_udp
from netbed import NOBODY, PYTHON, UND_SRC, AgentProc, Bed, in_netns, tshark_clean
from test_s3 import BUCKET, ENV, Moto

from trafficmirror.capture import pcapng

pytestmark = pytest.mark.root

A, B, X, PEER = "10.1.0.1", "10.1.0.3", "10.1.0.9", "10.1.0.2"  # X: on the ENI, no selected pod
C = "10.1.1.1"  # a pod on a second ENI (its own VNI)
VNI_1, VNI_2 = 200, 201
M = "trafficmirror_capture_"


def _session(files: str) -> dict[str, object]:
    return {
        "metadata": {"namespace": "shop", "name": "web"},
        "spec": {"source": {"podSelector": {"matchLabels": {"app": "web"}}}, "capture": {"files": files}},
        "status": {
            "phase": "Ready",
            "sources": [
                {
                    "networkInterfaceId": "eni-0aaaaaaaaaaaaaaa1",
                    "nodeName": "node-1",
                    "virtualNetworkId": VNI_1,
                    "sourceAddresses": [UND_SRC],
                    "pods": [
                        {"namespace": "shop", "name": "web-1", "ip": A},
                        {"namespace": "shop", "name": "web-2", "ip": B},
                    ],
                },
                {
                    "networkInterfaceId": "eni-0aaaaaaaaaaaaaaa2",
                    "nodeName": "node-2",
                    "virtualNetworkId": VNI_2,
                    "sourceAddresses": [UND_SRC],
                    "pods": [{"namespace": "shop", "name": "web-3", "ip": C}],
                },
            ],
        },
    }


def _traffic(seed: int, n: int) -> dict[int, list[bytes]]:
    """Seeded frames per VNI: each selected pod with a peer, the two pods of VNI_1 with each
    other, and the unselected address X on both ENIs."""
    rng = random.Random(seed)
    pairs = {VNI_1: [(A, PEER), (PEER, A), (B, PEER), (PEER, B), (A, B), (B, A), (X, PEER), (PEER, X)]}
    pairs[VNI_2] = [(C, PEER), (PEER, C), (X, PEER)]
    out: dict[int, list[bytes]] = {VNI_1: [], VNI_2: []}
    for i in range(n):
        vni = rng.choice((VNI_1, VNI_2))
        src, dst = rng.choice(pairs[vni])
        out[vni].append(ipv4_udp(src, dst, 10000 + i % 5000, 53, f"pkt{i}".encode()))
    return out


def _has(frame: bytes, ip: str) -> bool:
    key = bytes(int(x) for x in ip.split("."))
    return key in (frame[26:30], frame[30:34])


def _start(bed: Bed, work: Path, files: str, workers: int, extra: list[str] | None = None) -> AgentProc:
    bed.add_vxlan(VNI_1)
    bed.add_vxlan(VNI_2)
    sessions = work / "sessions.json"
    sessions.write_text(json.dumps([_session(files)]))
    args = ["--output-dir", str(work / "out"), "--sessions-file", str(sessions), "--workers", str(workers)]
    agent = AgentProc(bed, work, args + (extra or []), env=ENV if extra else None)
    agent.wait_ready()
    return agent


def _send(bed: Bed, sent: dict[int, list[bytes]]) -> None:
    for vni, frames in sent.items():
        for i in range(0, len(frames), 100):
            bed.send_frames(vni, frames[i : i + 100])


def _pod_files(out: Path, pod_dir: str) -> list[Path]:
    d = out / "shop" / "web" / pod_dir
    return sorted(p for p in d.iterdir() if not p.name.startswith(".")) if d.exists() else []


def _pcap(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", PYTHON, "-m"]
    cmd += ["trafficmirror.capture", "pcap", *args]
    full = {"PATH": os.environ["PATH"], **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, check=True, cwd="/tmp", env=full)


@pytest.mark.parametrize("workers", [1, 2])
def test_per_pod_files_hold_only_their_pods_packets_and_the_rest_is_counted(bed: Bed, work: Path, workers: int) -> None:
    agent = _start(bed, work, "perPod", workers)
    sent = _traffic(seed=11 + workers, n=1500)
    _send(bed, sent)
    m = agent.quiesce()
    assert agent.stop() == 0, agent.log()[-3000:]

    out = work / "out"
    every = sent[VNI_1] + sent[VNI_2]
    for pod_dir, ip, vni in (("shop_web-1", A, VNI_1), ("shop_web-2", B, VNI_1), ("shop_web-3", C, VNI_2)):
        files = _pod_files(out, pod_dir)
        assert len(files) == 1, files
        cap = pcapng.read_file(str(files[0]))
        expected = [f for f in sent[vni] if _has(f, ip)]
        assert [p.data for p in cap.packets] == expected  # exactly its pod's packets, in order
        # tshark agrees: every packet has the pod's address at one end, the unselected one at neither.
        rows = tshark_clean(files[0], "-T", "fields", "-e", "ip.src", "-e", "ip.dst").splitlines()
        assert len(rows) == len(expected) and all(ip in row.split() and X not in row.split() for row in rows)
        desc = tshark_clean(files[0], "-c", "1", "-T", "fields", "-e", "frame.interface_description").split()
        pod_name = pod_dir.partition("_")[2]
        eni = "eni-0aaaaaaaaaaaaaaa1" if vni == VNI_1 else "eni-0aaaaaaaaaaaaaaa2"
        for token in (f"pod={pod_name}", "namespace=shop", f"eni={eni}", "node=node-a", "session=shop/web"):
            assert token in desc, desc
        assert f"podNode=node-{1 if vni == VNI_1 else 2}" in desc
        assert m[f'{M}pod_packets_total{{namespace="shop",pod="shop/{pod_name}",session="web"}}'] == len(expected)
    assert not [p for p in (out / "shop" / "web").iterdir() if p.is_file()]  # perPod: no session-wide file

    # Each datagram once: written (for the session) or filtered out; a packet between the two
    # pods is in both pods' files but counted once.
    matched = [f for f in every if _has(f, A) or _has(f, B) or _has(f, C)]
    filtered = len(every) - len(matched)
    assert filtered > 0 and any(_has(f, A) and _has(f, B) for f in matched)
    assert m[f'{M}packets_total{{namespace="shop",session="web"}}'] == len(matched)
    assert m[f'{M}filtered_out_total{{namespace="shop",session="web"}}'] == filtered
    assert m[f"{M}datagrams_total"] == len(every) == len(matched) + filtered

    # pcap ls shows the pods; pcap get merges them, or gives one pod's.
    listing = _pcap("ls", "shop/web", "--dir", str(out)).stdout
    assert Counter(line.split("\t")[0] for line in listing.splitlines()[1:]) == {
        "shop/web-1": 1,
        "shop/web-2": 1,
        "shop/web-3": 1,
    }
    assert "shop/web-1,shop/web-2,shop/web-3" in _pcap("ls", "--dir", str(out)).stdout
    merged, one = work / "merged.pcapng", work / "web-2.pcapng"
    for path in (merged, one):
        path.touch()
        os.chown(path, NOBODY, NOBODY)
    _pcap("get", "shop/web", "--dir", str(out), "-o", str(merged))
    cap = pcapng.read_file(str(merged))
    copies = sum(1 for f in matched if _has(f, A) and _has(f, B))
    assert len(cap.packets) == len(matched) + copies
    assert sorted(i.name for i in cap.interfaces) == ["shop/web-1", "shop/web-2", "shop/web-3"]
    _pcap("get", "shop/web", "--pod", "shop/web-2", "--dir", str(out), "-o", str(one))
    rows = tshark_clean(one, "-T", "fields", "-e", "ip.src", "-e", "ip.dst").splitlines()
    assert len(rows) == sum(1 for f in sent[VNI_1] if _has(f, B)) and all(B in r.split() for r in rows)


def test_per_session_file_holds_the_selected_pods_packets_once(bed: Bed, work: Path) -> None:
    agent = _start(bed, work, "perSession", 1)
    sent = _traffic(seed=5, n=1200)
    _send(bed, sent)
    m = agent.quiesce()
    assert agent.stop() == 0, agent.log()[-3000:]

    d = work / "out" / "shop" / "web"
    files = sorted(p for p in d.iterdir() if not p.name.startswith("."))
    assert len(files) == 1 and files[0].is_file(), files  # one file, no pod directories
    cap = pcapng.read_file(str(files[0]))
    got = [p.data for p in cap.packets]
    for vni, ips in ((VNI_1, (A, B)), (VNI_2, (C,))):
        expected = [f for f in sent[vni] if any(_has(f, ip) for ip in ips)]
        assert [f for f in got if f in set(expected)] == expected  # each source's, once, in order
    every = sent[VNI_1] + sent[VNI_2]
    assert len(got) == sum(1 for f in every if _has(f, A) or _has(f, B) or _has(f, C))
    rows = tshark_clean(files[0], "-T", "fields", "-e", "ip.src", "-e", "ip.dst").splitlines()
    assert len(rows) == len(got) and not any(X in r.split() for r in rows)
    (iface,) = cap.interfaces
    for token in (
        "session=shop/web",
        "source=eni-0aaaaaaaaaaaaaaa1@node-1/vni=200/pods=shop/web-1@10.1.0.1,shop/web-2@10.1.0.3",
    ):
        assert token in iface.description.split(), iface.description
    assert m[f'{M}packets_total{{namespace="shop",session="web"}}'] == len(got)
    assert m[f'{M}filtered_out_total{{namespace="shop",session="web"}}'] == len(every) - len(got)


@pytest.fixture
def s3(bed: Bed) -> Iterator[Moto]:
    m = Moto(bed)
    m.start()
    try:
        yield m
    finally:
        m.stop()


def test_pod_files_in_s3_merge_exactly_as_in_the_directory(bed: Bed, work: Path, s3: Moto) -> None:
    """Shipped to the directory and to (emulated) S3 alike, a pod's files are found under its
    ``<namespace>_<pod>`` key component, and pcap get from S3 gives byte for byte what it gives
    from the directory: all pods merged, or one."""
    agent = _start(bed, work, "perPod", 1, ["--s3-bucket", BUCKET, "--s3-prefix", "pcap", "--cluster", "test"])
    _send(bed, _traffic(seed=3, n=600))
    agent.quiesce()
    assert agent.stop() == 0, agent.log()[-3000:]
    keys = sorted(o["key"] for o in s3.objects())
    assert [k.split("/")[4] for k in keys] == ["shop_web-1", "shop_web-2", "shop_web-3"], keys
    for name in ("from-dir", "from-s3", "pod-from-dir", "pod-from-s3"):
        (work / f"{name}.pcapng").touch()
        os.chown(work / f"{name}.pcapng", NOBODY, NOBODY)
    _pcap("get", "shop/web", "--dir", str(work / "out"), "-o", str(work / "from-dir.pcapng"))
    _pcap("get", "shop/web", "--pod", "shop/web-1", "--dir", str(work / "out"), "-o", str(work / "pod-from-dir.pcapng"))
    src = ["--s3-bucket", BUCKET, "--cluster", "test"]
    in_netns(bed.agt, lambda: _pcap("get", "shop/web", *src, "-o", str(work / "from-s3.pcapng"), env=ENV))
    in_netns(
        bed.agt,
        lambda: _pcap("get", "shop/web", "--pod", "shop/web-1", *src, "-o", str(work / "pod-from-s3.pcapng"), env=ENV),
    )
    listing = in_netns(bed.agt, lambda: _pcap("ls", "shop/web", *src, env=ENV)).stdout
    assert sorted(line.split("\t")[0] for line in listing.splitlines()[1:]) == [
        "shop/web-1",
        "shop/web-2",
        "shop/web-3",
    ]
    assert (work / "from-s3.pcapng").read_bytes() == (work / "from-dir.pcapng").read_bytes()
    assert (work / "pod-from-s3.pcapng").read_bytes() == (work / "pod-from-dir.pcapng").read_bytes()
    one = pcapng.read_file(str(work / "pod-from-s3.pcapng"))
    assert [i.name for i in one.interfaces] == ["shop/web-1"] and one.packets
    assert all(_has(p.data, A) for p in one.packets)
