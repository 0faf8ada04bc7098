"""``trafficmirror pcap ls|get``: find a session's files in the directory or S3 and merge them,
in time order, into one pcapng ready for Wireshark (no mergecap needed on the user's machine).

The merge streams: each input is read block by block (S3 objects by ranged GETs, nothing
downloaded to disk), a heap holds one pending block per open input, and an input is opened only
once the merge reaches the start time in its name. Memory stays constant whatever the size;
interface description and statistics blocks of every input are kept, renumbered.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import heapq
import io
import logging
import os
import re
import struct
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from trafficmirror.capture import pcapng
from trafficmirror.capture.sessions import pod_of_dir_name, safe_component

log = logging.getLogger(__name__)

NAME_RESOLUTION_NS = 1_000_000
READ_CHUNK = 512 << 10  # per open input: S3 range size and file buffer
OUT_BUFFER = 256 << 10
_NAME = re.compile(r"^(?P<node>.+)-(?P<start>\d{8}T\d{6}(?:\.\d{3})?Z)-(?P<seq>\d+)\.(?:pcapng|pcap)(?:\.gz)?$")


@dataclass(frozen=True)
class FileRef:
    namespace: str
    session: str
    name: str
    size: int
    start_ns: int  # from the name; 0 when the name is not ours
    location: str  # a path, or an S3 key
    pod: str = ""  # a perPod session's file: the pod's "<namespace>/<name>"


def start_of(name: str) -> int:
    m = _NAME.match(name)
    if not m:
        return 0
    s = m.group("start")
    fmt = "%Y%m%dT%H%M%S.%fZ" if "." in s else "%Y%m%dT%H%M%SZ"
    t = dt.datetime.strptime(s, fmt).replace(tzinfo=dt.UTC)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def parse_time(text: str | None) -> int | None:
    """ISO 8601 (naive means UTC) or epoch seconds -> ns."""
    if not text:
        return None
    try:
        return int(float(text) * 1e9)
    except ValueError:
        pass
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1e9)


def select(files: list[FileRef], since: int | None, until: int | None) -> list[FileRef]:
    """Files that may hold packets in [since, until]: a file covers its start up to the next
    file's start (per node), so the last file starting before ``since`` is kept too."""
    out = []
    by_node: dict[tuple[str, str], list[FileRef]] = {}  # one stream of files per pod and node
    for f in files:
        m = _NAME.match(f.name)
        by_node.setdefault((f.pod, m.group("node") if m else ""), []).append(f)
    for group in by_node.values():
        group.sort(key=lambda f: (f.start_ns, f.name))
        for i, f in enumerate(group):
            nxt = group[i + 1].start_ns if i + 1 < len(group) else None
            if until is not None and f.start_ns > until:
                continue
            # Names carry milliseconds: the next file may start up to 1 ms after its name says.
            if since is not None and nxt is not None and nxt + NAME_RESOLUTION_NS <= since:
                continue
            out.append(f)
    return sorted(out, key=lambda f: (f.start_ns, f.name))


def of_pod(files: list[FileRef], pod: str | None) -> list[FileRef]:
    """One pod's files (``<namespace>/<name>``), or all when ``pod`` is None."""
    return files if pod is None else [f for f in files if f.pod == pod]


class Source(Protocol):
    def list(self, namespace: str | None = None, session: str | None = None) -> list[FileRef]: ...

    def open(self, ref: FileRef) -> BinaryIO: ...


class DirSource:
    def __init__(self, root: str) -> None:
        self.root = root

    def list(self, namespace: str | None = None, session: str | None = None) -> list[FileRef]:
        out = []
        for ns in sorted(os.listdir(self.root)) if os.path.isdir(self.root) else []:
            if namespace is not None and ns != safe_component(namespace):
                continue
            nsdir = os.path.join(self.root, ns)
            if not os.path.isdir(nsdir):
                continue
            for sess in sorted(os.listdir(nsdir)):
                if session is not None and sess != safe_component(session):
                    continue
                sdir = os.path.join(nsdir, sess)
                for name in sorted(os.listdir(sdir)) if os.path.isdir(sdir) else []:
                    if name.startswith("."):
                        continue
                    p = os.path.join(sdir, name)
                    if os.path.isdir(p):  # a pod's files (perPod)
                        pod = pod_of_dir_name(name)
                        for f in sorted(os.listdir(p)):
                            if not f.startswith("."):
                                q = os.path.join(p, f)
                                out.append(FileRef(ns, sess, f, os.stat(q).st_size, start_of(f), q, pod))
                        continue
                    out.append(FileRef(ns, sess, name, os.stat(p).st_size, start_of(name), p))
        return out

    def open(self, ref: FileRef) -> BinaryIO:
        return open(ref.location, "rb", buffering=READ_CHUNK)


