"""The writer's bounds on unknown VNIs (on a real filesystem): the open-file cap closes the least
recently written, the rate limit refuses and counts, a reopened VNI never reuses a file name; and
which VNIs the receive loop may hold back: those whose files no other VNI writes to."""

from __future__ import annotations

import os
import random
import socket
import struct
from pathlib import Path

import pytest

from trafficmirror.capture import pcapng
from trafficmirror.capture.batch import Batch, Group
from trafficmirror.capture.sessions import ALL, PER_POD, PER_SESSION, Pod, Session
from trafficmirror.capture.writer import UnknownVniPolicy, Writer, WriterConfig, holdable_vnis

T0 = 1_800_000_000 * 10**9


def _batch(vnis: list[int], ts: int) -> Batch:
    b = Batch(datagrams=len(vnis))
    for i, v in enumerate(vnis):
        rec = pcapng.enhanced_packet(ts + i, b"\x02" * 60, 60)
        b.groups[v] = Group(rec, 1, 60, ts + i, ts + i)
    return b


def _writer(tmp_path: Path, policy: UnknownVniPolicy) -> Writer:
    cfg = WriterConfig(str(tmp_path), node="n", rotate_bytes=None, rotate_seconds=None, fsync=False)
    return Writer(cfg, {1: Session("a", "known", 1)}, unknown=policy)


def _spooled(tmp_path: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path / "spool")) for p in (tmp_path / "spool").rglob("*.pcapng"))


def test_open_unknown_files_are_capped_least_recently_written_first(tmp_path: Path) -> None:
    w = _writer(tmp_path, UnknownVniPolicy(max_open=3, new_per_second=1e9))
    w.write(_batch([1, 10, 11, 12], T0))
    w.write(_batch([10], T0 + 100))  # 10 is now the most recent unknown
    w.write(_batch([13], T0 + 200))  # room for 13: 11 goes
    assert sorted(w.streams) == [1, 10, 12, 13]
    w.write(_batch([14, 11], T0 + 300))  # 12 and 10 go; 11 comes back under a new sequence number
    assert sorted(w.streams) == [1, 11, 13, 14]
    w.close_all()
    spooled = _spooled(tmp_path)
    names = [os.path.basename(p) for p in spooled if "vni-11" in p]
    assert len(names) == 2 and names[0] != names[1]
    assert w.stats.unknown_refused == {}
    assert w.stats.malformed["unknown_vni"] == 7
    assert w.stats.sessions["_unknown/all"].packets == 7
    assert w.stats.sessions["a/known"].packets == 1


def test_new_unknown_files_are_rate_limited_and_the_rest_counted(tmp_path: Path) -> None:
    w = _writer(tmp_path, UnknownVniPolicy(max_open=100, new_per_second=2))
    w.write(_batch(list(range(100, 110)), T0))
    assert len(w.streams) == 2  # a burst of as many as the rate
    assert w.stats.unknown_refused == {"rate": 8}
    w.write(_batch([100, 101], T0 + 1))  # open ones keep being written
    assert w.stats.unknown_refused == {"rate": 8}
    assert w.stats.sessions["_unknown/all"].packets == 4


def test_drop_writes_no_unknown_file_and_counts_every_packet(tmp_path: Path) -> None:
    w = _writer(tmp_path, UnknownVniPolicy(write=False))
    w.write(_batch([1, 5, 6], T0))
    w.close_all()
    assert w.stats.unknown_refused == {"drop": 2}
    assert [p for p in _spooled(tmp_path) if "_unknown" in p] == []


def _frame(src: str, dst: str, vni: int) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return b"\x02" * 12 + b"\x08\x00" + ip + struct.pack("!HHHH", 1, 2, 8, 0) + vni.to_bytes(4, "big")


def _random_sessions(rng: random.Random) -> list[Session]:
    """Plain sessions and selector sessions of every kind; a pod may be on two sources (two
    ENIs) of its session, a selector session may have one source or several."""
    out: list[Session] = []
    vni = 100
    for k in range(rng.randint(1, 6)):
        kind = rng.choice(["", PER_POD, PER_SESSION, ALL])
        if not kind:
            out.append(Session("ns", f"plain{k}", vni))
            vni += 1
            continue
        pool = [Pod("ns", f"p{k}-{j}", f"10.{k}.0.{j + 1}") for j in range(rng.randint(1, 4))]
        for _ in range(rng.randint(1, 3)):
            pods = () if kind == ALL else tuple(rng.sample(pool, rng.randint(0, len(pool))))
            out.append(Session("ns", f"sel{k}", vni, files=kind, pods=pods))
            vni += 1
    return out


@pytest.mark.parametrize("seed", range(40))
def test_held_vnis_are_exactly_those_alone_in_every_file_they_reach(tmp_path: Path, seed: int) -> None:
    """The VNIs the receive loop may hold back (holdable_vnis) are the VNIs whose records the
    writer puts only into files no other VNI's records reach; each other VNI shares a file. Seeded
    random sessions; each VNI sends a packet from each of its pods and one of no pod, and the
    files say which VNIs reached them."""
    rng = random.Random(seed)
    sessions = _random_sessions(rng)
    cfg = WriterConfig(str(tmp_path), node="n", rotate_bytes=None, rotate_seconds=None, fsync=False)
    w = Writer(cfg, {s.vni: s for s in sessions})
    b = Batch()
    for i, s in enumerate(sessions):
        frames = [_frame(p.ip, "10.255.0.1", s.vni) for p in s.pods] + [_frame("10.254.0.1", "10.255.0.1", s.vni)]
        buf = b"".join(pcapng.enhanced_packet(T0 + i, f, len(f)) for f in frames)
        b.groups[s.vni] = Group(buf, len(frames), sum(map(len, frames)), T0 + i, T0 + i)
        b.datagrams += len(frames)
    w.write(b)
    w.close_all()
    reached: dict[Path, set[int]] = {}
    for f in (tmp_path / "spool").rglob("*.pcapng"):
        reached[f] = {int.from_bytes(p.data[-4:], "big") for p in pcapng.read_file(str(f)).packets}
    alone = {s.vni for s in sessions if all(vs == {s.vni} for vs in reached.values() if s.vni in vs)}
    assert holdable_vnis(sessions) == alone
    assert {s.vni for s in sessions if not s.files} <= alone  # a plain session's files are its own


def test_the_seeds_draw_held_and_shared_selector_sources_alike() -> None:
    """The seeds above are not all one side: over them, selector sources are held (one source
    per session, a perPod source whose pods are its own) and not held (several sources in one
    perSession or nodeSelector file, a pod on two sources)."""
    held = shared = pod_shared = 0
    for seed in range(40):
        sessions = _random_sessions(random.Random(seed))
        h = holdable_vnis(sessions)
        held += sum(1 for s in sessions if s.files and s.vni in h)
        shared += sum(1 for s in sessions if s.vni not in h)
        pod_shared += sum(1 for s in sessions if s.files == PER_POD and s.vni not in h)
    assert held and shared and pod_shared
