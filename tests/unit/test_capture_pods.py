"""Selector sessions in the capture agent: which MirrorSessions it reads, and the split by pod
(pure functions, and the writer on a temporary directory: no sockets)."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "capture"))
from frames import ipv4_udp, ipv6_udp

from trafficmirror.capture import demux, pcapng
from trafficmirror.capture.batch import Batch, Group
from trafficmirror.capture.sessions import (
    ALL,
    PARENT_LABEL,
    PER_POD,
    PER_SESSION,
    Pod,
    Session,
    build_map,
    sessions_of,
)
from trafficmirror.capture.writer import Writer, WriterConfig

A, B, X, PEER = "10.0.0.1", "10.0.0.3", "10.0.0.9", "10.0.0.2"


def _selector(
    files: str | None = None, *, node: bool = False, phase: str = "Ready", sources: Any = None
) -> dict[str, Any]:
    source = (
        {"nodeSelector": {"matchLabels": {"role": "web"}}} if node else {"podSelector": {"matchLabels": {"app": "web"}}}
    )
    spec: dict[str, Any] = {"source": source}
    if files:
        spec["capture"] = {"files": files}
    if sources is None:
        sources = [
            {
                "networkInterfaceId": "eni-1",
                "nodeName": "node-1",
                "virtualNetworkId": 11,
                "sourceAddresses": ["192.168.0.10"],
                "pods": [
                    {"namespace": "shop", "name": "web-1", "ip": A},
                    {"namespace": "shop", "name": "web-2", "ip": B},
                ],
            },
            {"networkInterfaceId": "eni-2", "nodeName": "node-2", "pods": []},  # no AWS session yet: no VNI
        ]
    return {
        "metadata": {"namespace": "shop", "name": "web"},
        "spec": spec,
        "status": {"phase": phase, "virtualNetworkId": 99, "sources": sources},
    }


def test_a_pod_selector_session_stands_for_each_source_with_a_vni_and_its_pods() -> None:
    (s,) = sessions_of(_selector())
    assert (s.key, s.vni, s.source_eni, s.source_node, s.files) == ("shop/web", 11, "eni-1", "node-1", PER_POD)
    assert s.source_addresses == ("192.168.0.10",)
    assert s.pods == (Pod("shop", "web-1", A), Pod("shop", "web-2", B))
    assert sessions_of(_selector(PER_SESSION))[0].files == PER_SESSION
    (n,) = sessions_of(_selector(node=True))
    assert (n.files, n.pods) == (ALL, ())
    assert Session.from_json(json.loads(json.dumps(s.to_json()))) == s


def test_children_and_completed_sessions_are_not_in_the_map_and_plain_sessions_are_as_before() -> None:
    child = {
        "metadata": {"namespace": "shop", "name": "web-0a1b2c3d", "labels": {PARENT_LABEL: "web"}},
        "spec": {"source": {"networkInterfaceId": "eni-1"}},
        "status": {"virtualNetworkId": 11},
    }
    assert sessions_of(child) == []
    assert sessions_of(_selector(phase="Completed")) == []
    plain = {
        "metadata": {"namespace": "shop", "name": "p"},
        "spec": {"source": {"nodeName": "n"}},
        "status": {"virtualNetworkId": 5},
    }
    assert sessions_of(plain) == [Session("shop", "p", 5)]
    plain["status"]["phase"] = "Completed"  # type: ignore[index]
    assert sessions_of(plain) == []
    two = _selector(sources=[{"networkInterfaceId": f"eni-{v}", "virtualNetworkId": v, "pods": []} for v in (3, 4)])
    assert sorted(build_map(sessions_of(two))) == [3, 4]


def _records(frames: list[bytes], fmt: str) -> bytes:
    if fmt == "pcapng":
        return b"".join(pcapng.enhanced_packet(i + 1, f, len(f)) for i, f in enumerate(frames))
    return b"".join(pcapng.pcap_record(i + 1, f, len(f)) for i, f in enumerate(frames))


def _frames_of(buf: bytes | bytearray, fmt: str) -> list[bytes]:
    out = []
    for start, _end, _ts, _orig in pcapng.iter_records(buf, fmt):
        head = 28 if fmt == "pcapng" else 16
        caplen = int.from_bytes(
            buf[start + 20 : start + 24] if fmt == "pcapng" else buf[start + 8 : start + 12], "little"
        )
        out.append(bytes(buf[start + head : start + head + caplen]))
    return out


@pytest.mark.parametrize("fmt", ["pcapng", "pcap"])
def test_split_by_inner_source_or_destination_and_both_pods_get_a_packet_between_them(fmt: str) -> None:
    frames = [
        ipv4_udp(A, PEER, 1, 2, b"a"),  # A's
        ipv4_udp(PEER, B, 1, 2, b"b"),  # B's
        ipv4_udp(A, B, 1, 2, b"ab"),  # A's own, an extra copy for B
        ipv4_udp(X, PEER, 1, 2, b"x"),  # nobody's
        ipv4_udp(B, A, 1, 2, b"ba", vlan=7),  # B's own, extra for A, behind a VLAN tag
        ipv6_udp("fd00::1", "fd00::9", 1, 2, b"6"),  # A's by its IPv6 address
        ipv4_udp(A, PEER, 1, 2, b"cut")[:20],  # too short to hold the addresses: nobody's
        b"\x00" * 12 + b"\x08\x06" + b"\x00" * 28,  # ARP: nobody's
    ]
    g = Group(_records(frames, fmt), len(frames), 0, 1, len(frames))
    index = demux.index_of([A, B, "fd00::1"])
    index[demux.address_key("fd00::1") or b""] = 0  # pod 0 has both families
    r = demux.split(g, fmt, index)
    assert r.filtered == 3
    got = {pod: [(_frames_of(run.group.buf, fmt), run.extra) for run in runs] for pod, runs in r.runs.items()}
    assert got == {
        0: [([frames[0], frames[2]], False), ([frames[4]], True), ([frames[5]], False)],
        1: [([frames[1]], False), ([frames[2]], True), ([frames[4]], False)],
    }
    assert [run.group.packets for run in r.runs[0]] == [2, 1, 1]
    assert [(run.group.first_ts, run.group.last_ts) for run in r.runs[1]] == [(2, 2), (3, 3), (5, 5)]
    one = demux.split(g, fmt, index, per_pod=False)
    assert one.filtered == 3
    assert [(_frames_of(run.group.buf, fmt), run.extra) for run in one.runs[0]] == [
        ([frames[0], frames[1], frames[2], frames[4], frames[5]], False)
    ]


def _run_view(r: demux.Split) -> tuple[dict[int, list[tuple[bytes, int, int, int, int, bool]]], int, int]:
    runs = {
        pod: [
            (bytes(x.group.buf), x.group.packets, x.group.wire_bytes, x.group.first_ts, x.group.last_ts, x.extra)
            for x in rs
        ]
        for pod, rs in r.runs.items()
    }
    return runs, r.filtered, r.filtered_bytes


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 400),
    pods=st.integers(1, 6),
    per_pod=st.booleans(),
    fmt=st.sampled_from(["pcapng", "pcap"]),
)
def test_split_accounts_for_every_packet_once_and_files_hold_only_their_pods(
    seed: int, n: int, pods: int, per_pod: bool, fmt: str
) -> None:
    """Random traffic between pods and others, IPv4 and IPv6, tagged and cut short: the compiled
    split gives exactly the Python one's runs, and both put every packet where it belongs."""
    rng = random.Random(seed)
    ips = [f"10.1.0.{i + 1}" if i % 3 else f"fd00::{i + 1}" for i in range(pods)]
    others = ["10.2.0.1", "fd00::ff"]
    frames = []
    for i in range(n):
        src, dst = rng.choice(ips + others), rng.choice(ips + others)
        if (":" in src) != (":" in dst):
            dst = others[1] if ":" in src else others[0]
        payload = i.to_bytes(4, "big")
        f = (
            ipv6_udp(src, dst, 1, 2, payload)
            if ":" in src
            else ipv4_udp(src, dst, 1, 2, payload, vlan=rng.choice([None, 9]))
        )
        frames.append(f[: rng.randint(14, len(f))] if rng.random() < 0.1 else f)
    g = Group(_records(frames, fmt), n, 0, 1, n)
    index = demux.index_of(ips)
    r = demux.split(g, fmt, index, per_pod=per_pod)
    assert _run_view(r) == _run_view(demux.split_python(g, fmt, index, per_pod=per_pod))
    own = sum(run.group.packets for runs in r.runs.values() for run in runs if not run.extra)
    assert own + r.filtered == n

    def ends(f: bytes) -> set[bytes]:
        found = demux.inner_addresses(f, 0, len(f))
        return set(found) if found else set()

    for pod, runs in r.runs.items():
        written = [f for run in runs for f in _frames_of(run.group.buf, fmt)]
        if per_pod:
            expected = [f for f in frames if demux.address_key(ips[pod]) in ends(f)]
        else:
            keys = {demux.address_key(a) for a in ips}
            expected = [f for f in frames if ends(f) & keys]
        assert written == expected  # exactly its packets, in order