class S3Object(io.RawIOBase):
    """An S3 object read by ranged GETs: no temporary file, no whole object in memory, and no
    long-lived connection left idle while other inputs are being merged."""

    def __init__(self, client: Any, bucket: str, key: str, size: int) -> None:
        self.client, self.bucket, self.key, self.size = client, bucket, key, size
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), self.size - self.pos)
        if n <= 0:
            return 0
        resp = self.client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={self.pos}-{self.pos + n - 1}")
        data = resp["Body"].read()
        if not data:
            return 0
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)


class S3Source:
    def __init__(self, bucket: str, prefix: str, cluster: str, endpoint_url: str | None, region: str | None) -> None:
        import boto3

        self.bucket = bucket
        self.base = "/".join(p for p in (prefix.strip("/"), safe_component(cluster)) if p) + "/"
        self.client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)

    def list(self, namespace: str | None = None, session: str | None = None) -> list[FileRef]:
        prefix = self.base
        if namespace is not None:
            prefix += safe_component(namespace) + "/"
            if session is not None:
                prefix += safe_component(session) + "/"
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                rel = o["Key"][len(self.base) :].split("/")
                if len(rel) < 3:
                    continue
                name = rel[-1]
                # <ns>/<session>/[<pod ns>_<pod>/]<YYYY>/<MM>/<DD>/<HH>/<file>
                pod = pod_of_dir_name(rel[2]) if len(rel) == 8 else ""
                out.append(FileRef(rel[0], rel[1], name, int(o["Size"]), start_of(name), o["Key"], pod))
        return out

    def open(self, ref: FileRef) -> BinaryIO:
        raw = S3Object(self.client, self.bucket, ref.location, ref.size)
        return io.BufferedReader(raw, buffer_size=READ_CHUNK)  # type: ignore[return-value]


# --- reading one input as a stream of blocks ----------------------------------------------------

IDB, EPB, ISB = 0, 1, 2
_U64_OPTIONS = (pcapng.ISB_IFRECV, pcapng.ISB_IFDROP, 6, pcapng.ISB_OSDROP, pcapng.ISB_USRDELIV)


@dataclass
class _Iface:
    linktype: int
    snaplen: int
    name: str
    description: str
    tsresol_ns: float


def _ts(units: int, res: float) -> int:
    return units if res == 1.0 else int(units * res)


def _decompressed(f: BinaryIO) -> BinaryIO:
    head = f.peek(2)[:2] if isinstance(f, io.BufferedReader) else b""
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    return f


