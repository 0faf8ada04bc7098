"""The compiled receive loop (``_fastrecv``) as a ``batch.Receiver``."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterable, Mapping, Set

from trafficmirror.capture import _fastrecv  # ImportError when built without a compiler
from trafficmirror.capture.batch import MAX_BATCH, Batch, Group, Kept
from trafficmirror.capture.vxlan import RECEIVE_REASONS

assert _fastrecv.MAX_BATCH == MAX_BATCH, "the compiled loop and batch.MAX_BATCH disagree"


class FastReceiver:
    def __init__(
        self,
        sock: socket.socket,
        *,
        fmt: str = "pcapng",
        snaplen: int = 0,
        keep_malformed: bool = False,
        hold: bool = False,
    ) -> None:
        """``hold``: hand each VNI's records out in groups of up to 64 KiB across batches (see
        ``batch.Receiver.take_held``) rather than one group per VNI per batch."""
        sock.setblocking(False)
        self.sock = sock  # keeps the socket (and so the descriptor) alive as long as we are
        self._rx = _fastrecv.Receiver(sock.fileno(), fmt == "pcapng", snaplen, keep_malformed, hold)

    def set_sources(self, sources: Mapping[int, Set[str]]) -> None:
        packed: dict[int, list[bytes]] = {}
        for vni, addrs in sources.items():
            keys = packed[vni] = []
            for a in addrs:
                try:
                    keys.append(socket.inet_aton(a.removeprefix("::ffff:")))
                except OSError:
                    continue  # not IPv4: nothing from it can match
        self._rx.set_sources(packed)

    def recv_batch(self, max_datagrams: int = MAX_BATCH) -> Batch:
        groups, bad, kept, n, drops, full = self._rx.recv_batch(max_datagrams)
        malformed: Counter[str] = Counter()
        if any(bad):
            malformed.update({r: c for r, c in zip(RECEIVE_REASONS, bad, strict=True) if c})
        return Batch(
            groups={vni: Group(b, p, w, f, last) for vni, (b, p, w, f, last) in groups.items()} if groups else {},
            malformed=malformed,
            kept=[Kept(ts, d, (a[0], a[1]), RECEIVE_REASONS[r]) for ts, d, a, r in kept] if kept else [],
            datagrams=n,
            kernel_drops=drops,
            held_full=bool(full),
        )

    def set_hold(self, vnis: Iterable[int]) -> None:
        self._rx.set_hold(list(vnis))

    def take_held(self) -> Batch:
        groups = self._rx.take_held()
        return Batch(groups={vni: Group(b, p, w, f, last) for vni, (b, p, w, f, last) in groups.items()})
