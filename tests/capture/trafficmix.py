"""Traffic mixes for the accounting tests: what is sent, what each datagram must become, and the
check that every datagram sent is written to its session's file in order or counted at a layer.

The agent's namespace is the test's alone, so its NIC and UDP counters count only this traffic;
the softnet backlog is per CPU for the whole machine, so a datagram lost there is attributed to
it only up to the rise the agent reports for that layer.
"""

from __future__ import annotations

import bisect
import json
import random
import socket
import struct
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from frames import ipv4_udp
from netbed import UND_AGT, UND_SRC, AgentProc, Bed

from trafficmirror.capture import pcapng, receiver, vxlan
from trafficmirror.capture.batch import MAX_BATCH

SPOOF_SRC = "10.99.0.3"  # a host in the "VPC" that is not the session's source
LAYER = "trafficmirror_capture_layer_drops_total"
MTU_PAYLOAD = 8900  # the underlay's MTU is 9000: no datagram is fragmented


@dataclass
class Mix:
    """What to send. ``known`` VNIs have sessions; ``checked`` ones accept only UND_SRC."""

    seed: int
    n_vnis: int
    known: int
    checked: int
    datagrams: int
    spoofed: int
    weights: dict[str, float]
    jumbo: float = 0.0
    # The first ``selector`` known VNIs are the sources of one podSelector session ("mix/sel"),
    # two pods each; their frames run between the pods and an address no pod has.
    selector: int = 0
    files: str = "perPod"
    # The share of frames that go to the first known VNI (a busy ENI among quiet ones); the rest
    # spread evenly over every VNI. 0: all spread evenly.
    skew: float = 0.0


SELECTOR = "sel"
OUTSIDER = "10.0.0.2"


def pod_ips(j: int) -> tuple[str, str]:
    """The two pods of the selector session's j-th source."""
    return f"10.200.{j}.1", f"10.200.{j}.2"


