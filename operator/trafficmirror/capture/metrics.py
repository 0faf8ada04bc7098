"""Prometheus metrics and the health endpoints, served from the agent's supervisor process.

Workers send cumulative snapshots; a custom collector turns the latest ones into metric
families at scrape time, so there is no multi-process registry to manage.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from trafficmirror.capture import vxlan
from trafficmirror.capture.lossstats import LAYER_HELP, LAYERS, NodeDropsSampler
from trafficmirror.capture.ship import ShipStats

P = "trafficmirror_capture_"
WRITE_ERROR_UNHEALTHY_S = 10.0
MAX_FILES_LISTED = 1000


@dataclass
class AgentState:
    """What the supervisor knows; read by the collector and the health handlers."""

    workers: dict[int, dict[str, Any]] = field(default_factory=dict)  # latest snapshot per worker
    workers_expected: int = 0
    workers_dead: list[int] = field(default_factory=list)
    rcvbuf_requested: int = 0
    rcvbuf_granted: int = 0
    rmem_max: int | None = None
    sessions_known: int = 0
    sessions_loaded: bool = False
    ship: ShipStats | None = None
    # Sessions whose phase is Completed, and where each session's closed files were shipped
    # (the latest MAX_FILES_LISTED), and the spool's files of a session still waiting.
    completed: set[str] = field(default_factory=set)
    files: dict[str, list[str]] = field(default_factory=dict)
    spooled: Callable[[str, str], list[str]] | None = None
    node_drops: NodeDropsSampler = field(default_factory=NodeDropsSampler)  # baseline: the agent's start
    lock: threading.Lock = field(default_factory=threading.Lock)

    def update_worker(self, idx: int, snap: dict[str, Any]) -> None:
        with self.lock:
            self.workers[idx] = snap

    def record_file(self, session_key: str, location: str) -> None:
        with self.lock:
            files = self.files.setdefault(session_key, [])
            files.append(location)
            del files[:-MAX_FILES_LISTED]

    def health(self) -> tuple[bool, dict[str, Any]]:
        problems = []
        with self.lock:
            if self.workers_dead:
                problems.append(f"worker(s) {self.workers_dead} exited")
            now = time.time()
            for idx, snap in self.workers.items():
                if snap.get("last_error") and now - snap.get("last_error_time", 0) < WRITE_ERROR_UNHEALTHY_S:
                    problems.append(f"worker {idx}: {snap['last_error']}")
            if self.ship is not None:
                for dest, err in self.ship.failing.items():
                    problems.append(f"shipping to {dest} failing: {err}")
        return not problems, {"ok": not problems, "problems": problems}

    def ready(self) -> bool:
        with self.lock:
            return self.sessions_loaded and len(self.workers) >= self.workers_expected and not self.workers_dead


class _Collector(Collector):
    def __init__(self, state: AgentState) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        s = self.state
        with s.lock:
            snaps = [dict(v) for v in s.workers.values()]
        labels = ["namespace", "session"]
        fams = {
            "packets": CounterMetricFamily(P + "packets", "Packets written, by session", labels=labels),
            "bytes": CounterMetricFamily(
                P + "bytes", "Bytes of mirrored frames (wire length), by session", labels=labels
            ),
            "files": CounterMetricFamily(P + "files", "Files closed and handed to shipping, by session", labels=labels),
            "dropped": CounterMetricFamily(
                P + "write_dropped_packets",
                "Packets lost to write errors (disk full), by session",
                labels=labels,
            ),
        }
        fams["filtered"] = CounterMetricFamily(
            P + "filtered_out",
            "Packets of a podSelector session that matched none of its pods' addresses: not written",
            labels=labels,
        )
        pod_packets = CounterMetricFamily(
            P + "pod_packets",
            "Packets written to a pod's files (perPod); a packet between two selected pods is in both",
            labels=[*labels, "pod"],
        )
        agg: dict[tuple[str, str], dict[str, int]] = {}
        pods: dict[tuple[str, str, str], int] = {}
        malformed: dict[str, int] = {}
        datagrams = drops = errors = disk = 0
        for snap in snaps:
            for key, st in snap.get("sessions", {}).items():
                ns, _, name = key.partition("/")
                a = agg.setdefault((ns, name), {"packets": 0, "bytes": 0, "files": 0, "dropped": 0, "filtered": 0})
                for k in a:
                    a[k] += int(st.get(k, 0))
                disk += int(st.get("dropped", 0))
            for key, st in snap.get("pods", {}).items():
                session, _, pod = key.partition(" ")
                ns, _, name = session.partition("/")
                pods[(ns, name, pod)] = pods.get((ns, name, pod), 0) + int(st.get("packets", 0))
            for reason, n in snap.get("malformed", {}).items():
                malformed[reason] = malformed.get(reason, 0) + int(n)
            datagrams += int(snap.get("datagrams", 0))
            drops += int(snap.get("kernel_drops", 0))
            errors += int(snap.get("write_errors", 0))
        for (ns, name), a in sorted(agg.items()):
            for k, fam in fams.items():
                fam.add_metric([ns, name], a[k])
        yield from fams.values()
        for (ns, name, pod), n in sorted(pods.items()):
            pod_packets.add_metric([ns, name, pod], n)
        yield pod_packets
        m = CounterMetricFamily(P + "malformed", "Datagrams not written to a session, by reason", labels=["reason"])
        for reason in vxlan.Reason:
            m.add_metric([reason], malformed.get(reason, 0))
        yield m
        refused = CounterMetricFamily(
            P + "unknown_vni_refused",
            "Packets of VNIs no session claims that were not written: drop (--unknown-vni drop) or rate "
            "(the limit on new unknown-VNI files)",
            labels=["why"],
        )
        for why in ("drop", "rate"):
            refused.add_metric([why], sum(int(snap.get("unknown_refused", {}).get(why, 0)) for snap in snaps))
        yield refused
        yield CounterMetricFamily(P + "datagrams", "UDP datagrams received", value=datagrams)
        yield CounterMetricFamily(
            P + "kernel_drops",
            "Datagrams the kernel dropped on the capture socket "
            "(SO_RXQ_OVFL; includes kernel VNI-filter rejects when that is on)",
            value=drops,
        )
        yield CounterMetricFamily(P + "write_errors", "File write errors (e.g. disk full)", value=errors)
        layers = CounterMetricFamily(
            P + "layer_drops",
            "Drops since the agent started, by layer a mirrored datagram crosses; scope says whose: "
            + "; ".join(f"{k}: {v}" for k, v in LAYER_HELP.items())
            + ". Layers overlap: do not add them up.",
            labels=["layer", "scope"],
        )
        node = s.node_drops.since_start().as_dict()
        by_layer = {"disk": (disk, "session"), "socket": (drops, "socket")}
        by_layer.update({k: (v, "node") for k, v in node.items()})
        for layer in LAYERS:
            value, scope = by_layer[layer]
            layers.add_metric([layer, scope], value)
        yield layers
        rb = GaugeMetricFamily(P + "receive_buffer_bytes", "Socket receive buffer", labels=["kind"])
        rb.add_metric(["requested"], s.rcvbuf_requested)
        rb.add_metric(["granted"], s.rcvbuf_granted)
        if s.rmem_max is not None:
            rb.add_metric(["rmem_max"], s.rmem_max)
        yield rb
        yield GaugeMetricFamily(P + "sessions", "MirrorSessions known (VNI map size)", value=s.sessions_known)
        yield GaugeMetricFamily(
            P + "workers_alive",
            "Receive worker processes alive",
            value=s.workers_expected - len(s.workers_dead),
        )
        if s.ship is not None:
            up = CounterMetricFamily(
                P + "uploads",
                "Closed files shipped, by destination and result",
                labels=["destination", "result"],
            )
            for dest in sorted(set(s.ship.ok) | set(s.ship.failed)):
                up.add_metric([dest, "ok"], s.ship.ok[dest])
                up.add_metric([dest, "failed"], s.ship.failed[dest])
            yield up
            yield GaugeMetricFamily(P + "spool_files", "Closed files waiting to be shipped", value=s.ship.spool_files)
            yield GaugeMetricFamily(P + "spool_bytes", "Bytes waiting to be shipped", value=s.ship.spool_bytes)


def serve(state: AgentState, address: str, port: int) -> ThreadingHTTPServer:
    registry = CollectorRegistry()
    registry.register(_Collector(state))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
                "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest(registry)),
                "/healthz": self._health,
                "/readyz": lambda: (
                    (200, "text/plain", b"ready\n") if state.ready() else (503, "text/plain", b"not ready\n")
                ),
            }
            if path not in routes:
                self.send_error(404)
                return
            code, ctype, body = routes[path]()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _health(self) -> tuple[int, str, bytes]:
            ok, detail = state.health()
            return (200 if ok else 503), "application/json", (json.dumps(detail) + "\n").encode()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
