"""The UDP side: socket setup (no capabilities needed) and the Python receive-and-frame loop.

A compiled twin of ``PyReceiver`` lives in ``_fastrecv`` (built by setuptools when a compiler is
present, wrapped by ``fastrecv.FastReceiver``); both produce byte-identical output.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Iterable, Mapping, Set

from trafficmirror.capture import pcapng, vxlan
from trafficmirror.capture.batch import MAX_BATCH, Batch, Group, Kept, Receiver

log = logging.getLogger(__name__)

# Linux socket options the stdlib does not name.
SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27
SO_TIMESTAMPNS = 35  # SO_TIMESTAMPNS_OLD: a 64-bit timespec on 64-bit hosts
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
SO_RXQ_OVFL = 40
SO_ATTACH_REUSEPORT_CBPF = 51
SO_MEMINFO = 55
SK_MEMINFO_DROPS = 8

RECV_BUFSIZE = 65536  # larger than any UDP payload, so MSG_TRUNC means a kernel/bug surprise
ANC_BUFSIZE = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(4)
_TIMESPEC = struct.Struct("@qq")
_U32 = struct.Struct("@I")


class PortInUseError(RuntimeError):
    pass


def vxlan_devices() -> list[str]:
    """Names of VXLAN netdevs in this network namespace (the usual owners of port 4789)."""
    out = []
    try:
        for dev in sorted(os.listdir("/sys/class/net")):
            try:
                with open(f"/sys/class/net/{dev}/uevent") as f:
                    if "DEVTYPE=vxlan" in f.read():
                        out.append(dev)
            except OSError:
                continue
    except OSError:
        pass
    return out


def rmem_max() -> int | None:
    try:
        with open("/proc/sys/net/core/rmem_max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def open_socket(
    address: str = "0.0.0.0", port: int = vxlan.VXLAN_PORT, rcvbuf: int = 64 << 20, reuseport: bool = False
) -> tuple[socket.socket, int]:
    """Bind the receive socket; return it and the receive buffer the kernel actually granted.

    An unprivileged process cannot exceed net.core.rmem_max (SO_RCVBUFFORCE needs CAP_NET_ADMIN),
    so the granted size is reported rather than assumed.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                devs = vxlan_devices()
                hint = f" VXLAN devices in this network namespace: {', '.join(devs)}." if devs else ""
                hint += " Typically a CNI's VXLAN device (Calico vxlan.calico, Flannel flannel.1, Cilium)"
                hint += " owns it;"
                raise PortInUseError(
                    f"UDP port {port} on {address} is already in use.{hint} move the CNI's VXLAN port or "
                    f"give the capture agent another --port (and the mirror target a matching listener)."
                ) from exc
            raise
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    except BaseException:
        sock.close()
        raise
    return sock, granted


def _bpf_prog(insns: list[tuple[int, int, int, int]]) -> tuple[bytes, ctypes.Array[ctypes.c_char]]:
    raw = b"".join(struct.pack("HBBI", *i) for i in insns)
    buf = ctypes.create_string_buffer(raw, len(raw))
    return struct.pack("HxxxxxxP", len(insns), ctypes.addressof(buf)), buf


_LD_W_ABS, _LD_B_ABS, _RSH_K, _MOD_K, _JEQ_K, _RET_K, _RET_A = 0x20, 0x30, 0x74, 0x94, 0x15, 0x06, 0x16


_SKF_NET_OFF = -0x100000  # classic BPF: offsets from the network (IP) header
_ACCEPT = 0x40000  # more than any datagram: keep it whole
# A forged datagram is cut to the UDP and VXLAN headers (16 bytes from the UDP header): the agent
# still sees it and counts it as spoofed, but it costs the receive buffer next to nothing.
_TRIM_TO_HEADER = 8 + vxlan.HEADER_LEN