def _pcapng_items(f: BinaryIO, label: str, since: int | None, until: int | None) -> Iterator[tuple[Any, ...]]:
    """(key ns, kind, ...) in file order. Interface ids are made unique across sections."""
    ifaces: list[int] = []  # section-local id -> input-local id
    known: list[_Iface] = []
    last = 0
    for _off, btype, body, e in pcapng.iter_blocks(f):
        if btype == pcapng.BT_SHB:
            ifaces = []
        elif btype == pcapng.BT_IDB:
            linktype, _r, snaplen = struct.unpack_from(e + "HHI", body, 0)
            opts = pcapng._parse_options(body, 8, e)
            iface = _Iface(
                linktype,
                snaplen,
                opts[pcapng.IF_NAME][0].decode(errors="replace") if pcapng.IF_NAME in opts else label,
                opts[pcapng.IF_DESCRIPTION][0].decode(errors="replace") if pcapng.IF_DESCRIPTION in opts else "",
                pcapng._tsresol(opts[pcapng.IF_TSRESOL][0]) if pcapng.IF_TSRESOL in opts else 1000.0,
            )
            ifaces.append(len(known))
            known.append(iface)
            yield (last, IDB, ifaces[-1], iface)
        elif btype == pcapng.BT_EPB:
            if_id, hi, lo, caplen, origlen = struct.unpack_from(e + "IIIII", body, 0)
            if if_id >= len(ifaces):
                raise pcapng.FormatError(f"{label}: packet on undeclared interface {if_id}")
            local = ifaces[if_id]
            ts = _ts((hi << 32) | lo, known[local].tsresol_ns)
            last = max(last, ts)
            if (since is not None and ts < since) or (until is not None and ts > until):
                continue
            opts_at = 20 + ((caplen + 3) & ~3)
            options = body[opts_at:] if e == "<" else _comment_only(body, opts_at, e)
            yield (ts, EPB, local, body[20 : 20 + caplen], origlen, options)
        elif btype == pcapng.BT_ISB:
            if_id, hi, lo = struct.unpack_from(e + "III", body, 0)
            if if_id >= len(ifaces):
                continue
            local = ifaces[if_id]
            res = known[local].tsresol_ns
            ts = _ts((hi << 32) | lo, res)
            isb_opts: list[tuple[int, bytes]] = []
            pos = 12
            while pos + 4 <= len(body):
                code, length = struct.unpack_from(e + "HH", body, pos)
                pos += 4
                if code == pcapng.OPT_ENDOFOPT:
                    break
                value = body[pos : pos + length]
                pos += (length + 3) & ~3
                if code in (pcapng.ISB_STARTTIME, pcapng.ISB_ENDTIME) and length == 8:
                    h, lw = struct.unpack(e + "II", value)
                    t = _ts((h << 32) | lw, res)
                    value = struct.pack("<II", t >> 32, t & 0xFFFFFFFF)
                elif code in _U64_OPTIONS and length == 8:
                    value = struct.pack("<Q", struct.unpack(e + "Q", value)[0])
                elif code != pcapng.OPT_COMMENT and e != "<":
                    continue  # unknown binary layout in a foreign byte order: left out
                isb_opts.append((code, value))
            yield (max(last, ts), ISB, local, ts, isb_opts)


def _comment_only(body: bytes, at: int, e: str) -> bytes:
    opts = pcapng._parse_options(body, at, e)
    return pcapng._options([(pcapng.OPT_COMMENT, c) for c in opts.get(pcapng.OPT_COMMENT, [])])


def _pcap_items(f: BinaryIO, label: str, since: int | None, until: int | None) -> Iterator[tuple[Any, ...]]:
    head = f.read(pcapng.PCAP_GLOBAL_HEADER_LEN)
    if len(head) < pcapng.PCAP_GLOBAL_HEADER_LEN:
        raise pcapng.FormatError(f"{label}: short pcap header")
    magic = struct.unpack("<I", head[:4])[0]
    e = "<" if magic in (pcapng.PCAP_MAGIC_NS, 0xA1B2C3D4) else ">"
    nano = struct.unpack(e + "I", head[:4])[0] == pcapng.PCAP_MAGIC_NS
    snaplen, linktype = struct.unpack_from(e + "II", head, 16)
    yield (0, IDB, 0, _Iface(linktype, snaplen, label, "", 1.0))
    while True:
        rec = f.read(pcapng.PCAP_RECORD_HEADER_LEN)
        if len(rec) < pcapng.PCAP_RECORD_HEADER_LEN:
            return
        sec, frac, incl, orig = struct.unpack(e + "IIII", rec)
        data = f.read(incl)
        if len(data) < incl:
            return
        ts = sec * 1_000_000_000 + (frac if nano else frac * 1000)
        if (since is None or ts >= since) and (until is None or ts <= until):
            yield (ts, EPB, 0, data, orig, b"")


def read_items(
    f: BinaryIO, label: str, since: int | None = None, until: int | None = None
) -> Iterator[tuple[Any, ...]]:
    """One input (pcapng or classic pcap, gzip or not) as (key ns, kind, ...) tuples."""
    f = _decompressed(f)
    first = f.read(4)
    if len(first) < 4:
        return
    rest = io.BufferedReader(_Prepend(first, f), buffer_size=64 << 10)  # type: ignore[arg-type]
    if struct.unpack("<I", first)[0] == pcapng.BT_SHB:
        yield from _pcapng_items(rest, label, since, until)  # type: ignore[arg-type]
    else:
        yield from _pcap_items(rest, label, since, until)  # type: ignore[arg-type]


