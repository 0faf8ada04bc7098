"""The compiled receive loop behind the same interface as ``receiver.Receiver``."""

from __future__ import annotations

import socket
from collections import Counter

from trafficmirror.capture import _fastrecv  # ImportError when built without a compiler
from trafficmirror.capture.receiver import Batch, Group, Kept, Receiver

_REASONS = ("short_header", "bad_flags", "short_frame", "receive_truncated")


class FastReceiver(Receiver):
    def __init__(
        self, sock: socket.socket, *, fmt: str = "pcapng", snaplen: int = 0, keep_malformed: bool = False
    ) -> None:
        super().__init__(sock, fmt=fmt, snaplen=snaplen, keep_malformed=keep_malformed)
        self.fd = sock.fileno()
        self.pcapng = fmt == "pcapng"
        self.snap = snaplen

    def recv_batch(self, max_datagrams: int = 256) -> Batch:
        groups, bad, kept, n, drops = _fastrecv.recv_batch(
            self.fd, max_datagrams, self.pcapng, self.snap, self.keep_malformed
        )
        malformed: Counter[str] = Counter({r: c for r, c in zip(_REASONS, bad, strict=True) if c})
        return Batch(
            groups={vni: Group(b, p, w, f, last) for vni, (b, p, w, f, last) in groups.items()},
            malformed=malformed,
            kept=[Kept(ts, d, (a[0], a[1]), r) for ts, d, a, r in kept],
            datagrams=n,
            kernel_drops=drops,
        )
