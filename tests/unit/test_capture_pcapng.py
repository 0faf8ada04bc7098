"""pcapng/pcap framing round-trips through our reader and the block rules (4-byte alignment)."""

from __future__ import annotations

import io
import struct

import pytest

from trafficmirror.capture import pcapng


@pytest.mark.parametrize("caplen", [0, 1, 2, 3, 4, 5, 1514])
def test_epb_is_aligned_and_round_trips(caplen: int) -> None:
    data = bytes(range(256)) * 6
    ts = 1_700_000_000_123_456_789
    blob = (
        pcapng.section_header("t")
        + pcapng.interface_description("ns/s", "vni=1", 0)
        + pcapng.enhanced_packet(ts, data[:caplen], caplen + 10, comment="c" if caplen == 3 else "")
    )
    assert len(blob) % 4 == 0
    cap = pcapng.read_pcapng(io.BytesIO(blob))
    (p,) = cap.packets
    assert (p.ts_ns, p.caplen, p.orig_len, p.data) == (ts, caplen, caplen + 10, data[:caplen])
    assert cap.interfaces[0].name == "ns/s" and cap.interfaces[0].tsresol_ns == 1.0
    assert p.comment == ("c" if caplen == 3 else "")


def test_interface_statistics_round_trip() -> None:
    blob = (
        pcapng.section_header("t")
        + pcapng.interface_description("a", "b")
        + pcapng.interface_statistics(0, 5, start_ns=1, end_ns=5, received=7, if_dropped=2, os_dropped=3, comment="x")
    )
    (st,) = pcapng.read_pcapng(io.BytesIO(blob)).statistics
    assert (st.received, st.if_dropped, st.os_dropped, st.comment) == (7, 2, 3, "x")


def test_classic_pcap_nanosecond_round_trip() -> None:
    ts = 1_700_000_000_000_000_001
    blob = pcapng.pcap_global_header(0) + pcapng.pcap_record(ts, b"abc", 60)
    cap = pcapng.read_pcap(io.BytesIO(blob))
    assert struct.unpack("<I", blob[:4])[0] == pcapng.PCAP_MAGIC_NS
    assert [(p.ts_ns, p.data, p.orig_len) for p in cap.packets] == [(ts, b"abc", 60)]


@pytest.mark.parametrize("fmt", ["pcapng", "pcap"])
def test_iter_records_finds_every_record(fmt: str) -> None:
    frame = pcapng.enhanced_packet if fmt == "pcapng" else pcapng.pcap_record
    recs = [frame(1000 + i, b"x" * i, 100 + i) for i in range(6)]
    got = list(pcapng.iter_records(b"".join(recs), fmt))
    ends = [sum(len(r) for r in recs[: i + 1]) for i in range(6)]
    assert [(e, ts, o) for _s, e, ts, o in got] == [(ends[i], 1000 + i, 100 + i) for i in range(6)]


def test_valid_prefix_length_cuts_a_torn_tail(tmp_path: object) -> None:
    import pathlib

    p = pathlib.Path(str(tmp_path)) / "f.pcapng"
    whole = pcapng.section_header("t") + pcapng.interface_description("a", "b") + pcapng.enhanced_packet(1, b"ab", 2)
    p.write_bytes(whole + pcapng.enhanced_packet(2, b"cd", 2)[:-3])
    assert pcapng.valid_prefix_length(str(p)) == len(whole)
