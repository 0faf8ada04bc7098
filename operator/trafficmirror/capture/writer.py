"""Per-session file streams: rotation by size and wall-clock time, disk-full handling, hand-off.

Open files live in ``<work>/open/<ns>/<session>/<base>.part``. A closed file is moved into
``<work>/spool/<ns>/<session>/<base>`` next to ``<base>.json`` (its metadata); the shipper takes
it from there. Using the filesystem as the queue means a restart finds every closed file again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from trafficmirror.capture import demux, pcapng, vxlan
from trafficmirror.capture.batch import Batch, Group, Kept
from trafficmirror.capture.lossstats import FileDrops, NodeDrops, NodeDropsSampler
from trafficmirror.capture.sessions import (
    ALL,
    PER_POD,
    UNKNOWN_NAMESPACE,
    Pod,
    Session,
    safe_component,
    unknown_session,
)

log = logging.getLogger(__name__)

NS = 1_000_000_000
RETRY_AFTER_ERROR_S = 1.0
ISB_RESERVE = 1024  # room kept for the statistics block written at close, so files honour the size limit


# --- pure decisions -------------------------------------------------------------------------


def next_boundary(t_ns: int, interval_s: int) -> int:
    """The next multiple of ``interval_s`` since the epoch after ``t_ns``: files from every node
    rotate at the same wall-clock instants (12:00, 12:05, ...)."""
    step = interval_s * NS
    return (t_ns // step + 1) * step


def format_start(ts_ns: int) -> str:
    """UTC, sortable, millisecond resolution: a restart within the same second cannot collide."""
    sec, rem = divmod(ts_ns, NS)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(sec)) + f".{rem // 1_000_000:03d}Z"


def file_basename(node: str, start_ns: int, seq: int, fmt: str) -> str:
    return f"{safe_component(node)}-{format_start(start_ns)}-{seq:06d}.{fmt}"


def stream_keys(s: Session) -> list[tuple[str, str]]:
    """The streams a session VNI's packets may go to: its own (a plain session's, keyed by the
    VNI), or its selector session's, one per pod (perPod) or one per session (none for a
    podSelector source without pods: its packets are all filtered out)."""
    if not s.files:
        return [("", str(s.vni))]
    if s.files == PER_POD:
        return [(s.key, p.key) for p in s.pods]
    return [(s.key, "")] if s.files == ALL or s.pods else []


def holdable_vnis(sessions: Iterable[Session]) -> set[int]:
    """The session VNIs whose streams no other VNI writes to: the receive loop may hold their
    records back across batches (``batch.Receiver.set_hold``). Records reach a stream one
    receive batch at a time, grouped by VNI, so in a stream that several VNIs feed (a perSession
    or nodeSelector session's sources, a pod seen on two ENIs) a record can follow records of
    other VNIs that arrived after it, by less than one batch (``MAX_BATCH`` datagrams); holding
    one VNI's records until its buffer fills or the next tick would stretch that to the tick."""
    sessions = list(sessions)
    feeders: dict[tuple[str, str], set[int]] = {}
    for s in sessions:
        for key in stream_keys(s):
            feeders.setdefault(key, set()).add(s.vni)
    return {s.vni for s in sessions if all(feeders[k] == {s.vni} for k in stream_keys(s))}


# --- the streams ----------------------------------------------------------------------------


@dataclass
class WriterConfig:
    work_dir: str
    node: str = ""
    cluster: str = ""
    fmt: str = "pcapng"  # or "pcap"
    snaplen: int = 0
    rotate_bytes: int | None = 64 << 20
    rotate_seconds: int | None = 300
    flush_bytes: int = 1 << 20
    flush_interval_s: float = 1.0
    worker: int = 0
    workers: int = 1
    fsync: bool = True


@dataclass
class StreamStats:
    packets: int = 0
    bytes: int = 0
    files: int = 0
    dropped: int = 0  # packets lost to write errors
    filtered: int = 0  # a podSelector session's packets that matched none of its pods


class Stream:
    """One session's current file. Buffering is ours (not stdio's) so we always know the offset
    of the last whole block on disk and can cut a failed write back to it."""

    def __init__(
        self,
        session: Session,
        cfg: WriterConfig,
        stats: StreamStats,
        on_error: Callable[[str], None],
        linktype: int = pcapng.LINKTYPE_ETHERNET,
        node_drops: Callable[[], NodeDrops] = NodeDrops,
        node_baseline: NodeDrops | None = None,
        *,
        pod: Pod | None = None,
        sources: tuple[Session, ...] = (),
        session_stats: StreamStats | None = None,
    ):
        self.session = session
        # A selector session's stream: one pod's file (``pod``) or the session's file fed by
        # ``sources`` (its sources on this node). Then ``stats`` are the pod's own and
        # ``session_stats`` the session's, which count a packet copied into two pods' files once.
        self.pod = pod
        self.sources = sources
        self.session_stats = session_stats
        self.node_drops = node_drops
        self.linktype = linktype
        self.cfg = cfg
        self.stats = stats
        self.on_error = on_error
        self.fd = -1
        self.path = ""
        self.base = ""
        self.seq = 0
        # Several workers may write streams of one selector session into one directory: each
        # takes every workers-th sequence number, so their file names never collide.
        self.seq_step = 1
        if pod is not None or sources:
            self.seq_step = max(cfg.workers, 1)
            self.seq = cfg.worker + 1 - self.seq_step
        self.good = 0  # bytes on disk that are whole blocks
        self.chunks: list[bytes | bytearray] = []  # framed records not yet written, whole blocks each
        self.buf_len = 0
        self.buf_packets = 0
        self.buf_extra = 0  # of buf_packets: extra copies (a packet between two selected pods)
        self.file_packets = 0
        self.file_bytes = 0
        self.file_dropped = 0
        self.start_ns = 0
        self.first_ts = 0
        self.last_ts = 0
        self.boundary: int | None = None
        # Shared counters as of the last statistics block written (or the agent's start): a file
        # reports the drops since its predecessor's block, so none fall between two files.
        self.drops_at_open = 0
        self.node_at_open = node_baseline if node_baseline is not None else node_drops()
        self.disk_unreported = 0  # disk drops not yet in a file's statistics block
        self.last_flush = time.monotonic()
        self.failed_until = 0.0

    @property
    def is_open(self) -> bool:
        return self.fd >= 0

    def _dir(self, kind: str) -> str:
        s = self.session
        d = os.path.join(self.cfg.work_dir, kind, safe_component(s.namespace), safe_component(s.name))
        return os.path.join(d, self.pod.dir_name) if self.pod is not None else d

    def description(self) -> tuple[str, str]:
        """The interface's name and description: the session, and for a selector session the
        pod (namespace and name, address), the node it runs on and the ENI that carries it."""
        s = self.session
        node = f"node={self.cfg.node or '-'}"
        if self.pod is not None:
            p = self.pod
            desc = (
                f"vni={s.vni} session={s.key} pod={p.name} namespace={p.namespace} podIP={p.ip} "
                f"podNode={s.source_node or '-'} eni={s.source_eni or '-'} {node}"
            )
            name = p.key
        elif self.sources:
            first = self.sources[0]
            desc = f"vni={first.vni} session={s.key} eni={first.source_eni or '-'} {node}"
            for src in self.sources:
                pods = ",".join(f"{p.key}@{p.ip}" for p in src.pods)
                desc += f" source={src.source_eni or '-'}@{src.source_node or '-'}/vni={src.vni}"
                if src.files != ALL:
                    desc += f"/pods={pods or '-'}"
            name = s.key
        else:
            desc = f"vni={s.vni} session={s.key} eni={s.source_eni or '-'} {node}"
            name = s.key
        if self.cfg.cluster:
            desc += f" cluster={self.cfg.cluster}"
        return name, desc

    def _header(self) -> bytes:
        if self.cfg.fmt == "pcap":
            return pcapng.pcap_global_header(self.cfg.snaplen, self.linktype)
        name, desc = self.description()
        return pcapng.section_header(
            "trafficmirror capture", hardware="AWS VPC Traffic Mirroring (VXLAN)", os_name=os.uname().sysname
        ) + pcapng.interface_description(name, desc, self.cfg.snaplen, self.linktype)

    def _open(self, ts_ns: int, kernel_drops: int) -> bool:
        self.seq += self.seq_step
        self.base = file_basename(self.cfg.node or "node", ts_ns, self.seq, self.cfg.fmt)
        d = self._dir("open")
        try:
            os.makedirs(d, exist_ok=True)
            self.path = os.path.join(d, self.base + ".part")
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            head = self._header()
            _write_all(self.fd, head)
        except OSError as exc:
            self._fail(f"cannot open {self.path or d}: {exc}", exc)
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
                _unlink_quiet(self.path)
            return False
        self.good = len(head)
        self.start_ns = ts_ns
        self.first_ts = self.last_ts = 0
        self.file_packets = self.file_bytes = self.file_dropped = 0
        self.boundary = next_boundary(ts_ns, self.cfg.rotate_seconds) if self.cfg.rotate_seconds else None
        self.failed_until = 0.0
        return True

    def _fail(self, message: str, exc: OSError | None = None) -> None:
        self.failed_until = time.monotonic() + RETRY_AFTER_ERROR_S
        full = exc is not None and exc.errno in (errno.ENOSPC, errno.EDQUOT)
        self.on_error(("disk full: " if full else "write error: ") + message)

    def append(self, g: Group, kernel_drops: int, extra: bool = False) -> None:
        """Append framed records; a batch that crosses a rotation point is split at the exact
        record, so size limits and time windows hold per packet, not per batch. ``extra``: the
        records are extra copies (see ``session_stats``)."""
        if self.fd >= 0:  # the common case, inline: the file is open and nothing rotates
            limit = self.cfg.rotate_bytes
            if (self.boundary is None or g.last_ts < self.boundary) and (
                limit is None or self.good + self.buf_len + len(g.buf) + ISB_RESERVE <= limit
            ):
                self._add(g, kernel_drops, extra)
                return
        while True:
            if not self.is_open and (time.monotonic() < self.failed_until or not self._open(g.first_ts, kernel_drops)):
                self.stats.dropped += g.packets
                if self.session_stats is not None and not extra:
                    self.session_stats.dropped += g.packets
                self.disk_unreported += g.packets
                return
            cut = self._cut(g.buf, g.last_ts)
            if cut is None:
                self._add(g, kernel_drops, extra)
                return
            off, n, wire, head_last, next_first = cut
            if n:
                self._add(Group(g.buf[:off], n, wire, g.first_ts, head_last), kernel_drops, extra)
            self.close(kernel_drops)
            g = Group(g.buf[off:], g.packets - n, g.wire_bytes - wire, next_first, g.last_ts)
            if not g.packets:
                return

    def _cut(self, records: bytes | bytearray, last_ts: int) -> tuple[int, int, int, int, int] | None:
        """None if all of ``records`` fits in the current file, else (offset, packets, wire bytes,
        last ts before the cut, first ts after it)."""
        size = self.good + self.buf_len
        in_file = self.file_packets + self.buf_packets
        over_time = self.boundary is not None and last_ts >= self.boundary
        max_bytes = self.cfg.rotate_bytes
        if not over_time and (max_bytes is None or size + len(records) + ISB_RESERVE <= max_bytes):
            return None
        n = wire = prev_ts = 0
        for start, end, ts, orig in pcapng.iter_records(records, self.cfg.fmt):
            crosses = self.boundary is not None and ts >= self.boundary
            too_big = max_bytes is not None and size + end + ISB_RESERVE > max_bytes
            if (crosses or too_big) and (in_file or n):  # never rotate out an empty file
                return start, n, wire, prev_ts, ts
            n, wire, prev_ts = n + 1, wire + orig, ts
        return None

    def _add(self, g: Group, kernel_drops: int, extra: bool = False) -> None:
        self.chunks.append(g.buf)  # no copy: writev takes the receive loop's bytes as they are
        self.buf_len += len(g.buf)
        self.buf_packets += g.packets
        self.stats.packets += g.packets
        self.stats.bytes += g.wire_bytes
        if self.session_stats is not None:
            if extra:
                self.buf_extra += g.packets
            else:
                self.session_stats.packets += g.packets
                self.session_stats.bytes += g.wire_bytes
        self.file_bytes += g.wire_bytes
        if not self.first_ts:
            self.first_ts = g.first_ts
        self.last_ts = g.last_ts
        if self.buf_len >= self.cfg.flush_bytes:
            self.flush(kernel_drops)

    def flush(self, kernel_drops: int) -> bool:
        self.last_flush = time.monotonic()
        if not self.chunks or not self.is_open:
            return True
        try:
            _writev_all(self.fd, self.chunks)
        except OSError as exc:
            # Cut the file back to its last whole block so it stays readable, hand it off as is,
            # and count what was in the buffer as lost: reported, not silently dropped.
            lost = self.buf_packets
            self.stats.packets -= lost
            self.stats.dropped += lost
            if self.session_stats is not None:
                self.session_stats.packets -= lost - self.buf_extra
                self.session_stats.dropped += lost - self.buf_extra
            self.file_dropped += lost
            self.disk_unreported += lost
            self.chunks = []
            self.buf_len = self.buf_packets = self.buf_extra = 0
            self._fail(f"{self.path}: {exc}; {lost} packets lost", exc)
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.good)
            # The statistics block is tried too: on a full disk it usually fails, and then the
            # count rides on the next file's block.
            self.close(kernel_drops)
            return False
        self.good += self.buf_len
        self.file_packets += self.buf_packets
        self.chunks = []
        self.buf_len = self.buf_packets = self.buf_extra = 0
        return True

    def close(self, kernel_drops: int, statistics: bool = True) -> dict[str, Any] | None:
        """Flush, write the statistics block, move the file to the spool. Returns its metadata."""
        if not self.is_open:
            return None
        if self.chunks and not self.flush(kernel_drops):
            return None  # flush() already closed (and handed off) the cut-back file
        # A file without packets is deleted below: its statistics would go with it, so the
        # drops wait for the next file that is kept.
        if statistics and self.cfg.fmt == "pcapng" and self.file_packets:
            end = self.last_ts or time.time_ns()
            node_now = self.node_drops()
            drops = FileDrops(
                disk=self.disk_unreported,
                socket=max(kernel_drops - self.drops_at_open, 0),
                node=node_now.minus(self.node_at_open),
            )
            isb = pcapng.interface_statistics(
                0,
                end,
                start_ns=self.first_ts or self.start_ns,
                end_ns=end,
                received=self.file_packets + drops.disk,
                if_dropped=drops.disk,
                os_dropped=drops.os_dropped,
                delivered=self.file_packets,
                comment=drops.comment(),
            )
            try:
                _write_all(self.fd, isb)
                self.good += len(isb)
                self.disk_unreported = 0
                self.drops_at_open, self.node_at_open = max(kernel_drops, self.drops_at_open), node_now
            except OSError:
                # The statistics are a nicety; the packets are what must survive.
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, self.good)
        try:
            if self.cfg.fsync:
                os.fsync(self.fd)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = -1
        if self.file_packets == 0:
            _unlink_quiet(self.path)
            return None
        meta = {
            "namespace": self.session.namespace,
            "session": self.session.name,
            "vni": self.session.vni,
            "sourceEni": self.session.source_eni,
            "node": self.cfg.node,
            "cluster": self.cfg.cluster,
            "format": self.cfg.fmt,
            "file": self.base,
            "start": self.start_ns,
            "firstPacket": self.first_ts,
            "lastPacket": self.last_ts,
            "seq": self.seq,
            "packets": self.file_packets,
            "bytes": self.good,
            "done": [],
        }
        if self.pod is not None:
            meta.update(pod=self.pod.key, podIp=self.pod.ip, sourceNode=self.session.source_node)
        spool = self._dir("spool")
        try:
            os.makedirs(spool, exist_ok=True)
            dest = os.path.join(spool, self.base)
            os.rename(self.path, dest)
        except OSError as exc:
            self._fail(f"cannot move {self.path} to the spool: {exc}", exc)
            return None
        write_meta(dest + ".json", meta)  # best effort: the shipper rebuilds a missing one
        self.stats.files += 1
        if self.session_stats is not None:
            self.session_stats.files += 1
        return meta

    def tick(self, now_ns: int, kernel_drops: int) -> None:
        """Idle housekeeping: a quiet session still closes at its time boundary and flushes.
        ``now_ns`` is packet time, so nothing still queued can belong before the boundary."""
        if not self.is_open:
            return
        if self.boundary is not None and now_ns >= self.boundary:
            self.close(kernel_drops)
            return
        if self.chunks and time.monotonic() - self.last_flush >= self.cfg.flush_interval_s:
            self.flush(kernel_drops)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    # No memoryview: one left alive in an exception's traceback would pin the bytearray and make
    # the error path's buf.clear() fail. A short write is rare enough to afford a copy.
    n = os.write(fd, data)
    while n < len(data):
        data = data[n:]
        n = os.write(fd, data)


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