def test_the_writer_puts_each_pods_packets_in_its_own_file_named_for_it(tmp_path: Path) -> None:
    (s,) = sessions_of(_selector())
    cfg = WriterConfig(work_dir=str(tmp_path), node="capture-1", rotate_seconds=None, fsync=False)
    w = Writer(cfg, {s.vni: s})
    frames = [ipv4_udp(A, PEER, 1, 2, b"a"), ipv4_udp(A, B, 1, 2, b"ab"), ipv4_udp(X, PEER, 1, 2, b"x")]
    w.write(Batch(groups={11: Group(_records(frames, "pcapng"), 3, 180, 1, 3)}, datagrams=3))
    w.close_all()
    st_ = w.stats.sessions["shop/web"]
    assert (st_.packets, st_.filtered, st_.files) == (2, 1, 2)  # the A->B packet counted once
    assert (w.stats.pods["shop/web shop/web-1"].packets, w.stats.pods["shop/web shop/web-2"].packets) == (2, 1)
    d = tmp_path / "spool" / "shop" / "web"
    (f1,) = [p for p in (d / "shop_web-1").iterdir() if not p.name.endswith(".json")]
    (f2,) = [p for p in (d / "shop_web-2").iterdir() if not p.name.endswith(".json")]
    assert f1.name.startswith("capture-1-") and f1.name.endswith("-000001.pcapng")
    c1, c2 = pcapng.read_file(str(f1)), pcapng.read_file(str(f2))
    assert [p.data for p in c1.packets] == frames[:2] and [p.data for p in c2.packets] == frames[1:2]
    (iface,) = c2.interfaces
    assert iface.name == "shop/web-2"
    for token in ("pod=web-2", "namespace=shop", "podNode=node-1", "eni=eni-1", "node=capture-1", "session=shop/web"):
        assert token in iface.description.split(), iface.description
    meta = json.loads(Path(str(f2) + ".json").read_text())
    assert (meta["pod"], meta["session"], meta["namespace"]) == ("shop/web-2", "web", "shop")