def vni_filter_program(
    vnis: list[int], sources: Mapping[int, Set[str]] | None = None
) -> list[tuple[int, int, int, int]]:
    """Classic BPF socket filter accepting only the given VNIs; a VNI in ``sources`` is accepted
    whole only from those IPv4 outer sources, and cut to its headers from anywhere else.

    A UDP socket filter sees the packet from the UDP header on, so the VNI is bytes 12..14; the
    outer source is at the IP header's byte 12. Each VNI gets its own block right after its jeq,
    keeping every jump short however long the list.
    """
    sources = sources or {}
    prog = [(_LD_W_ABS, 0, 0, 8 + 4), (_RSH_K, 0, 0, 8)]
    for v in sorted(set(vnis)):
        keys = sorted({k for k in map(_ipv4_key, sources.get(v, ())) if k is not None})
        if v not in sources:
            prog += [(_JEQ_K, 0, 1, v), (_RET_K, 0, 0, _ACCEPT)]
            continue
        if len(keys) > 250:
            raise ValueError(f"VNI {v}: too many source addresses for the kernel filter (max 250)")
        block = [(_LD_W_ABS, 0, 0, (_SKF_NET_OFF + 12) & 0xFFFFFFFF)]
        for i, k in enumerate(keys):
            block.append((_JEQ_K, len(keys) - i, 0, int.from_bytes(k, "big")))  # to the accepting ret
        block += [(_RET_K, 0, 0, _TRIM_TO_HEADER), (_RET_K, 0, 0, _ACCEPT)]
        prog += [(_JEQ_K, 0, len(block), v), *block]
    prog.append((_RET_K, 0, 0, 0))
    if len(prog) > 4096:
        raise ValueError("too many VNIs for one classic BPF program")
    return prog


def steering_program(workers: int) -> list[tuple[int, int, int, int]]:
    """SO_REUSEPORT steering: socket index = VNI mod workers, so a session has one writer.

    The reuseport program sees the UDP payload (the kernel pulls the UDP header first), so the
    VNI is bytes 4..6. A datagram too short to load aborts the program, which returns 0: worker 0
    gets it and counts it as malformed.
    """
    return [(_LD_W_ABS, 0, 0, 4), (_RSH_K, 0, 0, 8), (_MOD_K, 0, 0, workers), (_RET_A, 0, 0, 0)]


def attach_vni_filter(sock: socket.socket, vnis: list[int], sources: Mapping[int, Set[str]] | None = None) -> str:
    """Attach the kernel filter; returns what it checks. A classic BPF program holds 4,096
    instructions: when the sessions' source addresses do not fit, the VNIs alone are filtered
    ("vni"; the sources are still checked in user space); when the VNIs do not fit either, no
    filter is left on the socket ("none"; a stale one would drop the new sessions' packets)."""
    for checks, what in ((sources, "vni+source"), (None, "vni")):
        try:
            prog = vni_filter_program(vnis, checks)
        except ValueError:
            continue
        fprog, keep = _bpf_prog(prog)
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        del keep
        return what
    with contextlib.suppress(OSError):  # ENOENT: nothing was attached
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
    return "none"


def attach_steering(sock: socket.socket, workers: int) -> None:
    fprog, keep = _bpf_prog(steering_program(workers))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    del keep


