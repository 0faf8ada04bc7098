"""The capture agent: a supervisor process and N receive/write worker processes.

The supervisor binds every worker's socket (in order, so the SO_REUSEPORT steering program's
index i is worker i), forks the workers before it starts any thread, then serves metrics,
ships closed files and feeds VNI-map updates to the workers over a socketpair each. Workers
send back cumulative statistics twice a second. A worker that dies takes the agent down
(non-zero exit): a restarted pod recovers its open files from disk; a half-alive agent would not.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import resource
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from trafficmirror.capture import receiver as rx
from trafficmirror.capture import vxlan
from trafficmirror.capture.batch import MAX_BATCH
from trafficmirror.capture.metrics import AgentState, serve
from trafficmirror.capture.report import StatusReporter
from trafficmirror.capture.report import collector as report_collector
from trafficmirror.capture.sessions import KubeWatcher, Session, source_checks
from trafficmirror.capture.ship import DirDestination, S3Destination, Shipper, recover_open_files
from trafficmirror.capture.writer import UnknownVniPolicy, Writer, WriterConfig, holdable_vnis

log = logging.getLogger("trafficmirror.capture")

BATCH = MAX_BATCH
REPORT_EVERY_S = 0.5
TICK_EVERY_S = 0.2
COALESCE_S = 0.001
# Kernel receive timestamps are taken a little before the datagram reaches the socket queue; a
# file closes at its time boundary only once the queue was seen empty this long after it.
WATERMARK_GRACE_NS = 250_000_000


@dataclass
class AgentConfig:
    writer: WriterConfig
    address: str = "0.0.0.0"
    port: int = vxlan.VXLAN_PORT
    rcvbuf: int = 64 << 20
    workers: int = 1
    sessions: list[Session] = field(default_factory=list)
    kube: dict[str, Any] | None = None  # KubeWatcher keyword arguments, or None for a static map
    kernel_vni_filter: bool = False
    unknown: UnknownVniPolicy = field(default_factory=UnknownVniPolicy)
    keep_malformed: bool = False
    # Off only where a session's datagrams do not come from its source ENI's own address (a NAT or a
    # tunnel on the way): then every datagram of a known VNI is accepted, as before the check existed.
    check_sources: bool = True
    output_dir: str | None = None
    retain_files: int | None = None
    retain_bytes: int | None = None
    gzip: bool = False
    s3: dict[str, Any] | None = None  # S3Destination keyword arguments
    metrics_address: str = "0.0.0.0"
    metrics_port: int = 9090
    shutdown_timeout_s: float = 25.0
    accelerate: bool = True
    status_interval_s: float = 30.0  # this node's entry in each MirrorSession's status (with kube); 0: off


# --- worker -----------------------------------------------------------------------------------


def _source_checks(cfg: AgentConfig, sessions: Iterable[Session]) -> dict[int, frozenset[str]]:
    return source_checks(sessions) if cfg.check_sources else {}


def _snapshot(w: Writer, rcvbuf: int) -> dict[str, Any]:
    st = w.stats
    return {
        "sessions": {k: asdict(v) for k, v in st.sessions.items()},
        "pods": {k: asdict(v) for k, v in st.pods.items()},
        "malformed": dict(st.malformed),
        "unknown_refused": dict(st.unknown_refused),
        "datagrams": st.datagrams,
        "kernel_drops": st.kernel_drops,
        "write_errors": st.write_errors,
        "last_error": st.last_error,
        "last_error_time": st.last_error_time,
        "rcvbuf": rcvbuf,
    }


def _send(ctrl: socket.socket, msg: dict[str, Any]) -> None:
    ctrl.sendall(json.dumps(msg, separators=(",", ":")).encode() + b"\n")


def keep_heap() -> bool:
    """Framed batches live in large buffers until their stream flushes (about 1 MiB each); with
    glibc's defaults the freed heap top is handed back to the kernel and the next buffers fault
    their pages in again, about one page fault per three 1,400-byte packets. Keep the heap
    instead (RSS stays at its working-set peak; untouched padding is not resident)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(
        mallopt(opt, value) == 1
        for opt, value in ((m_mmap_threshold, 32 << 20), (m_trim_threshold, 256 << 20), (m_top_pad, 64 << 20))
    )


