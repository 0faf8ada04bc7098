"""pcapng and classic pcap framing (and a small reader for merging, recovery and tests).

Everything is little-endian as written by this host; the reader also accepts big-endian
sections. Timestamps are nanoseconds since the epoch throughout (if_tsresol = 9, and the
nanosecond magic for classic pcap).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

LINKTYPE_ETHERNET = 1
LINKTYPE_IPV4 = 228

BT_SHB = 0x0A0D0D0A
BT_IDB = 0x00000001
BT_ISB = 0x00000005
BT_EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D

OPT_ENDOFOPT = 0
OPT_COMMENT = 1
SHB_HARDWARE = 2
SHB_OS = 3
SHB_USERAPPL = 4
IF_NAME = 2
IF_DESCRIPTION = 3
IF_TSRESOL = 9
ISB_STARTTIME = 2
ISB_ENDTIME = 3
ISB_IFRECV = 4
ISB_IFDROP = 5
ISB_OSDROP = 7
ISB_USRDELIV = 8

PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_GLOBAL_HEADER_LEN = 24
PCAP_RECORD_HEADER_LEN = 16
EPB_OVERHEAD = 32  # block header (8) + if id, ts hi/lo, caplen, origlen (20) + trailing length (4)

_EPB_HEAD = struct.Struct("<IIIIIII")
_PCAP_REC = struct.Struct("<IIII")
_PADS = (b"", b"\0\0\0", b"\0\0", b"\0")


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (_pad4(len(value)) - len(value))


def _options(opts: list[tuple[int, bytes]]) -> bytes:
    if not opts:
        return b""
    return b"".join(_option(c, v) for c, v in opts) + struct.pack("<HH", OPT_ENDOFOPT, 0)


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def section_header(application: str, hardware: str = "", os_name: str = "") -> bytes:
    opts = [(SHB_USERAPPL, application.encode())]
    if hardware:
        opts.append((SHB_HARDWARE, hardware.encode()))
    if os_name:
        opts.append((SHB_OS, os_name.encode()))
    # Section length -1: unknown, because we stream and never seek back.
    body = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + _options(opts)
    return _block(BT_SHB, body)


def interface_description(name: str, description: str, snaplen: int = 0, linktype: int = LINKTYPE_ETHERNET) -> bytes:
    opts = [(IF_NAME, name.encode()), (IF_DESCRIPTION, description.encode()), (IF_TSRESOL, bytes((9,)))]
    body = struct.pack("<HHI", linktype, 0, snaplen) + _options(opts)
    return _block(BT_IDB, body)


def interface_statistics(
    interface_id: int,
    ts_ns: int,
    *,
    start_ns: int,
    end_ns: int,
    received: int,
    if_dropped: int,
    os_dropped: int,
    delivered: int | None = None,
    comment: str = "",
) -> bytes:
    def ts(v: int) -> bytes:
        return struct.pack("<II", v >> 32, v & 0xFFFFFFFF)

    opts = [
        (ISB_STARTTIME, ts(start_ns)),
        (ISB_ENDTIME, ts(end_ns)),
        (ISB_IFRECV, struct.pack("<Q", received)),
        (ISB_IFDROP, struct.pack("<Q", if_dropped)),
        (ISB_OSDROP, struct.pack("<Q", os_dropped)),
    ]
    if delivered is not None:
        opts.append((ISB_USRDELIV, struct.pack("<Q", delivered)))
    if comment:
        opts.append((OPT_COMMENT, comment.encode()))
    body = struct.pack("<III", interface_id, ts_ns >> 32, ts_ns & 0xFFFFFFFF) + _options(opts)
    return _block(BT_ISB, body)


def epb_length(caplen: int, options_len: int = 0) -> int:
    """The whole EPB's length for a frame of ``caplen`` bytes."""
    return EPB_OVERHEAD + _pad4(caplen) + options_len


def epb_header(ts_ns: int, caplen: int, orig_len: int, total: int, interface_id: int = 0) -> bytes:
    """The 28 bytes before an EPB's frame; the frame, ``epb_trailer`` and the total follow."""
    return _EPB_HEAD.pack(BT_EPB, total, interface_id, ts_ns >> 32, ts_ns & 0xFFFFFFFF, caplen, orig_len)


def epb_padding(caplen: int) -> bytes:
    return _PADS[caplen & 3]


