"""What one receive batch yields, and the interface both receive loops implement.

One batch holds, per VNI, the packets already framed as pcapng EPBs (or pcap records), so the
writer only appends bytes; plus the count of every datagram it did not frame, by reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import Protocol

MAX_BATCH = 256  # datagrams per recvmmsg; the compiled loop's limit too


@dataclass(slots=True)
class Group:
    """The packets of one VNI in one batch, framed and ready to append."""

    buf: bytes | bytearray = field(default_factory=bytearray)
    packets: int = 0
    wire_bytes: int = 0
    first_ts: int = 0
    last_ts: int = 0


@dataclass
class Kept:
    """A datagram that was not framed, kept (with ``--keep-malformed``) for a separate file."""

    ts_ns: int
    datagram: bytes
    source: tuple[str, int]
    reason: str


@dataclass
class Batch:
    groups: dict[int, Group] = field(default_factory=dict)
    malformed: Counter[str] = field(default_factory=Counter)  # rejected datagrams by vxlan.Reason
    kept: list[Kept] = field(default_factory=list)
    datagrams: int = 0
    kernel_drops: int = 0  # cumulative sk_drops as of the last datagram
    held_full: bool = False  # the loop holds as many VNIs as it may: take_held() now


class Receiver(Protocol):
    """One socket's receive loop. Not shared between threads: each thread has its own."""

    def recv_batch(self, max_datagrams: int = MAX_BATCH) -> Batch:
        """Take up to ``max_datagrams`` off the socket without blocking; every one of them is in
        ``datagrams`` and either framed in a group or counted in ``malformed``. A loop that
        holds records (to hand them out in larger groups) may count a datagram here and hand out
        its record in a later batch or in ``take_held``."""
        ...

    def take_held(self) -> Batch:
        """The records held back, every one (groups only; no datagrams counted). Call it before
        anything that needs every received packet written: a time boundary, a change of
        sessions, shutdown, an idle socket; and when a batch says ``held_full``."""
        ...

    def set_hold(self, vnis: Iterable[int]) -> None:
        """Hold records back (see ``take_held``) only for these VNIs: the sessions' that have
        their files to themselves (``writer.holdable_vnis``). Traffic for unknown VNIs (a flood of
        random ones) and for VNIs that share a file is handed out batch by batch. Call
        ``take_held`` first when the set changes."""
        ...

    def set_sources(self, sources: Mapping[int, Set[str]]) -> None:
        """Accept a VNI's datagrams only from these outer source addresses (IPv4); VNIs not in
        the map are not checked. The rest count as ``spoofed``."""
        ...