def worker_main(idx: int, sock: socket.socket, ctrl: socket.socket, cfg: AgentConfig, granted: int) -> int:
    stop = False
    keep_heap()

    def on_signal(_sig: int, _frm: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    wcfg = WriterConfig(**{**asdict(cfg.writer), "worker": idx, "workers": cfg.workers})
    writer = Writer(
        wcfg,
        {s.vni: s for s in cfg.sessions},
        unknown=cfg.unknown,
        keep_malformed=cfg.keep_malformed,
    )
    recv = rx.make_receiver(
        sock,
        fmt=wcfg.fmt,
        snaplen=wcfg.snaplen,
        keep_malformed=cfg.keep_malformed,
        accelerate=cfg.accelerate,
        hold=True,
    )
    recv.set_sources(_source_checks(cfg, cfg.sessions))
    recv.set_hold(holdable_vnis(cfg.sessions))
    poller = select.poll()
    sfd, cfd = sock.fileno(), ctrl.fileno()
    poller.register(sfd, select.POLLIN)
    poller.register(cfd, select.POLLIN)
    ctrl.setblocking(False)
    pending = b""
    last_report = last_tick = 0.0
    # Every datagram the kernel stamped before this instant has been received (and is written
    # once the held records are taken): time-based rotation follows it (packet time), not the
    # wall clock, so a file never closes while earlier packets still wait in the socket queue.
    watermark = time.time_ns()

    def write_held() -> None:
        # The receive loop hands each VNI's records out in groups of up to 64 KiB across
        # batches (with 100 sessions a batch has a few packets per VNI, and the per-group work
        # was most of the agent's user time); what it holds is written here, before anything
        # that needs every received packet in its file. Only VNIs that have their streams to
        # themselves are held (holdable_vnis): in a stream several VNIs feed, records of
        # different VNIs stay within one receive batch of each other.
        held = recv.take_held()
        if held.groups:
            writer.write(held)

    def drain_socket() -> None:
        nonlocal watermark
        # Up to 64 batches before looking at anything else: under load the socket is the priority.
        for _ in range(64):
            started = time.time_ns()
            b = recv.recv_batch(BATCH)
            if b.datagrams:
                writer.write(b)
            if b.held_full:
                write_held()
            if b.datagrams < BATCH:
                watermark = started  # the queue was empty at some point after this
                if not b.datagrams:
                    write_held()  # the socket is idle: nothing is worth holding back for
                    return
                # Traffic is flowing but we are ahead of it: let a batch accumulate rather than
                # pay a wake-up per handful of packets, then read again (an empty read ends the
                # round). The receive buffer holds far more than COALESCE_S of traffic, and a
                # capture file tolerates the latency.
                time.sleep(COALESCE_S)

    while not stop:
        polled = time.time_ns()
        try:
            events = poller.poll(int(TICK_EVERY_S * 1000))
        except InterruptedError:
            events = []
        if not any(fd == sfd for fd, _ev in events):
            watermark = max(watermark, polled)  # nothing arrived while we waited
        for fd, _ev in events:
            if fd == sfd:
                drain_socket()
            elif fd == cfd:
                try:
                    chunk = ctrl.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:  # the supervisor is gone: finish our files and leave
                    stop = True
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    msg = json.loads(line)
                    if "sessions" in msg:
                        sessions = [Session.from_json(s) for s in msg["sessions"]]
                        write_held()  # received under the sessions as they were
                        recv.set_sources(_source_checks(cfg, sessions))
                        recv.set_hold(holdable_vnis(sessions))
                        writer.update_sessions({s.vni: s for s in sessions})
        now = time.monotonic()
        if now - last_tick >= TICK_EVERY_S:
            last_tick = now
            with contextlib.suppress(OSError):
                writer.stats.kernel_drops = max(writer.stats.kernel_drops, rx.kernel_drops(sock))
            write_held()
            writer.tick(watermark - WATERMARK_GRACE_NS)
        if now - last_report >= REPORT_EVERY_S:
            last_report = now
            try:
                _send(ctrl, {"stats": _snapshot(writer, granted)})
            except OSError:
                stop = True
    # What the kernel has already queued was received before SIGTERM: write it too.
    drain_socket()
    write_held()
    writer.close_all()
    try:
        ctrl.setblocking(True)
        _send(ctrl, {"stats": _snapshot(writer, granted), "final": True})
    except OSError:
        pass
    return 0


# --- supervisor -------------------------------------------------------------------------------


def raise_open_files_limit() -> int:
    """One open file per session per worker: a node with a thousand sessions needs more than the
    usual soft limit of 1,024 descriptors. Raising the soft limit to the hard one needs no
    privilege."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    log.info("open files limit %s", "unlimited" if soft == resource.RLIM_INFINITY else soft)
    return soft


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.state = AgentState(workers_expected=cfg.workers, rcvbuf_requested=cfg.rcvbuf, rmem_max=rx.rmem_max())
        self.sessions: dict[int, Session] = {s.vni: s for s in cfg.sessions}
        self.socks: list[socket.socket] = []
        self.workers: list[tuple[int, socket.socket]] = []  # (pid, ctrl)
        self.stop = threading.Event()
        self.exit_code = 0
        self.shipper: Shipper | None = None
        self.watcher: KubeWatcher | None = None
        self.reporter: StatusReporter | None = None

    def _bind(self) -> None:
        c = self.cfg
        for _ in range(c.workers):
            sock, granted = rx.open_socket(c.address, c.port, c.rcvbuf, reuseport=c.workers > 1)
            self.socks.append(sock)
            self.state.rcvbuf_granted = granted
        if c.workers > 1:
            rx.attach_steering(self.socks[0], c.workers)
        self._apply_filter()
        rmax = self.state.rmem_max
        log.info(
            "listening on UDP %s:%d with %d worker(s); receive buffer requested %d, granted %d "
            "(net.core.rmem_max=%s; the kernel reports twice what it accounts for)",
            c.address,
            c.port,
            c.workers,
            c.rcvbuf,
            self.state.rcvbuf_granted,
            rmax,
        )
        if rmax is not None and c.rcvbuf > rmax:
            log.warning(
                "net.core.rmem_max=%d caps the receive buffer below the %d requested; raise it on the node "
                "to absorb longer bursts",
                rmax,
                c.rcvbuf,
            )

    def _apply_filter(self) -> None:
        if not self.cfg.kernel_vni_filter:
            return
        checks = _source_checks(self.cfg, self.sessions.values())
        what = ""
        for s in self.socks:
            what = rx.attach_vni_filter(s, list(self.sessions), checks)
        if what == "none":
            log.warning(
                "kernel VNI filter: %d VNIs do not fit one classic BPF program; no kernel filter, "
                "every datagram is checked in user space",
                len(self.sessions),
            )
        elif what == "vni" and checks:
            log.warning("kernel VNI filter: the source addresses do not fit; they are checked in user space")
        log.info("kernel VNI filter (%s): accepting %s", what, sorted(self.sessions) or "nothing")

    def _fork_workers(self) -> None:
        for idx, sock in enumerate(self.socks):
            parent_end, child_end = socket.socketpair()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    parent_end.close()
                    for other in self.socks:
                        if other is not sock:
                            other.close()
                    code = worker_main(idx, sock, child_end, self.cfg, self.state.rcvbuf_granted)
                except BaseException:
                    logging.getLogger(__name__).exception("worker %d failed", idx)
                finally:
                    logging.shutdown()
                    os._exit(code)
            child_end.close()
            self.workers.append((pid, parent_end))

    def _reader(self, idx: int, ctrl: socket.socket) -> None:
        buf = b""
        while True:
            try:
                chunk = ctrl.recv(1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                msg = json.loads(line)
                if "stats" in msg:
                    self.state.update_worker(idx, msg["stats"])
        if not self.stop.is_set():
            log.error("worker %d exited unexpectedly; stopping the agent", idx)
            with self.state.lock:
                self.state.workers_dead.append(idx)
            self.exit_code = 1
            self.stop.set()

    def on_sessions(self, sessions: dict[int, Session]) -> None:
        """Called by the Kubernetes watch with the complete new map. A Completed session is not
        in it: the workers close its files, the shipper ships them, the reporter lists them."""
        if self.watcher is not None:
            with self.state.lock:
                self.state.completed = set(self.watcher.completed)
        self.sessions = sessions
        self.state.sessions_known = len(sessions)
        self.state.sessions_loaded = True
        self._apply_filter()
        msg = {"sessions": [s.to_json() for s in sessions.values()]}
        for _pid, ctrl in self.workers:
            with contextlib.suppress(OSError):
                _send(ctrl, msg)

    def run(self) -> int:
        c = self.cfg
        raise_open_files_limit()
        wdir = c.writer.work_dir
        os.makedirs(wdir, exist_ok=True)
        recovered = recover_open_files(wdir)
        if recovered:
            log.warning("recovered %d file(s) left open by a previous run", len(recovered))
        if c.kube is not None:
            self.watcher = KubeWatcher(self.on_sessions, **c.kube)
        else:
            self.state.sessions_loaded = True
            self.state.sessions_known = len(self.sessions)
        self._bind()
        # Fork before any thread exists: a forked child inherits only the calling thread.
        self._fork_workers()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        for idx, (_pid, ctrl) in enumerate(self.workers):
            threading.Thread(target=self._reader, args=(idx, ctrl), name=f"worker-{idx}", daemon=True).start()
        dests: list[Any] = []
        if c.output_dir:
            dests.append(DirDestination(c.output_dir, c.retain_files, c.retain_bytes))
        if c.s3:
            dests.append(S3Destination(**c.s3))
        self.shipper = Shipper(wdir, dests, compress=c.gzip, on_event=self._shipped)
        self.state.ship = self.shipper.stats
        self.state.spooled = self.shipper.pending_of
        threading.Thread(target=self.shipper.run, name="shipper", daemon=True).start()
        if self.watcher is not None:
            threading.Thread(target=self.watcher.run, name="kube-watch", daemon=True).start()
            if c.status_interval_s > 0:
                node = c.writer.node or os.uname().nodename
                self.reporter = StatusReporter(
                    self.watcher, node, report_collector(self.state), interval_s=c.status_interval_s
                )
                threading.Thread(target=self.reporter.run, name="status-report", daemon=True).start()
        server = serve(self.state, c.metrics_address, c.metrics_port) if c.metrics_port >= 0 else None
        if server is not None:
            log.info("metrics and health on %s:%d", c.metrics_address, server.server_address[1])
        self.stop.wait()
        return self._shutdown()

    def _shipped(self, result: str, _destination: str, meta: dict[str, Any]) -> None:
        """Where each session's closed files went (a path or an s3:// URI), for its status."""
        if result != "ok" or not meta.get("location"):
            return
        self.state.record_file(f"{meta['namespace']}/{meta['session']}", str(meta["location"]))

    def _shutdown(self) -> int:
        log.info("stopping: flushing and closing open files")
        self.stop.set()
        if self.watcher is not None:
            self.watcher.stop.set()
        for pid, _ctrl in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.shutdown_timeout_s
        for pid, _ctrl in self.workers:
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    if os.waitstatus_to_exitcode(status) != 0:
                        self.exit_code = 1
                    break
                if time.monotonic() > deadline:
                    log.error("worker %d did not stop in time; killing it", pid)
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    self.exit_code = 1
                    break
                time.sleep(0.02)
        if self.reporter is not None:  # the workers' final counts, within a bounded time
            self.reporter.stop.set()
            with contextlib.suppress(Exception):
                self.reporter.report_once(force=True, deadline=time.monotonic() + 3.0)
        assert self.shipper is not None
        self.shipper.stop.set()
        left = self.shipper.drain(max(deadline - time.monotonic(), 1.0))
        if left:
            log.error("%d closed file(s) still spooled at exit; the next start ships them", left)
            self.exit_code = self.exit_code or 2
        log.info("stopped")
        return self.exit_code


def run(cfg: AgentConfig) -> int:
    try:
        return Agent(cfg).run()
    except rx.PortInUseError as exc:
        log.error("%s", exc)
        print(f"trafficmirror agent: {exc}", file=sys.stderr)
        return 3
