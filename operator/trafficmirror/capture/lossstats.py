"""Drops at every layer a mirrored datagram crosses, read without privileges.

A datagram reaches a capture file through: the NIC (``/sys/class/net/<if>/statistics``), the
per-CPU softnet backlog (``/proc/net/softnet_stat``), UDP (``/proc/net/snmp``: RcvbufErrors,
InErrors), the capture socket (SO_RXQ_OVFL / SK_MEMINFO_DROPS) and the disk (write errors).

Scope, honestly: the NIC, softnet and UDP counters are **node-wide** (every datagram of every
process on the node), so a rise there may or may not have hit a mirrored packet; the socket
counter belongs to one worker's socket, shared by the sessions steered to it; only the disk
counter is per session. The layers also overlap, by the kernel's design: a socket drop is also a
UDP RcvbufErrors/InErrors, and on Linux 5.19+ a backlog drop is also the device's rx_dropped. So
they are reported side by side, never added up.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, fields

NODE_LAYERS = ("nic", "softnet", "udp_rcvbuf", "udp_inerrors")
LAYERS = ("disk", "socket", *NODE_LAYERS)
LAYER_HELP = {
    "disk": "packets lost to write errors (disk full), per session",
    "socket": "datagrams the capture socket's receive queue dropped (SO_RXQ_OVFL), shared by a worker's sessions",
    "nic": "rx_dropped + rx_missed_errors of the node's interfaces (node-wide; includes backlog drops on Linux 5.19+)",
    "softnet": "drops at the per-CPU input backlog, /proc/net/softnet_stat (node-wide)",
    "udp_rcvbuf": "UDP RcvbufErrors, IPv4 + IPv6 (node-wide; includes the capture socket's drops)",
    "udp_inerrors": "UDP InErrors, IPv4 + IPv6 (node-wide; includes RcvbufErrors and checksum errors)",
}


@dataclass(frozen=True)
class NodeDrops:
    """Cumulative node-wide drop counters (since boot, or since a baseline after ``minus``)."""

    nic: int = 0
    softnet: int = 0
    udp_rcvbuf: int = 0
    udp_inerrors: int = 0

    def minus(self, base: NodeDrops) -> NodeDrops:
        """The rise since ``base``; a counter that went backwards (an interface removed) counts 0."""
        return NodeDrops(*(max(getattr(self, f.name) - getattr(base, f.name), 0) for f in fields(self)))

    def as_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}

    @staticmethod
    def from_dict(d: dict[str, int]) -> NodeDrops:
        return NodeDrops(**{f.name: int(d.get(f.name, 0)) for f in fields(NodeDrops)})


# --- pure parsers -----------------------------------------------------------------------------


def parse_softnet_dropped(text: str) -> int:
    """Sum of the second column (``dropped``: backlog full) over every CPU's line."""
    total = 0
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 2:
            total += int(cols[1], 16)
    return total


def parse_snmp(text: str, protocol: str = "Udp") -> dict[str, int]:
    """``/proc/net/snmp``: a header line and a value line per protocol."""
    lines = [line.split() for line in text.splitlines() if line.startswith(protocol + ":")]
    if len(lines) < 2:
        return {}
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=False)}


def parse_snmp6(text: str) -> dict[str, int]:
    """``/proc/net/snmp6``: one ``Name value`` per line."""
    out = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) == 2 and cols[1].lstrip("-").isdigit():
            out[cols[0]] = int(cols[1])
    return out


# --- readers ----------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _int(path: str) -> int:
    text = _read(path).strip()
    return int(text) if text.lstrip("-").isdigit() else 0


def interfaces(root: str = "/sys/class/net") -> list[str]:
    """Every interface of this network namespace but loopback (the capture agent runs with
    hostNetwork, so these are the node's)."""
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    return [n for n in names if n != "lo" and os.path.isdir(os.path.join(root, n, "statistics"))]


def nic_drops(names: list[str] | None = None, root: str = "/sys/class/net") -> dict[str, int]:
    """Per interface: rx_dropped + rx_missed_errors."""
    out = {}
    for name in interfaces(root) if names is None else names:
        stats = os.path.join(root, name, "statistics")
        out[name] = _int(os.path.join(stats, "rx_dropped")) + _int(os.path.join(stats, "rx_missed_errors"))
    return out


def read_node_drops(names: list[str] | None = None, proc: str = "/proc", sys_net: str = "/sys/class/net") -> NodeDrops:
    udp = parse_snmp(_read(os.path.join(proc, "net/snmp")))
    udp6 = parse_snmp6(_read(os.path.join(proc, "net/snmp6")))
    return NodeDrops(
        nic=sum(nic_drops(names, sys_net).values()),
        softnet=parse_softnet_dropped(_read(os.path.join(proc, "net/softnet_stat"))),
        udp_rcvbuf=udp.get("RcvbufErrors", 0) + udp6.get("Udp6RcvbufErrors", 0),
        udp_inerrors=udp.get("InErrors", 0) + udp6.get("Udp6InErrors", 0),
    )


class NodeDropsSampler:
    """The node-wide counters, re-read at most every ``max_age_s``: a thousand sessions rotating
    at one boundary must not read sysfs a thousand times."""

    def __init__(self, names: list[str] | None = None, max_age_s: float = 0.2) -> None:
        import time

        self._clock = time.monotonic
        self.names = names
        self.max_age_s = max_age_s
        self._at = -1e18
        self._value = NodeDrops()
        self.baseline = self.sample(force=True)

    def sample(self, force: bool = False) -> NodeDrops:
        now = self._clock()
        if force or now - self._at >= self.max_age_s:
            with contextlib.suppress(OSError, ValueError):
                self._value = read_node_drops(self.names)
            self._at = now
        return self._value

    def since_start(self) -> NodeDrops:
        return self.sample().minus(self.baseline)


# --- what a file says -------------------------------------------------------------------------


@dataclass(frozen=True)
class FileDrops:
    """Drops reported by one capture file, by layer: since the previous file of its session
    said its own (or since the agent started), up to this file's close."""

    disk: int = 0
    socket: int = 0
    node: NodeDrops = NodeDrops()

    @property
    def os_dropped(self) -> int:
        """isb_osdrop: the kernel layers a mirrored datagram crosses one after the other without
        double counting (backlog, then socket). The NIC and UDP figures overlap these and stay in
        the comment."""
        return self.socket + self.node.softnet

    def comment(self) -> str:
        n = self.node
        return (
            "drops since the previous file of this session (or the agent's start), by layer: "
            f"disk={self.disk} (this session's packets; = isb_ifdrop); "
            f"socket={self.socket} (the capture socket, shared by the sessions of one worker); "
            f"softnet={n.softnet} nic={n.nic} udp_rcvbuf={n.udp_rcvbuf} udp_inerrors={n.udp_inerrors} "
            "(node-wide: every datagram on the node, not only this session's). "
            "isb_osdrop = socket + softnet. Layers overlap (a socket drop is also a UDP error; "
            "a backlog drop is also the device's rx_dropped), so do not add them up."
        )
