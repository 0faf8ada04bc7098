"""The writer's bounds on unknown VNIs (on a real filesystem): the open-file cap closes the least
recently written, the rate limit refuses and counts, a reopened VNI never reuses a file name."""

from __future__ import annotations

import os
from pathlib import Path

from trafficmirror.capture import pcapng
from trafficmirror.capture.batch import Batch, Group
from trafficmirror.capture.sessions import Session
from trafficmirror.capture.writer import UnknownVniPolicy, Writer, WriterConfig

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