def test_a_pod_joining_keeps_the_other_pods_files_open_and_a_pod_leaving_closes_its_own(tmp_path: Path) -> None:
    (s,) = sessions_of(_selector())
    cfg = WriterConfig(work_dir=str(tmp_path), node="capture-1", rotate_seconds=None, fsync=False)
    w = Writer(cfg, {s.vni: s})
    frames = [ipv4_udp(A, PEER, 1, 2, b"a"), ipv4_udp(B, PEER, 1, 2, b"b")]
    w.write(Batch(groups={11: Group(_records(frames, "pcapng"), 2, 120, 1, 2)}, datagrams=2))
    opened = {k: st.path for k, st in w.split_streams.items()}
    c = "10.0.0.5"
    joined = Session(
        s.namespace,
        s.name,
        s.vni,
        s.source_eni,
        s.source_addresses,
        s.files,
        (*s.pods, Pod("shop", "web-3", c)),
        s.source_node,
    )
    w.update_sessions({s.vni: joined})
    assert {k: st.path for k, st in w.split_streams.items()} == opened  # nothing rotated
    w.write(Batch(groups={11: Group(_records([ipv4_udp(c, A, 1, 2, b"c")], "pcapng"), 1, 60, 3, 3)}, datagrams=1))
    assert set(w.split_streams) == {("shop/web", "shop/web-1"), ("shop/web", "shop/web-2"), ("shop/web", "shop/web-3")}
    left = Session(
        s.namespace, s.name, s.vni, s.source_eni, s.source_addresses, s.files, joined.pods[1:], s.source_node
    )
    w.update_sessions({s.vni: left})  # web-1 left
    assert set(w.split_streams) == {("shop/web", "shop/web-2"), ("shop/web", "shop/web-3")}
    spooled = [p for p in (tmp_path / "spool" / "shop" / "web" / "shop_web-1").iterdir() if p.suffix == ".pcapng"]
    assert [p.data for p in pcapng.read_file(str(spooled[0])).packets] == [frames[0], ipv4_udp(c, A, 1, 2, b"c")]
    w.close_all()
    st_ = w.stats.sessions["shop/web"]
    assert (st_.packets, st_.filtered) == (3, 0)


def test_a_node_selector_sessions_sources_share_one_file_with_every_packet(tmp_path: Path) -> None:
    sources = [
        {"networkInterfaceId": f"eni-{v}", "nodeName": f"node-{v}", "virtualNetworkId": v, "pods": []} for v in (21, 22)
    ]
    found = sessions_of(_selector(node=True, sources=sources))
    cfg = WriterConfig(work_dir=str(tmp_path), node="capture-1", rotate_seconds=None, fsync=False, workers=2, worker=1)
    w = Writer(cfg, build_map(found))
    f21, f22 = [ipv4_udp(X, PEER, 1, 2, b"21")], [ipv4_udp(A, PEER, 1, 2, b"22"), ipv4_udp(X, B, 1, 2, b"22")]
    w.write(Batch(groups={21: Group(_records(f21, "pcapng"), 1, 60, 1, 1)}, datagrams=1))
    w.write(Batch(groups={22: Group(_records(f22, "pcapng"), 2, 120, 2, 3)}, datagrams=2))
    w.close_all()
    (f,) = [p for p in (tmp_path / "spool" / "shop" / "web").iterdir() if p.suffix == ".pcapng"]
    assert f.name.endswith("-000002.pcapng")  # worker 1 of 2: even sequence numbers, never a sibling's
    cap = pcapng.read_file(str(f))
    assert [p.data for p in cap.packets] == f21 + f22  # every packet, nothing filtered
    desc = cap.interfaces[0].description.split()
    assert "source=eni-21@node-21/vni=21" in desc and "source=eni-22@node-22/vni=22" in desc
    assert (w.stats.sessions["shop/web"].packets, w.stats.sessions["shop/web"].filtered) == (3, 0)