def addresses_of(frame: bytes) -> tuple[bytes, bytes] | None:
    """An untagged IPv4 frame's inner (source, destination), as the agent reads them."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    return frame[26:30], frame[30:34]


@dataclass
class Expected:
    legit: list[bytes] = field(default_factory=list)  # sent from UND_SRC, in order
    spoof: list[bytes] = field(default_factory=list)  # sent from SPOOF_SRC, in order
    frames: dict[int, list[bytes]] = field(default_factory=dict)  # per known VNI, in order
    # The selector session's files: per pod ("<namespace>_<pod>", or "" for perSession), in order;
    # and what matched no pod.
    pod_frames: dict[str, list[bytes]] = field(default_factory=dict)
    filtered: int = 0
    unknown_frames: dict[int, list[bytes]] = field(default_factory=dict)
    source_of: dict[bytes, int] = field(default_factory=dict)  # a selected pod's IP -> its source's VNI
    reasons: Counter[str] = field(default_factory=Counter)  # rejections, incl. spoofed and unknown_vni
    sessions: list[object] = field(default_factory=list)
    kernel_drops: int = 0  # what the kernel VNI filter, when on, drops before the socket


def vnis_of(mix: Mix) -> tuple[list[int], set[int], set[int]]:
    rng = random.Random(mix.seed ^ 0x5EED)
    vnis = rng.sample(range(1, 1 << 24), mix.n_vnis)
    known = set(vnis[: mix.known])
    checked = set(vnis[: mix.checked])
    return vnis, known, checked


def build(mix: Mix, kernel_filter: bool = False) -> Expected:
    rng = random.Random(mix.seed)
    vnis, known, checked = vnis_of(mix)
    exp = Expected()
    ordered_known = [v for v in vnis if v in known]
    selector = {v: j for j, v in enumerate(ordered_known[: mix.selector])}
    exp.sessions = [
        {"vni": v, "namespace": "mix", "name": f"s{v}", "sourceAddresses": [UND_SRC] if v in checked else []}
        for v in sorted(known)
        if v not in selector
    ]
    pods_of: dict[int, dict[bytes, str]] = {}
    if selector:
        sources = []
        for v, j in selector.items():
            ips = pod_ips(j)
            pods = [{"namespace": "mix", "name": f"p{j}-{k}", "ip": ip} for k, ip in enumerate(ips)]
            pods_of[v] = {socket.inet_aton(p["ip"]): f"mix_{p['name']}" for p in pods}
            exp.source_of.update(dict.fromkeys(pods_of[v], v))
            src = {"networkInterfaceId": f"eni-{v:017x}", "nodeName": f"node-{j}", "virtualNetworkId": v, "pods": pods}
            src["sourceAddresses"] = [UND_SRC] if v in checked else []
            sources.append(src)
        exp.sessions.append(
            {
                "metadata": {"namespace": "mix", "name": SELECTOR},
                "spec": {"source": {"podSelector": {}}, "capture": {"files": mix.files}},
                "status": {"phase": "Ready", "sources": sources},
            }
        )
    kinds = list(mix.weights)
    weights = [mix.weights[k] for k in kinds]
    for i in range(mix.datagrams):
        kind = rng.choices(kinds, weights)[0]
        vni = ordered_known[0] if mix.skew and ordered_known and rng.random() < mix.skew else rng.choice(vnis)
        if kind == "garbage":
            d = rng.randbytes(rng.randint(0, 40))
        elif kind == "short_header":
            d = rng.randbytes(rng.randint(0, 7))
        elif kind == "bad_flags":
            d = bytes([rng.randrange(256) & ~vxlan.FLAG_VNI_VALID]) + rng.randbytes(rng.randint(7, 300))
        elif kind == "short_frame":
            d = vxlan.header(vni) + rng.randbytes(rng.randint(0, 13))
        else:  # a frame, whole or cut short the way AWS truncates to the session's packet length
            size = rng.randint(4000, MTU_PAYLOAD - 8) if rng.random() < mix.jumbo else rng.randint(60, 1400)
            src, dst = "10.0.0.1", OUTSIDER
            if vni in selector:  # between the source's pods and an outsider, any direction
                src, dst = rng.sample([*pod_ips(selector[vni]), OUTSIDER], 2)
            frame = ipv4_udp(src, dst, 1024 + (i & 0x7FFF), 80, struct.pack("!I", i) * (size // 4))
            frame = frame[: min(len(frame), MTU_PAYLOAD - 8)]
            if kind == "truncated":
                frame = frame[: rng.randint(14, max(14, len(frame) - 1))]
            d = vxlan.header(vni) + frame
        exp.legit.append(d)
    for _ in range(mix.spoofed):  # forged: a checked session's VNI (or any VNI) from elsewhere
        vni = rng.choice(sorted(checked)) if checked and rng.random() < 0.8 else rng.choice(vnis)
        exp.spoof.append(vxlan.header(vni) + ipv4_udp("6.6.6.6", "10.0.0.2", 6, 6, rng.randbytes(rng.randint(0, 200))))
    if kernel_filter:
        try:  # more VNIs than one classic BPF program holds: the agent attaches no kernel filter
            receiver.vni_filter_program(sorted(known))
        except ValueError:
            kernel_filter = False
    for src, datagrams in ((SPOOF_SRC, exp.spoof), (UND_SRC, exp.legit)):  # the order they are sent in
        for d in datagrams:
            if kernel_filter and (len(d) < 8 or int.from_bytes(d[4:7], "big") not in known):
                exp.kernel_drops += 1  # the filter reads the VNI field whatever the flags say
                continue
            res = vxlan.parse(d)
            vni = int.from_bytes(d[4:7], "big") if len(d) >= 8 and d[0] & vxlan.FLAG_VNI_VALID else -1
            checkable = not isinstance(res, vxlan.Reason) or res is vxlan.Reason.SHORT_FRAME
            if checkable and vni in checked and src != UND_SRC:
                exp.reasons[vxlan.Reason.SPOOFED] += 1  # the source is checked before the frame's length
            elif isinstance(res, vxlan.Reason):
                exp.reasons[res] += 1
            elif res.vni in selector:
                frame = d[8:]
                pods = pods_of[res.vni]
                addrs = addresses_of(frame)
                mine = sorted({pods[a] for a in addrs or () if a in pods})
                if not mine:
                    exp.filtered += 1
                for pod in mine if mix.files == "perPod" else [""] if mine else []:
                    exp.pod_frames.setdefault(pod, []).append(frame)
            elif res.vni in known:
                exp.frames.setdefault(res.vni, []).append(d[8:])
            else:
                exp.reasons[vxlan.Reason.UNKNOWN_VNI] += 1
                exp.unknown_frames.setdefault(res.vni, []).append(d[8:])
    return exp


def empty_work_dir(work: Path) -> None:
    """Empty the output and spool directories: one work dir serves every hypothesis example."""
    for sub in ("out", "work"):
        for p in sorted((work / sub).rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()


def write_pool(path: Path, datagrams: list[bytes]) -> Path:
    path.write_bytes(b"".join(struct.pack("=I", len(d)) + d for d in datagrams))
    return path


def send(
    bed: Bed, vxsend: Path, pool: Path, n: int, src: str, *, batch: int, rate: int = 0, agent_pid: int = 0
) -> None:
    cmd = ["ip", "netns", "exec", bed.srv, str(vxsend), "-d", UND_AGT, "-s", src, "-f", str(pool), "-n", str(n)]
    cmd += ["-b", str(batch), "-r", str(rate)]
    if agent_pid:  # flow control: a receiver slower than the sender is not what these tests are about
        cmd += ["-w", str(agent_pid), "-q", str(4 << 20)]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    assert f"sent={n}" in res.stdout, res.stdout + res.stderr


def sessions_file(work: Path, exp: Expected) -> Path:
    p = work / "sessions.json"
    p.write_text(json.dumps(exp.sessions))
    return p


def settle(agent: AgentProc, sent: int) -> dict[str, float]:
    """The agent's metrics once every datagram sent is accounted for at some layer (or a layer
    that cannot be attributed, the machine's backlog, has risen by the rest), and quiet."""

    def arrived(m: dict[str, float]) -> bool:
        seen = m.get("trafficmirror_capture_datagrams_total", 0) + m.get("trafficmirror_capture_kernel_drops_total", 0)
        seen += m.get(f'{LAYER}{{layer="nic",scope="node"}}', 0) + m.get(f'{LAYER}{{layer="softnet",scope="node"}}', 0)
        return seen >= sent

    agent.wait_for(arrived, timeout=120)
    return agent.quiesce()


