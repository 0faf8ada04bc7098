"""Mirrored traffic for the demo: what AWS does for a source ENI, done by the kernel here.

With root, two network namespaces (a client and the "web" source) exchange real HTTP; tc mirrors
every frame of the source into a kernel vxlan device whose VNI is the session's, sent over a veth
underlay to the capture agent's address in the root namespace. Without root, a userspace sender
builds the same VXLAN datagrams (an HTTP exchange) and sends them to the agent on loopback.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass

CLIENT_IP, SOURCE_IP = "172.31.250.1", "172.31.250.2"
UNDERLAY_SOURCE, UNDERLAY_AGENT = "10.250.0.1", "10.250.0.2"
VXLAN_PORT = 4789
HTTP_PORT = 8080


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


@dataclass
class KernelMirror:
    """client ns ──veth── source ns ─(tc mirred → vxlan VNI)─ underlay veth ── root ns (the agent)."""

    vni: int
    prefix: str = "tmdemo"
    # Where the VXLAN stream goes: the underlay's root-namespace end unless another local address
    # (a node's, reached through it) is named; and its UDP port.
    remote: str | None = None
    port: int = VXLAN_PORT
    underlay: tuple[str, str] = (UNDERLAY_SOURCE, UNDERLAY_AGENT)

    @property
    def client_ns(self) -> str:
        return f"{self.prefix}-client"

    @property
    def source_ns(self) -> str:
        return f"{self.prefix}-web"

    @property
    def agent_address(self) -> str:
        return self.remote or self.underlay[1]

    def _in(self, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
        return _sh("ip", "netns", "exec", ns, *args)

    def up(self) -> KernelMirror:
        self.down()
        for ns in (self.client_ns, self.source_ns):
            _sh("ip", "netns", "add", ns)
            self._in(ns, "ip", "link", "set", "lo", "up")
            # No IPv6 chatter in the capture: only the HTTP exchange.
            self._in(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        self._in(
            self.client_ns,
            "ip",
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0w",
            "netns",
            self.source_ns,
        )
        self._in(self.source_ns, "ip", "link", "set", "eth0w", "name", "eth0")
        self._in(self.client_ns, "ip", "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0")
        self._in(self.source_ns, "ip", "addr", "add", f"{SOURCE_IP}/24", "dev", "eth0")
        for ns in (self.client_ns, self.source_ns):
            self._in(ns, "ip", "link", "set", "eth0", "up")
        _sh("ip", "link", "add", f"{self.prefix}-und", "type", "veth", "peer", "name", "und0", "netns", self.source_ns)
        source, agent = self.underlay
        _sh("ip", "addr", "add", f"{agent}/24", "dev", f"{self.prefix}-und")
        _sh("ip", "link", "set", f"{self.prefix}-und", "mtu", "9000", "up")
        self._in(self.source_ns, "ip", "addr", "add", f"{source}/24", "dev", "und0")
        self._in(self.source_ns, "ip", "link", "set", "und0", "mtu", "9000", "up")
        if self.agent_address != agent:
            self._in(self.source_ns, "ip", "route", "add", f"{self.agent_address}/32", "via", agent, "dev", "und0")
        self._in(
            self.source_ns, "ip", "link", "add", "vxmirror", "type", "vxlan", "id", str(self.vni),
            "remote", self.agent_address, "local", source, "dstport", str(self.port), "dev", "und0",
        )  # fmt: skip
        self._in(self.source_ns, "ip", "link", "set", "vxmirror", "mtu", "8950", "up")
        self._in(self.source_ns, "tc", "qdisc", "add", "dev", "eth0", "clsact")
        for direction in ("ingress", "egress"):
            self._in(
                self.source_ns, "tc", "filter", "add", "dev", "eth0", direction, "protocol", "all",
                "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "mirror", "dev", "vxmirror",
            )  # fmt: skip
        return self

    def http_exchange(self, requests: int = 3) -> None:
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.source_ns,
                sys.executable,
                "-m",
                "http.server",
                str(HTTP_PORT),
                "-b",
                SOURCE_IP,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            fetch = (
                f"import urllib.request; urllib.request.urlopen('http://{SOURCE_IP}:{HTTP_PORT}/', timeout=5).read()"
            )
            for attempt in range(50):
                if self._try(fetch):
                    break
                time.sleep(0.1 + attempt * 0.01)
            for _ in range(requests - 1):
                self._in(self.client_ns, sys.executable, "-c", fetch)
        finally:
            server.terminate()
            server.wait()

    def _try(self, code: str) -> bool:
        return _sh("ip", "netns", "exec", self.client_ns, sys.executable, "-c", code, check=False).returncode == 0

    def down(self) -> None:
        for ns in (self.client_ns, self.source_ns):
            _sh("ip", "netns", "del", ns, check=False)
        _sh("ip", "link", "del", f"{self.prefix}-und", check=False)


def can_use_kernel() -> bool:
    return os.geteuid() == 0 and _sh("ip", "-V", check=False).returncode == 0


def _checksum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _tcp_frame(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes) -> bytes:
    """An Ethernet/IPv4/TCP frame with correct checksums, as the source ENI would have sent it."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    pseudo = s + d + struct.pack("!BBH", 0, 6, len(header) + len(payload))
    tcp = header[:16] + struct.pack("!H", _checksum(pseudo + header + payload)) + header[18:] + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip + tcp


def userspace_http_exchange(vni: int, agent: tuple[str, int]) -> int:
    """The VXLAN datagrams AWS would send for one HTTP exchange; returns how many were sent."""
    request = f"GET / HTTP/1.1\r\nHost: {SOURCE_IP}:{HTTP_PORT}\r\n\r\n".encode()
    response = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
    c, s, cp, sp = CLIENT_IP, SOURCE_IP, 40000, HTTP_PORT
    syn, ack, psh, fin = 0x02, 0x10, 0x08, 0x01
    frames = [
        _tcp_frame(c, s, cp, sp, 1000, 0, syn, b""),
        _tcp_frame(s, c, sp, cp, 5000, 1001, syn | ack, b""),
        _tcp_frame(c, s, cp, sp, 1001, 5001, ack, b""),
        _tcp_frame(c, s, cp, sp, 1001, 5001, psh | ack, request),
        _tcp_frame(s, c, sp, cp, 5001, 1001 + len(request), psh | ack, response),
        _tcp_frame(s, c, sp, cp, 5001 + len(response), 1001 + len(request), fin | ack, b""),
    ]
    vxlan_header = struct.pack("!BxxxI", 0x08, vni << 8)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for frame in frames:
            sender.sendto(vxlan_header + frame, agent)
    return len(frames)