def enhanced_packet(
    ts_ns: int,
    data: bytes | bytearray | memoryview,
    orig_len: int,
    interface_id: int = 0,
    comment: str = "",
) -> bytes:
    """One EPB. The receive loops frame with the same pieces (``epb_header``, ``epb_padding``),
    and the compiled loop is held byte for byte to them by a test."""
    caplen = len(data)
    opts = _options([(OPT_COMMENT, comment.encode())]) if comment else b""
    total = epb_length(caplen, len(opts))
    head = epb_header(ts_ns, caplen, orig_len, total, interface_id)
    return b"".join((head, data, _PADS[caplen & 3], opts, struct.pack("<I", total)))


def pcap_global_header(snaplen: int, linktype: int = LINKTYPE_ETHERNET) -> bytes:
    return struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, snaplen or 262144, linktype)


def pcap_record_header(ts_ns: int, caplen: int, orig_len: int) -> bytes:
    sec, nsec = divmod(ts_ns, 1_000_000_000)
    return _PCAP_REC.pack(sec, nsec, caplen, orig_len)


def pcap_record(ts_ns: int, data: bytes | bytearray | memoryview, orig_len: int) -> bytes:
    return pcap_record_header(ts_ns, len(data), orig_len) + bytes(data)


def iter_records(buf: bytes | bytearray, fmt: str) -> Iterator[tuple[int, int, int, int]]:
    """(start, end, ts_ns, orig_len) of each record of a framed batch (our own EPBs or pcap
    records, little-endian, nanosecond timestamps)."""
    pos, n = 0, len(buf)
    if fmt == "pcapng":
        while pos < n:
            _bt, total, _if, hi, lo, _cap, orig = _EPB_HEAD.unpack_from(buf, pos)
            yield pos, pos + total, (hi << 32) | lo, orig
            pos += total
    else:
        while pos < n:
            sec, nsec, incl, orig = _PCAP_REC.unpack_from(buf, pos)
            end = pos + PCAP_RECORD_HEADER_LEN + incl
            yield pos, end, sec * 1_000_000_000 + nsec, orig
            pos = end


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass
class Packet:
    ts_ns: int
    interface_id: int
    caplen: int
    orig_len: int
    data: bytes
    comment: str = ""


@dataclass
class Interface:
    linktype: int
    snaplen: int
    name: str = ""
    description: str = ""
    tsresol_ns: float = 1000.0  # nanoseconds per timestamp unit; pcapng's default is microseconds
    raw: bytes = b""  # the block, re-emittable as is


@dataclass
class Statistics:
    interface_id: int
    received: int | None = None
    if_dropped: int | None = None
    os_dropped: int | None = None
    delivered: int | None = None
    comment: str = ""


@dataclass
class Capture:
    interfaces: list[Interface] = field(default_factory=list)
    packets: list[Packet] = field(default_factory=list)
    statistics: list[Statistics] = field(default_factory=list)
    user_application: str = ""


class FormatError(ValueError):
    pass


def _parse_options(body: bytes, pos: int, endian: str) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(endian + "HH", body, pos)
        pos += 4
        if code == OPT_ENDOFOPT:
            break
        out.setdefault(code, []).append(body[pos : pos + length])
        pos += _pad4(length)
    return out


def _tsresol(value: bytes) -> float:
    v = value[0]
    return float(1e9 / (2 ** (v & 0x7F)) if v & 0x80 else 1e9 / (10 ** (v & 0x7F)))


def iter_blocks(f: BinaryIO) -> Iterator[tuple[int, int, bytes, str]]:
    """Yield (offset, block type, body, endian) for each complete block; stop at a partial tail."""
    endian = "<"
    offset = 0
    while True:
        head = f.read(8)
        if len(head) < 8:
            return
        btype = struct.unpack("<I", head[:4])[0]
        if btype == BT_SHB:
            magic_raw = f.read(4)
            if len(magic_raw) < 4:
                return
            endian = "<" if struct.unpack("<I", magic_raw)[0] == BYTE_ORDER_MAGIC else ">"
            total = struct.unpack(endian + "I", head[4:8])[0]
            if total < 28:
                raise FormatError(f"bad section header length {total} at {offset}")
            rest = f.read(total - 12)
            if len(rest) < total - 12:
                return
            yield offset, btype, magic_raw + rest[:-4], endian
        else:
            btype, total = struct.unpack(endian + "II", head)
            if total < 12 or total % 4:
                raise FormatError(f"bad block length {total} at {offset}")
            rest = f.read(total - 8)
            if len(rest) < total - 8:
                return
            if struct.unpack(endian + "I", rest[-4:])[0] != total:
                raise FormatError(f"trailing length mismatch at {offset}")
            yield offset, btype, rest[:-4], endian
        offset += total