def _frames_in(files: list[Path]) -> list[bytes]:
    out: list[bytes] = []
    for f in files:
        out += [p.data for p in pcapng.read_file(str(f)).packets]
    return out


def _is_subsequence(part: list[bytes], whole: list[bytes]) -> bool:
    it = iter(whole)
    return all(any(x == y for y in it) for x in part)


def _by_source(frames: list[bytes], exp: Expected) -> dict[int, list[bytes]]:
    """A selector session's frames by the VNI of the source whose pod they are to or from."""
    out: dict[int, list[bytes]] = {}
    for f in frames:
        out.setdefault(_source_vni(f, exp), []).append(f)
    return out


def _source_vni(frame: bytes, exp: Expected) -> int:
    vnis = {exp.source_of[a] for a in addresses_of(frame) or () if a in exp.source_of}
    assert len(vnis) == 1, f"a frame of no single source in a selector session's file: {frame[:34].hex()}"
    return vnis.pop()


def order_in_file(records: list[tuple[int, int]]) -> tuple[int, int]:
    """Over one file's (timestamp, VNI) records in file order: how many records are earlier
    than the record of their VNI before them, and the most records of a later timestamp that
    any record follows."""
    last: dict[int, int] = {}
    backwards = 0
    seen: list[int] = []
    most_later = 0
    for ts, vni in records:
        backwards += ts < last.get(vni, 0)
        last[vni] = ts
        most_later = max(most_later, len(seen) - bisect.bisect_right(seen, ts))
        bisect.insort(seen, ts)
    return backwards, most_later


def check_order(out: Path, exp: Expected) -> int:
    """Every file: each VNI's records in timestamp order; records of different VNIs (a
    selector session's sources in one file) out of order by less than one receive batch, the
    bound the README gives: no record follows MAX_BATCH or more records stamped after it.
    Returns the most such records seen."""
    worst = 0
    for f in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = f.relative_to(out).parts
        packets = pcapng.read_file(str(f)).packets
        if rel[0] == "mix" and rel[1] == SELECTOR:
            records = [(p.ts_ns, _source_vni(p.data, exp)) for p in packets]
        elif rel[0] == "mix" and rel[1].startswith("s"):
            records = [(p.ts_ns, int(rel[1][1:])) for p in packets]
        else:
            assert rel[0] == "_unknown" and rel[1].startswith("vni-"), f
            records = [(p.ts_ns, int(rel[1][4:])) for p in packets]
        backwards, later = order_in_file(records)
        assert backwards == 0, f"{f}: {backwards} records earlier than their VNI's record before them"
        assert later < MAX_BATCH, f"{f}: a record follows {later} records stamped after it"
        worst = max(worst, later)
    return worst