def kernel_drops(sock: socket.socket) -> int:
    """sk_drops without waiting for the next datagram's SO_RXQ_OVFL (which only rides on data)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * 9)
    return int(struct.unpack_from("@9I", raw)[SK_MEMINFO_DROPS])


def _ipv4_key(host: str) -> bytes | None:
    """The outer source as 4 bytes (an IPv4-mapped IPv6 address too), None when not IPv4."""
    try:
        return socket.inet_aton(host.removeprefix("::ffff:")) if "." in host else None
    except OSError:
        return None


class PyReceiver:
    """Batch receive + check + decapsulate + frame, in Python (``batch.Receiver``). ``fmt`` is
    "pcapng" or "pcap". Framing is pcapng.epb_header / pcap_record_header, the one framing the
    compiled loop is held to."""

    def __init__(self, sock: socket.socket, *, fmt: str = "pcapng", snaplen: int = 0, keep_malformed: bool = False):
        self.sock = sock
        self.fmt = fmt
        self.snaplen = snaplen or RECV_BUFSIZE
        self.keep_malformed = keep_malformed
        self.buf = bytearray(RECV_BUFSIZE)
        self.mv = memoryview(self.buf)
        self.sources: dict[int, frozenset[bytes]] = {}
        sock.setblocking(False)

    def set_sources(self, sources: Mapping[int, Set[str]]) -> None:
        self.sources = {
            vni: frozenset(k for k in map(_ipv4_key, addrs) if k is not None) for vni, addrs in sources.items()
        }

    def recv_batch(self, max_datagrams: int = MAX_BATCH) -> Batch:
        batch = Batch()
        groups = batch.groups
        sock, buf, mv, snap = self.sock, self.buf, self.mv, self.snaplen
        bufs = [self.buf]
        pcapng_fmt = self.fmt == "pcapng"
        epb_header, rec_header, padding = pcapng.epb_header, pcapng.pcap_record_header, pcapng.epb_padding
        parse = vxlan.parse
        sources = self.sources
        drops = 0  # the kernel attaches SO_RXQ_OVFL only once the counter is non-zero
        n_dgrams = 0
        bufs_by_vni: dict[int, bytearray] = {}
        for _ in range(max_datagrams):
            try:
                n, anc, flags, addr = sock.recvmsg_into(bufs, ANC_BUFSIZE)
            except BlockingIOError:
                break
            n_dgrams += 1
            ts = 0
            for _lvl, typ, data in anc:
                if typ == SCM_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack(data)
                    ts = sec * 1_000_000_000 + nsec
                elif typ == SO_RXQ_OVFL:
                    drops = _U32.unpack(data)[0]
            if not ts:
                ts = time.time_ns()
            res: vxlan.Decapsulated | vxlan.Reason
            if flags & socket.MSG_TRUNC:
                res = vxlan.Reason.RECEIVE_TRUNCATED
            else:
                res = parse(buf, n)
                # The source is checked before the frame's length: the kernel filter cuts a
                # forged datagram to its headers, and it must still count as spoofed.
                if sources and (not isinstance(res, vxlan.Reason) or res is vxlan.Reason.SHORT_FRAME):
                    allowed = sources.get((buf[4] << 16) | (buf[5] << 8) | buf[6])
                    if allowed is not None and _ipv4_key(addr[0]) not in allowed:
                        res = vxlan.Reason.SPOOFED
            if isinstance(res, vxlan.Reason):
                batch.malformed[res] += 1
                if self.keep_malformed:
                    batch.kept.append(Kept(ts, bytes(mv[: min(n, RECV_BUFSIZE)]), addr[:2], str(res)))
                continue
            vni, off, caplen, orig = res
            g = groups.get(vni)
            if g is None:
                g = groups[vni] = Group(first_ts=ts)
                out = bufs_by_vni[vni] = bytearray()
            else:
                out = bufs_by_vni[vni]
            if caplen > snap:
                caplen = snap
            if pcapng_fmt:
                total = pcapng.epb_length(caplen)
                out += epb_header(ts, caplen, orig, total)
                out += mv[off : off + caplen]
                out += padding(caplen)
                out += total.to_bytes(4, "little")
            else:
                out += rec_header(ts, caplen, orig)
                out += mv[off : off + caplen]
            g.packets += 1
            g.wire_bytes += orig
            g.last_ts = ts
        for vni, b in bufs_by_vni.items():
            groups[vni].buf = b
        batch.datagrams = n_dgrams
        batch.kernel_drops = drops
        return batch

    def take_held(self) -> Batch:
        return Batch()  # holds nothing: every batch hands out all it framed

    def set_hold(self, vnis: Iterable[int]) -> None:
        pass


def make_receiver(
    sock: socket.socket, *, fmt: str, snaplen: int, keep_malformed: bool, accelerate: bool = True, hold: bool = False
) -> Receiver:
    """The compiled receiver when available (and not disabled), else the Python one. ``hold``:
    the compiled one holds records back to hand them out in larger groups (``take_held``)."""
    if accelerate:
        try:
            from trafficmirror.capture.fastrecv import FastReceiver

            return FastReceiver(sock, fmt=fmt, snaplen=snaplen, keep_malformed=keep_malformed, hold=hold)
        except ImportError:
            log.info("compiled receive loop not available; using the Python one")
    return PyReceiver(sock, fmt=fmt, snaplen=snaplen, keep_malformed=keep_malformed)
