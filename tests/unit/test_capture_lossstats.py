"""The per-layer drop counters: parsers of the kernel's files, and what a file's statistics say."""

from __future__ import annotations

import io
import os
from pathlib import Path

from trafficmirror.capture import lossstats, pcapng
from trafficmirror.capture.lossstats import FileDrops, NodeDrops

SOFTNET = (
    "0000000b 00000003 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n"
    "0000b578 0000001a 00000002 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001\n"
)
SNMP = (
    "Ip: Forwarding DefaultTTL\nIp: 1 64\n"
    "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n"
    "Udp: 185 0 12 186 9 0 3 0 0\n"
    "UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n"
    "UdpLite: 0 0 0 0 0 0 0 0 0\n"
)
SNMP6 = "Udp6InDatagrams \t5\nUdp6InErrors    \t2\nUdp6RcvbufErrors  \t1\n"


def test_softnet_dropped_is_the_second_column_summed_over_cpus() -> None:
    assert lossstats.parse_softnet_dropped(SOFTNET) == 3 + 0x1A


def test_udp_counters_come_from_the_udp_lines_not_udplite() -> None:
    udp = lossstats.parse_snmp(SNMP)
    assert (udp["InErrors"], udp["RcvbufErrors"]) == (12, 9)
    assert lossstats.parse_snmp6(SNMP6)["Udp6RcvbufErrors"] == 1


def test_node_drops_from_a_fake_proc_and_sysfs(tmp_path: Path) -> None:
    (tmp_path / "proc/net").mkdir(parents=True)
    (tmp_path / "proc/net/snmp").write_text(SNMP)
    (tmp_path / "proc/net/snmp6").write_text(SNMP6)
    (tmp_path / "proc/net/softnet_stat").write_text(SOFTNET)
    for name, dropped, missed in (("eth0", 5, 2), ("lo", 100, 100), ("veth1", 1, 0)):
        d = tmp_path / "sys" / name / "statistics"
        d.mkdir(parents=True)
        (d / "rx_dropped").write_text(f"{dropped}\n")
        (d / "rx_missed_errors").write_text(f"{missed}\n")
    got = lossstats.read_node_drops(proc=str(tmp_path / "proc"), sys_net=str(tmp_path / "sys"))
    assert got == NodeDrops(nic=5 + 2 + 1, softnet=3 + 0x1A, udp_rcvbuf=9 + 1, udp_inerrors=12 + 2)


def test_the_real_node_counters_are_readable_without_privileges() -> None:
    got = lossstats.read_node_drops()
    assert all(v >= 0 for v in got.as_dict().values())
    if os.path.exists("/proc/net/softnet_stat"):
        assert lossstats.interfaces() is not None


def test_a_rise_is_never_negative_and_round_trips() -> None:
    a, b = NodeDrops(10, 5, 3, 4), NodeDrops(7, 9, 1, 4)
    assert a.minus(b) == NodeDrops(3, 0, 2, 0)
    assert NodeDrops.from_dict(a.as_dict()) == a


def test_a_file_says_every_layer_and_osdrop_is_socket_plus_backlog() -> None:
    d = FileDrops(disk=9003, socket=7, node=NodeDrops(nic=11, softnet=5, udp_rcvbuf=7, udp_inerrors=8))
    assert d.os_dropped == 12
    blob = (
        pcapng.section_header("t")
        + pcapng.interface_description("ns/s", "")
        + pcapng.interface_statistics(
            0,
            5,
            start_ns=1,
            end_ns=5,
            received=10 + d.disk,
            if_dropped=d.disk,
            os_dropped=d.os_dropped,
            delivered=10,
            comment=d.comment(),
        )
    )
    (st,) = pcapng.read_pcapng(io.BytesIO(blob)).statistics
    assert (st.received, st.if_dropped, st.os_dropped, st.delivered) == (9013, 9003, 12, 10)
    for part in ("disk=9003 ", "socket=7 ", "softnet=5 ", "nic=11 ", "udp_rcvbuf=7 ", "udp_inerrors=8 ", "node-wide"):
        assert part in st.comment


def test_the_largest_statistics_block_fits_the_room_files_keep_for_it() -> None:
    from trafficmirror.capture.writer import ISB_RESERVE

    big = 2**64 - 1
    d = FileDrops(disk=big, socket=big, node=NodeDrops(big, big, big, big))
    isb = pcapng.interface_statistics(
        0,
        big,
        start_ns=big,
        end_ns=big,
        received=big,
        if_dropped=big,
        os_dropped=big,
        delivered=big,
        comment=d.comment(),
    )
    assert len(isb) <= ISB_RESERVE