class _Prepend(io.RawIOBase):
    """Bytes already read (the format probe) put back in front of a stream that cannot seek."""

    def __init__(self, head: bytes, f: BinaryIO) -> None:
        self.head, self.f = head, f

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self.head:
            n = min(len(buf), len(self.head))
            buf[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.f.read(len(buf))
        buf[: len(data)] = data
        return len(data)


# --- the merge -----------------------------------------------------------------------------------


@dataclass
class MergeStats:
    packets: int = 0
    interfaces: int = 0
    statistics: int = 0
    inputs: int = 0
    max_open: int = 0


def _isb(interface_id: int, ts_ns: int, opts: list[tuple[int, bytes]]) -> bytes:
    body = struct.pack("<III", interface_id, ts_ns >> 32, ts_ns & 0xFFFFFFFF) + pcapng._options(opts)
    return pcapng._block(pcapng.BT_ISB, body)


def _epb(interface_id: int, ts_ns: int, data: bytes, orig_len: int, options: bytes) -> bytes:
    caplen = len(data)
    pad = (4 - caplen % 4) % 4
    total = pcapng.EPB_OVERHEAD + caplen + pad + len(options)
    head = struct.pack(
        "<IIIIIII", pcapng.BT_EPB, total, interface_id, ts_ns >> 32, ts_ns & 0xFFFFFFFF, caplen, orig_len
    )
    return b"".join((head, data, b"\0" * pad, options, struct.pack("<I", total)))


def merge_stream(
    source: Source,
    files: list[FileRef],
    out: BinaryIO,
    since: int | None = None,
    until: int | None = None,
    flush_every: int = 0,
) -> MergeStats:
    """Write one pcapng with every input's interfaces, statistics and packets in time order.

    ``files`` must be sorted by start (``select`` does that). A file is opened only when the
    merge has reached the start time in its name (packets in a file are never older than the
    start its name gives), so only overlapping files are open at once.
    """
    st = MergeStats(inputs=len(files))
    out.write(pcapng.section_header("trafficmirror pcap get"))
    pending = sorted(files, key=lambda f: (f.start_ns, f.name))
    heap: list[tuple[int, int, int, tuple[Any, ...], Iterator[tuple[Any, ...]]]] = []
    out_ids: dict[tuple[int, int], int] = {}
    handles: dict[int, BinaryIO] = {}
    seq = 0
    nxt = 0

    def push(idx: int, it: Iterator[tuple[Any, ...]]) -> None:
        nonlocal seq
        item = next(it, None)
        if item is None:
            with contextlib.suppress(OSError):
                handles.pop(idx).close()
            return
        seq += 1
        heapq.heappush(heap, (item[0], idx, seq, item, it))

    try:
        while heap or nxt < len(pending):
            while nxt < len(pending) and (not heap or pending[nxt].start_ns <= heap[0][0]):
                ref = pending[nxt]
                handles[nxt] = source.open(ref)
                push(nxt, read_items(handles[nxt], ref.name, since, until))
                nxt += 1
                st.max_open = max(st.max_open, len(handles))
            if not heap:
                continue
            _key, idx, _seq, item, it = heapq.heappop(heap)
            kind = item[1]
            if kind == IDB:
                iface: _Iface = item[3]
                out_ids[(idx, item[2])] = st.interfaces
                st.interfaces += 1
                out.write(pcapng.interface_description(iface.name, iface.description, iface.snaplen, iface.linktype))
            elif kind == EPB:
                out.write(_epb(out_ids[(idx, item[2])], item[0], item[3], item[4], item[5]))
                st.packets += 1
                if flush_every and st.packets % flush_every == 0:
                    out.flush()
            else:
                out.write(_isb(out_ids[(idx, item[2])], item[3], item[4]))
                st.statistics += 1
            push(idx, it)
    finally:
        for h in handles.values():
            with contextlib.suppress(OSError):
                h.close()
    out.flush()
    return st


class _PathSource:
    """Local paths as a source (for ``merge``)."""

    def list(self, namespace: str | None = None, session: str | None = None) -> list[FileRef]:
        return []

    def open(self, ref: FileRef) -> BinaryIO:
        return open(ref.location, "rb", buffering=READ_CHUNK)


def merge(paths: list[str], out: BinaryIO, since: int | None = None, until: int | None = None) -> int:
    """Merge local files (any names) into ``out``; returns the packets written."""
    refs = [FileRef("", "", os.path.basename(p), 0, 0, p) for p in paths]
    return merge_stream(_PathSource(), refs, out, since, until).packets


def _source(args: argparse.Namespace) -> Any:
    if bool(args.dir) == bool(args.s3_bucket):
        raise SystemExit("trafficmirror pcap: give exactly one of --dir and --s3-bucket")
    if args.dir:
        return DirSource(args.dir)
    return S3Source(args.s3_bucket, args.s3_prefix, args.cluster, args.s3_endpoint_url, args.s3_region)


def _split(target: str) -> tuple[str, str]:
    ns, sep, name = target.partition("/")
    if not sep or not ns or not name:
        raise SystemExit(f"trafficmirror pcap: expected NAMESPACE/SESSION, got {target!r}")
    return ns, name


def main(args: argparse.Namespace) -> int:
    src = _source(args)
    since, until = parse_time(args.since), parse_time(args.until)
    pod = getattr(args, "pod", None)
    if args.pcap_command == "ls":
        if args.session:
            ns, name = _split(args.session)
            files = select(of_pod(src.list(ns, name), pod), since, until)
            if any(f.pod for f in files):
                print("POD\tFILE\tBYTES\tSTART")
                for f in files:
                    print(f"{f.pod or '-'}\t{f.name}\t{f.size}\t{_iso(f.start_ns)}")
                return 0
            for f in files:
                print(f"{f.name}\t{f.size}\t{_iso(f.start_ns)}")
            return 0
        sessions: dict[tuple[str, str], list[FileRef]] = {}
        for f in src.list():
            sessions.setdefault((f.namespace, f.session), []).append(f)
        print("NAMESPACE/SESSION\tFILES\tBYTES\tFIRST\tLAST\tPODS")
        for (ns, name), fs in sorted(sessions.items()):
            starts = [f.start_ns for f in fs]
            pods = ",".join(sorted({f.pod for f in fs if f.pod})) or "-"
            print(
                f"{ns}/{name}\t{len(fs)}\t{sum(f.size for f in fs)}\t{_iso(min(starts))}\t{_iso(max(starts))}\t{pods}"
            )
        return 0
    ns, name = _split(args.session)
    files = select(of_pod(src.list(ns, name), pod), since, until)
    if not files:
        which = f" (pod {pod})" if pod else ""
        print(f"trafficmirror pcap: no files for {ns}/{name}{which}", file=sys.stderr)
        return 1
    output = args.output or f"{ns}-{name}.pcapng"
    try:
        st = _write(src, files, output, since, until)
    except KeyboardInterrupt:
        print("trafficmirror pcap: interrupted; no output left behind", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (e.g. Wireshark) went away: not an error of ours. Point stdout at /dev/null
        # so the interpreter's final flush does not complain again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, pcapng.FormatError) as exc:
        print(f"trafficmirror pcap: {exc}", file=sys.stderr)
        return 1
    where = "stdout" if output == "-" else output
    print(
        f"{where}: {st.packets} packets from {len(files)} file(s), {st.interfaces} interface(s), "
        f"{st.statistics} statistics block(s)",
        file=sys.stderr,
    )
    return 0


def _write(src: Source, files: list[FileRef], output: str, since: int | None, until: int | None) -> MergeStats:
    """To stdout (flushed as it goes, for a live reader), or to a temporary file in the target
    directory renamed into place only when complete: a failure or Ctrl-C leaves nothing."""
    if output == "-":
        return merge_stream(src, files, sys.stdout.buffer, since, until, flush_every=1000)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(output) + ".", dir=os.path.dirname(output) or ".")
    try:
        with open(fd, "wb", buffering=OUT_BUFFER) as out:
            st = merge_stream(src, files, out, since, until)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return st


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="milliseconds") if ns else "-"