def _writev_all(fd: int, chunks: list[bytes | bytearray]) -> None:
    """Write the chunks in order with as few writev calls as IOV_MAX allows; a short write
    (rare: a signal, a nearly full disk) continues where it stopped."""
    i = 0
    while i < len(chunks):
        part = chunks[i : i + _IOV_MAX]
        want = sum(map(len, part))
        done = os.writev(fd, part)
        if done == want:
            i += len(part)
            continue
        # Skip the chunks written whole, then write the rest of the cut one on its own.
        for c in part:
            if done < len(c):
                _write_all(fd, c[done:])
                break
            done -= len(c)
            i += 1
        i += 1


def _unlink_quiet(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def write_meta(path: str, meta: dict[str, Any]) -> bool:
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(meta, f)
        os.rename(tmp, path)
        return True
    except OSError:
        _unlink_quiet(tmp)
        return False


@dataclass
class WriterStats:
    sessions: dict[str, StreamStats] = field(default_factory=dict)
    # A perPod session's files: "<namespace>/<session> <pod namespace>/<pod>" -> that pod's own
    # figures (a packet between two selected pods is in both pods' files, once in the session's).
    pods: dict[str, StreamStats] = field(default_factory=dict)
    malformed: Counter[str] = field(default_factory=Counter)
    # Packets of unknown VNIs not written, by why: "drop" (--unknown-vni drop) or "rate" (the
    # limit on new unknown-VNI files). Every datagram is in exactly one of: a session's packets
    # or dropped, a receive reason in ``malformed`` (all but unknown_vni), or here.
    unknown_refused: Counter[str] = field(default_factory=Counter)
    datagrams: int = 0
    kernel_drops: int = 0
    write_errors: int = 0
    last_error: str = ""
    last_error_time: float = 0.0


UNKNOWN_STATS_KEY = f"{UNKNOWN_NAMESPACE}/all"  # one metric series for every unknown VNI


@dataclass
class UnknownVniPolicy:
    """What a sender of VNIs no session claims may cost: at most ``max_open`` files open at once
    (the least recently written is closed and shipped to make room), at most ``new_per_second``
    new files (a burst of as many), the rest counted as refused."""

    write: bool = True
    max_open: int = 32
    new_per_second: float = 4.0


class _TokenBucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self.tokens = self.burst
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Writer:
    """All streams of one worker, keyed by VNI."""

    def __init__(
        self,
        cfg: WriterConfig,
        sessions: dict[int, Session],
        *,
        unknown: UnknownVniPolicy | None = None,
        keep_malformed: bool = False,
    ) -> None:
        self.cfg = cfg
        self.sessions = sessions
        self.unknown = unknown or UnknownVniPolicy()
        self.unknown_bucket = _TokenBucket(self.unknown.new_per_second)
        self.unknown_open: OrderedDict[int, None] = OrderedDict()  # open unknown-VNI streams, LRU first
        # The file sequence number of an unknown VNI whose stream was closed to make room: a
        # reopened stream goes on from it, so its next file cannot take the name of the last.
        self.unknown_seq: dict[int, int] = {}
        self.streams: dict[int, Stream] = {}
        # Selector sessions' streams, by (session key, pod key or ""): one per pod (perPod) or one
        # per session (perSession, and a nodeSelector's sources), whatever VNIs feed them.
        self.split_streams: dict[tuple[str, str], Stream] = {}
        self.split_index: dict[int, tuple[list[str], dict[bytes, int]]] = {}  # VNI -> pod stream keys, IP index
        self.stats = WriterStats()
        self.malformed_stream: Stream | None = None
        self.node_drops = NodeDropsSampler()
        if keep_malformed:
            s = Session("_malformed", f"worker-{cfg.worker}", 0)
            self.malformed_stream = Stream(
                s,
                cfg,
                self._stream_stats(s),
                self._error,
                pcapng.LINKTYPE_IPV4,
                self.node_drops.sample,
                self.node_drops.baseline,
            )

    def _error(self, message: str) -> None:
        self.stats.write_errors += 1
        self.stats.last_error = message
        self.stats.last_error_time = time.time()
        log.error("%s", message)

    def _stream_stats(self, s: Session) -> StreamStats:
        return self.stats.sessions.setdefault(s.key if s.known else UNKNOWN_STATS_KEY, StreamStats())

    def update_sessions(self, sessions: dict[int, Session]) -> None:
        """A VNI whose owner changed gets a new file; the old one is closed and shipped. A
        selector session's stream whose pod or sources changed is closed too (its interface
        description would no longer be true); one whose session is gone or Completed as well."""
        self.sessions = sessions
        for vni, stream in list(self.streams.items()):
            if sessions.get(vni, unknown_session(vni)) != stream.session:
                stream.close(self.stats.kernel_drops)
                del self.streams[vni]
                self.unknown_open.pop(vni, None)
        self.split_index = {}
        wanted = self._split_descriptors()
        for key, stream in list(self.split_streams.items()):
            if wanted.get(key) != (stream.session, stream.pod, stream.sources):
                stream.close(self.stats.kernel_drops)
                del self.split_streams[key]

    def _split_descriptors(self) -> dict[tuple[str, str], tuple[Session, Pod | None, tuple[Session, ...]]]:
        """What each selector-session stream should be, from the current map."""
        by_session: dict[str, list[Session]] = {}
        for s in self.sessions.values():
            if s.files:
                by_session.setdefault(s.key, []).append(s)
        out: dict[tuple[str, str], tuple[Session, Pod | None, tuple[Session, ...]]] = {}
        for key, group in by_session.items():
            group.sort(key=lambda s: s.vni)
            if group[0].files == PER_POD:
                for s in group:
                    # Without the other pods: a pod joining or leaving its ENI does not rotate
                    # the files of the pods that stay.
                    alone = dataclasses.replace(s, pods=())
                    for p in s.pods:
                        out.setdefault((key, p.key), (alone, p, ()))
            else:
                out[(key, "")] = (group[0], None, tuple(group))
        return out

    def _split_stream(self, key: tuple[str, str], session: Session, pod: Pod | None) -> Stream:
        stream = self.split_streams.get(key)
        if stream is not None:
            return stream
        desired = self._split_descriptors()[key]
        session_stats = self._stream_stats(session)
        stats = session_stats
        if pod is not None:
            stats = self.stats.pods.setdefault(f"{session.key} {pod.key}", StreamStats())
        stream = self.split_streams[key] = Stream(
            desired[0],
            self.cfg,
            stats,
            self._error,
            node_drops=self.node_drops.sample,
            node_baseline=self.node_drops.baseline,
            pod=desired[1],
            sources=desired[2],
            session_stats=session_stats if pod is not None else None,
        )
        return stream

    def _write_split(self, vni: int, session: Session, g: Group, drops: int) -> None:
        """A selector session's packets: split by pod (the writer stage; the receive loop only
        grouped them by VNI), filtered to the selected pods, or all of them (nodeSelector)."""
        if session.files == ALL:
            self._split_stream((session.key, ""), session, None).append(g, drops)
            return
        found = self.split_index.get(vni)
        if found is None:
            pods = list(session.pods)
            keys = [p.key for p in pods] if session.files == PER_POD else [""]
            found = self.split_index[vni] = (keys, demux.index_of([p.ip for p in pods]))
        keys, index = found
        per_pod = session.files == PER_POD
        result = demux.split(g, self.cfg.fmt, index, per_pod=per_pod)
        if result.filtered:
            self._stream_stats(session).filtered += result.filtered
        for i, runs in result.runs.items():
            stream = self._split_stream((session.key, keys[i]), session, session.pods[i] if per_pod else None)
            for run in runs:
                stream.append(run.group, drops, run.extra)

    def write(self, batch: Batch) -> None:
        st = self.stats
        st.datagrams += batch.datagrams
        if batch.kernel_drops >= 0:
            st.kernel_drops = max(st.kernel_drops, batch.kernel_drops)
        if batch.malformed:
            st.malformed.update(batch.malformed)
        drops = st.kernel_drops
        for vni, g in batch.groups.items():
            stream = self.streams.get(vni)
            if stream is None:
                session = self.sessions.get(vni)
                if session is not None and session.files:
                    self._write_split(vni, session, g, drops)
                    continue
                if session is None:
                    st.malformed["unknown_vni"] += g.packets
                    refused = self._refuse_unknown()
                    if refused:
                        st.unknown_refused[refused] += g.packets
                        continue
                    session = unknown_session(vni)
                    self.unknown_open[vni] = None
                stream = self.streams[vni] = Stream(
                    session,
                    self.cfg,
                    self._stream_stats(session),
                    self._error,
                    node_drops=self.node_drops.sample,
                    node_baseline=self.node_drops.baseline,
                )
                if not session.known:
                    stream.seq = self.unknown_seq.pop(vni, 0)
            elif not stream.session.known:
                st.malformed["unknown_vni"] += g.packets
                self.unknown_open.move_to_end(vni)
            stream.append(g, drops)
        if batch.kept and self.malformed_stream is not None:
            self._keep(batch.kept)

    def _refuse_unknown(self) -> str:
        """Why a new unknown-VNI stream may not open ("" when it may); makes room if it may."""
        if not self.unknown.write:
            return "drop"
        if not self.unknown_bucket.take():
            return "rate"
        while len(self.unknown_open) >= max(self.unknown.max_open, 1):
            oldest, _ = self.unknown_open.popitem(last=False)
            closing = self.streams.pop(oldest)
            closing.close(self.stats.kernel_drops)
            self.unknown_seq[oldest] = closing.seq
        return ""

    def _keep(self, kept: list[Kept]) -> None:
        """Malformed datagrams, wrapped in a synthetic IPv4/UDP header to port 4789 so Wireshark
        dissects them as the VXLAN they claim to be; the reason is the packet comment."""
        assert self.malformed_stream is not None
        buf = bytearray()
        for k in kept:
            pkt = _ipv4_udp_wrap(k)
            if self.cfg.fmt == "pcapng":
                buf += pcapng.enhanced_packet(k.ts_ns, pkt, len(pkt), comment=k.reason)
            else:
                buf += pcapng.pcap_record(k.ts_ns, pkt, len(pkt))
        wire = sum(len(k.datagram) for k in kept)
        self.malformed_stream.append(
            Group(buf, len(kept), wire, kept[0].ts_ns, kept[-1].ts_ns), self.stats.kernel_drops
        )

    def tick(self, now_ns: int | None = None) -> None:
        """``now_ns``: the packet-time watermark (every datagram stamped before it is written)."""
        now = now_ns or time.time_ns()
        for s in self._all():
            s.tick(now, self.stats.kernel_drops)

    def close_all(self) -> None:
        for s in self._all():
            s.close(self.stats.kernel_drops)

    def _all(self) -> list[Stream]:
        return (
            list(self.streams.values())
            + list(self.split_streams.values())
            + ([self.malformed_stream] if self.malformed_stream else [])
        )

    def disk_error_active(self, within_s: float = 5.0) -> bool:
        return bool(self.stats.last_error) and time.time() - self.stats.last_error_time < within_s


def _ipv4_udp_wrap(k: Kept) -> bytes:
    import struct

    try:
        src = socket.inet_aton(k.source[0])
    except OSError:
        src = b"\0\0\0\0"
    total = 28 + len(k.datagram)
    if total > 0xFFFF:
        total = 0xFFFF
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 17, 0, src, b"\0\0\0\0")
    udp = struct.pack("!HHHH", k.source[1] & 0xFFFF, vxlan.VXLAN_PORT, min(8 + len(k.datagram), 0xFFFF), 0)
    return ip + udp + k.datagram