def valid_prefix_length(path: str) -> int:
    """Bytes of a possibly cut-off pcapng file that form whole blocks (crash / disk-full recovery)."""
    end = 0
    with open(path, "rb") as f:
        try:
            for offset, _bt, body, _e in iter_blocks(f):
                end = offset + len(body) + 12
        except FormatError:
            pass
    return end


def _u64_option(opts: dict[int, list[bytes]], code: int, endian: str) -> int | None:
    return int(struct.unpack(endian + "Q", opts[code][0])[0]) if code in opts else None


def read_pcapng(f: BinaryIO) -> Capture:
    cap = Capture()
    for _off, btype, body, e in iter_blocks(f):
        if btype == BT_SHB:
            cap.interfaces = []
            opts = _parse_options(body, 16, e)
            if SHB_USERAPPL in opts:
                cap.user_application = opts[SHB_USERAPPL][0].decode(errors="replace")
        elif btype == BT_IDB:
            linktype, _r, snaplen = struct.unpack_from(e + "HHI", body, 0)
            opts = _parse_options(body, 8, e)
            iface = Interface(linktype, snaplen, raw=_block(BT_IDB, body) if e == "<" else b"")
            if IF_NAME in opts:
                iface.name = opts[IF_NAME][0].decode(errors="replace")
            if IF_DESCRIPTION in opts:
                iface.description = opts[IF_DESCRIPTION][0].decode(errors="replace")
            if IF_TSRESOL in opts:
                iface.tsresol_ns = _tsresol(opts[IF_TSRESOL][0])
            cap.interfaces.append(iface)
        elif btype == BT_EPB:
            if_id, hi, lo, caplen, origlen = struct.unpack_from(e + "IIIII", body, 0)
            data = body[20 : 20 + caplen]
            opts = _parse_options(body, 20 + _pad4(caplen), e)
            comment = opts[OPT_COMMENT][0].decode(errors="replace") if OPT_COMMENT in opts else ""
            units = (hi << 32) | lo
            res = cap.interfaces[if_id].tsresol_ns if if_id < len(cap.interfaces) else 1000.0
            ts = units if res == 1.0 else int(units * res)
            cap.packets.append(Packet(ts, if_id, caplen, origlen, data, comment))
        elif btype == BT_ISB:
            if_id = struct.unpack_from(e + "I", body, 0)[0]
            opts = _parse_options(body, 12, e)
            st = Statistics(if_id)
            st.received = _u64_option(opts, ISB_IFRECV, e)
            st.if_dropped = _u64_option(opts, ISB_IFDROP, e)
            st.os_dropped = _u64_option(opts, ISB_OSDROP, e)
            st.delivered = _u64_option(opts, ISB_USRDELIV, e)
            if OPT_COMMENT in opts:
                st.comment = opts[OPT_COMMENT][0].decode(errors="replace")
            cap.statistics.append(st)
    return cap


def read_pcap(f: BinaryIO) -> Capture:
    head = f.read(PCAP_GLOBAL_HEADER_LEN)
    if len(head) < PCAP_GLOBAL_HEADER_LEN:
        raise FormatError("short pcap header")
    magic = struct.unpack("<I", head[:4])[0]
    e = "<" if magic in (PCAP_MAGIC_NS, 0xA1B2C3D4) else ">"
    magic = struct.unpack(e + "I", head[:4])[0]
    ns = magic == PCAP_MAGIC_NS
    snaplen, linktype = struct.unpack_from(e + "II", head, 16)
    cap = Capture(interfaces=[Interface(linktype, snaplen, tsresol_ns=1.0)])
    while True:
        rec = f.read(PCAP_RECORD_HEADER_LEN)
        if len(rec) < PCAP_RECORD_HEADER_LEN:
            break
        sec, frac, incl, orig = struct.unpack(e + "IIII", rec)
        data = f.read(incl)
        if len(data) < incl:
            break
        cap.packets.append(Packet(sec * 1_000_000_000 + (frac if ns else frac * 1000), 0, incl, orig, data))
    return cap


def read_file(path: str) -> Capture:
    """Read a pcapng or classic pcap file, gzip-compressed or not."""
    import gzip

    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rb") if gz else open(path, "rb") as f:
        first = f.read(4)
        f.seek(0)
        if struct.unpack("<I", first)[0] == BT_SHB:
            return read_pcapng(f)  # type: ignore[arg-type]
        return read_pcap(f)  # type: ignore[arg-type]