def check(agent: AgentProc, m: dict[str, float], exp: Expected, out: Path, sent: int) -> dict[str, int]:
    """sent = written + counted drops, per reason and per layer, exactly; each session's files
    hold exactly its frames in order (a subsequence, if a layer counted drops)."""
    mal = {r: int(m.get(f'trafficmirror_capture_malformed_total{{reason="{r}"}}', 0)) for r in vxlan.Reason}
    refused = {
        w: int(m.get(f'trafficmirror_capture_unknown_vni_refused_total{{why="{w}"}}', 0)) for w in ("drop", "rate")
    }
    written: dict[str, int] = {}
    disk = filtered = 0
    for k, v in m.items():
        if k.startswith("trafficmirror_capture_packets_total{"):
            written[k] = int(v)
        elif k.startswith("trafficmirror_capture_write_dropped_packets_total{"):
            disk += int(v)
        elif k.startswith("trafficmirror_capture_filtered_out_total{"):
            filtered += int(v)
    datagrams = int(m["trafficmirror_capture_datagrams_total"])
    socket_drops = int(m["trafficmirror_capture_kernel_drops_total"])
    nic = int(m[f'{LAYER}{{layer="nic",scope="node"}}'])
    softnet = int(m[f'{LAYER}{{layer="softnet",scope="node"}}'])
    # Inside the agent: every datagram taken off the socket is written (once, even when it went to
    # two pods' files), filtered out (a pod session's packet of no selected pod), or counted with
    # a reason.
    rejected = sum(n for r, n in mal.items() if r != vxlan.Reason.UNKNOWN_VNI)
    assert datagrams == sum(written.values()) + disk + filtered + rejected + sum(refused.values()), (m, exp.reasons)
    # Before the agent: the socket's and the NIC's drops are this namespace's; the backlog's are
    # the machine's, so they can only bound what is left.
    before = sent - datagrams
    assert before >= socket_drops + nic
    assert before - socket_drops - nic <= softnet, f"{before - socket_drops - nic} datagrams lost uncounted"
    lossless = before == socket_drops == exp.kernel_drops and nic == 0 and disk == 0
    if lossless:
        for r in vxlan.Reason:
            assert mal[r] == exp.reasons[r], (r, mal, exp.reasons)
        assert filtered == exp.filtered
    unknown_written = int(m.get('trafficmirror_capture_packets_total{namespace="_unknown",session="all"}', 0))
    assert unknown_written + refused["drop"] + refused["rate"] == mal[vxlan.Reason.UNKNOWN_VNI]
    # The files: each known VNI's hold exactly its frames, in order.
    for vni, frames in exp.frames.items():
        d = out / "mix" / f"s{vni}"
        got = _frames_in(sorted(d.iterdir()) if d.exists() else [])
        assert len(got) == written.get(f'trafficmirror_capture_packets_total{{namespace="mix",session="s{vni}"}}', 0)
        if lossless:
            assert got == frames, f"VNI {vni}: {len(got)} frames on disk, {len(frames)} sent"
        else:
            assert _is_subsequence(got, frames), f"VNI {vni}: frames out of order or foreign"
    # The selector session's files: each pod's hold exactly the frames to or from it, each
    # source's in order (perSession: the sources' frames interleave within a receive batch, see
    # check_order).
    sel = out / "mix" / SELECTOR
    for pod, frames in exp.pod_frames.items():
        d = sel / pod if pod else sel
        got = _frames_in(sorted(p for p in d.iterdir() if p.is_file()) if d.exists() else [])
        mine, sent_frames = _by_source(got, exp), _by_source(frames, exp)
        assert mine.keys() <= sent_frames.keys()
        if lossless:
            assert len(got) == len(frames), f"pod {pod or '(session)'}: {len(got)} frames on disk, {len(frames)} sent"
        for vni, frames_of in sent_frames.items():
            if lossless:
                assert mine.get(vni, []) == frames_of, f"pod {pod or '(session)'}, VNI {vni}: frames differ"
            else:
                assert _is_subsequence(mine.get(vni, []), frames_of), f"pod {pod or '(session)'}: out of order"
    if sel.exists():
        assert {p.name for p in sel.iterdir() if p.is_dir()} <= set(exp.pod_frames)
    unknown_on_disk = 0
    for vni, frames in exp.unknown_frames.items():
        d = out / "_unknown" / f"vni-{vni}"
        got = _frames_in(sorted(d.iterdir()) if d.exists() else [])
        assert _is_subsequence(got, frames), f"unknown VNI {vni}: frames out of order or foreign"
        unknown_on_disk += len(got)
    assert unknown_on_disk == unknown_written
    later = check_order(out, exp)
    return {"datagrams": datagrams, "socket": socket_drops, "nic": nic, "before": before, "later": later, **refused}
