"""Synthetic capture files shaped like the agent's (SHB, one IDB per session, EPBs, an ISB), for
testing `trafficmirror pcap get` at sizes no test would capture for real."""

from __future__ import annotations

import gzip
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from frames import ipv4_udp

from trafficmirror.capture import pcapng
from trafficmirror.capture.writer import file_basename

NS = 1_000_000_000


@dataclass
class Spec:
    """One file: its node, first timestamp, packet spacing and count."""

    node: str
    start_ns: int
    packets: int
    step_ns: int
    seq: int = 1
    frame_len: int = 200
    fmt: str = "pcapng"
    gz: bool = False
    drops: tuple[int, int] = (0, 0)  # isb_ifdrop, isb_osdrop
    tag: bytes = field(default=b"")

    @property
    def name(self) -> str:
        return file_basename(self.node, self.start_ns, self.seq, self.fmt) + (".gz" if self.gz else "")

    def timestamps(self) -> list[int]:
        return [self.start_ns + i * self.step_ns for i in range(self.packets)]


def frame(tag: bytes, i: int, frame_len: int) -> bytes:
    body = tag + b"#%09d" % i
    return ipv4_udp("10.0.0.1", "10.0.0.2", 1000, 2000, body + b"." * max(frame_len - 42 - len(body), 0))


def blocks(spec: Spec) -> Iterator[bytes]:
    if spec.fmt == "pcap":
        yield pcapng.pcap_global_header(0)
        for i, ts in enumerate(spec.timestamps()):
            yield pcapng.pcap_record(ts, frame(spec.tag, i, spec.frame_len), spec.frame_len)
        return
    yield pcapng.section_header("trafficmirror capture")
    yield pcapng.interface_description("ns/s", f"node={spec.node}")
    ts = spec.start_ns
    for i, ts in enumerate(spec.timestamps()):
        yield pcapng.enhanced_packet(ts, frame(spec.tag, i, spec.frame_len), spec.frame_len)
    yield pcapng.interface_statistics(
        0,
        ts,
        start_ns=spec.start_ns,
        end_ns=ts,
        received=spec.packets + spec.drops[0],
        if_dropped=spec.drops[0],
        os_dropped=spec.drops[1],
        delivered=spec.packets,
        comment=f"drops of {spec.node}",
    )


def write(spec: Spec, f: BinaryIO) -> None:
    out: BinaryIO = gzip.GzipFile(fileobj=f, mode="wb", compresslevel=1) if spec.gz else f  # type: ignore[assignment]
    for b in blocks(spec):
        out.write(b)
    if spec.gz:
        out.close()


def random_specs(rng: random.Random, t0: int) -> list[Spec]:
    """1-4 nodes, each with 1-4 consecutive files; nodes overlap in time, files of one node do not."""
    specs = []
    for n in range(rng.randint(1, 4)):
        t = t0 + rng.randint(0, 3 * NS)
        for seq in range(1, rng.randint(1, 4) + 1):
            count = rng.randint(0, 60) if rng.random() < 0.9 else rng.randint(300, 600)
            step = rng.randint(1_000, 50 * 1_000_000)
            spec = Spec(
                f"node-{n}",
                t,
                max(count, 1),
                step,
                seq=seq,
                frame_len=rng.randint(60, 1500),
                fmt="pcap" if rng.random() < 0.15 else "pcapng",
                gz=rng.random() < 0.3,
                drops=(rng.randint(0, 9), rng.randint(0, 9)),
                tag=f"{n}.{seq}.".encode(),
            )
            specs.append(spec)
            t = spec.timestamps()[-1] + rng.randint(1_000_000, NS)
    return specs


def stream(spec: Spec, f: BinaryIO, chunk_packets: int = 2048) -> None:
    """Write a (huge) pcapng fast: a chunk of EPBs built once, its timestamps patched per round."""
    f.write(pcapng.section_header("trafficmirror capture"))
    f.write(pcapng.interface_description("ns/s", f"node={spec.node}"))
    data = frame(spec.tag, 0, spec.frame_len)
    one = pcapng.enhanced_packet(0, data, len(data))
    chunk = bytearray(one * chunk_packets)
    size = len(one)
    done = 0
    ts = spec.start_ns
    while done < spec.packets:
        n = min(chunk_packets, spec.packets - done)
        for i in range(n):
            ts = spec.start_ns + (done + i) * spec.step_ns
            struct.pack_into("<II", chunk, i * size + 12, ts >> 32, ts & 0xFFFFFFFF)
        f.write(memoryview(chunk)[: n * size])
        done += n
    f.write(
        pcapng.interface_statistics(
            0, ts, start_ns=spec.start_ns, end_ns=ts, received=spec.packets, if_dropped=0, os_dropped=0
        )
    )
