"""What the user sees in ``kubectl get mirrorsession -o yaml``: this node's entry under
``status.captureNodes.<node>``, with the packets written, drops by layer and a ``Lossy`` condition.

Several capture nodes may write one MirrorSession. Each patches only its own key with a JSON
merge patch on the status subresource, so nodes never overwrite each other (nor the operator's
fields) and no resourceVersion race exists. Patches are rate-limited: at most one per session
per interval, none when nothing changed, and a global budget per second so a thousand sessions
do not burst the apiserver. The agent's RBAC allows ``patch`` on ``mirrorsessions/status`` and
nothing else it writes.

Attribution, honestly: packets, bytes and disk drops are this session's; socket drops are the
agent's sockets' (shared by its sessions); NIC, softnet and UDP drops are node-wide.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trafficmirror.api.common import GROUP, VERSION
from trafficmirror.capture.lossstats import NodeDrops
from trafficmirror.capture.sessions import PLURAL, KubeWatcher

log = logging.getLogger(__name__)

LOSSY = "Lossy"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class SessionCounts:
    """One session's counters on this node, cumulative since the agent started."""

    packets: int = 0
    bytes: int = 0
    disk: int = 0
    filtered: int = 0  # a podSelector session's packets that matched none of its pods
    # Once the session is Completed: where this node's files of it are (paths or s3:// URIs;
    # a file whose upload has not succeeded yet is listed where it waits, in the node's spool).
    files: tuple[str, ...] | None = None


def drops_of(counts: SessionCounts, socket: int, node: NodeDrops) -> dict[str, int]:
    return {
        "disk": counts.disk,
        "socket": socket,
        "softnet": node.softnet,
        "nic": node.nic,
        "udpRcvbufErrors": node.udp_rcvbuf,
        "udpInErrors": node.udp_inerrors,
    }


def lossy_condition(
    previous: dict[str, int] | None, drops: dict[str, int], last: dict[str, Any] | None, now: str
) -> dict[str, Any]:
    """Lossy=True while a layer's counter rose since the previous report, naming the layers and
    whose they are; lastTransitionTime moves only when the status flips."""
    rose = {k: v - (previous or {}).get(k, 0) for k, v in drops.items() if v > (previous or {}).get(k, 0)}
    if "disk" in rose:
        reason, whose = "WriteErrors", "this session's packets"
    elif "socket" in rose:
        reason, whose = "SocketOverflow", "the capture socket, shared by the sessions on this node"
    elif rose:
        reason, whose = "NodeDrops", "node-wide counters (every datagram on the node, maybe not this session's)"
    else:
        reason, whose = "NoDrops", ""
    status = "True" if rose else "False"
    if rose:
        message = "dropped since the last report: " + ", ".join(f"{k}={v}" for k, v in sorted(rose.items()))
        message += f" ({whose})"
    else:
        message = "no layer dropped since the last report"
    since = now if last is None or last.get("status") != status else last.get("lastTransitionTime", now)
    return {
        "type": LOSSY,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }


class _Budget:
    """A token bucket on patches, shared by all sessions."""

    def __init__(self, per_second: float) -> None:
        self.rate = per_second
        self.tokens = max(per_second, 1.0)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(max(self.rate, 1.0), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class _Sent:
    at: float = -1e18  # last looked at
    patched_at: float = -1e18
    body: dict[str, Any] = field(default_factory=dict)  # the entry as last sent, lastUpdateTime aside
    drops: dict[str, int] | None = None
    condition: dict[str, Any] | None = None


class StatusReporter:
    """Patches ``status.captureNodes.<node>`` of each session this node has written."""

    def __init__(
        self,
        watcher: KubeWatcher,
        node: str,
        collect: Callable[[], tuple[dict[str, SessionCounts], int, NodeDrops]],
        *,
        interval_s: float = 30.0,
        heartbeat_s: float = 600.0,
        patches_per_second: float = 5.0,
    ) -> None:
        self.watcher = watcher
        self.node = node
        self.collect = collect
        self.interval_s = interval_s
        self.heartbeat_s = heartbeat_s
        self.budget = _Budget(patches_per_second)
        self.since = _now()
        self.sent: dict[str, _Sent] = {}
        self.patches = 0
        self.failures = 0
        self.stop = threading.Event()
        self._forbidden_logged = False

    def run(self) -> None:
        while not self.stop.wait(min(self.interval_s, 1.0)):
            with contextlib.suppress(Exception):
                self.report_once()

    def report_once(self, force: bool = False, deadline: float | None = None) -> int:
        """One pass over the sessions; returns how many patches were sent. ``force`` ignores the
        interval (the final report at shutdown), ``deadline`` (monotonic) bounds the pass."""
        sessions, socket, node = self.collect()
        sent = 0
        now_mono = time.monotonic()
        for key, counts in sorted(sessions.items()):
            namespace, _, name = key.partition("/")
            if not name or namespace.startswith("_"):
                continue  # unknown VNIs and the malformed stream have no MirrorSession
            prev = self.sent.setdefault(key, _Sent())
            if deadline is not None and time.monotonic() > deadline:
                break
            if not force and now_mono - prev.at < self.interval_s:
                continue
            drops = drops_of(counts, socket, node)
            now = _now()
            cond = lossy_condition(prev.drops, drops, prev.condition, now)
            body: dict[str, Any] = {"packets": counts.packets, "bytes": counts.bytes, "drops": drops}
            body.update(filteredOut=counts.filtered, since=self.since)
            if counts.files is not None:
                body["files"] = list(counts.files)
            same = prev.condition is not None and body == prev.body and cond["status"] == prev.condition["status"]
            if same and now_mono - prev.patched_at < self.heartbeat_s:
                prev.at = now_mono
                continue
            if not self.budget.take():
                break  # the rest wait for the next pass
            entry = {**body, "lastUpdateTime": now, "conditions": [cond]}
            if self._patch(namespace, name, entry):
                sent += 1
                prev.at = prev.patched_at = now_mono
                prev.body, prev.drops, prev.condition = body, drops, cond
        return sent

    def _patch(self, namespace: str, name: str, entry: dict[str, Any]) -> bool:
        w = self.watcher
        path = "/".join(urllib.parse.quote(p, safe="") for p in (namespace, PLURAL, name))
        url = f"{w.server}/apis/{GROUP}/{VERSION}/namespaces/{path}/status"
        data = json.dumps({"status": {"captureNodes": {self.node: entry}}}).encode()
        req = urllib.request.Request(
            url, data=data, method="PATCH", headers={"Content-Type": "application/merge-patch+json"}
        )
        if w.token_file:
            with open(w.token_file) as f:
                req.add_header("Authorization", f"Bearer {f.read().strip()}")
        self.patches += 1
        try:
            with urllib.request.urlopen(req, timeout=10, context=w.ctx) as resp:
                resp.read()
            return True
        except urllib.error.HTTPError as exc:
            self.failures += 1
            if exc.code == 404:
                return True  # the session is gone: nothing to report to
            if exc.code == 403 and not self._forbidden_logged:
                self._forbidden_logged = True
                log.warning("may not patch mirrorsessions/status (RBAC): capture statistics stay in metrics only")
            elif exc.code != 403:
                log.warning("status patch of %s/%s failed: HTTP %d", namespace, name, exc.code)
            return False
        except OSError as exc:
            self.failures += 1
            log.warning("status patch of %s/%s failed: %s", namespace, name, exc)
            return False


def collector(state: Any) -> Callable[[], tuple[dict[str, SessionCounts], int, NodeDrops]]:
    """Counters from the agent's state (the workers' latest snapshots and the node sampler), and
    for a Completed session where its files are."""

    def collect() -> tuple[dict[str, SessionCounts], int, NodeDrops]:
        with state.lock:
            snaps = [dict(v) for v in state.workers.values()]
            completed = set(state.completed)
            shipped = {k: list(v) for k, v in state.files.items() if k in completed}
        sessions: dict[str, SessionCounts] = {}
        socket = 0
        for snap in snaps:
            socket += int(snap.get("kernel_drops", 0))
            for key, st in snap.get("sessions", {}).items():
                c = sessions.get(key, SessionCounts())
                sessions[key] = SessionCounts(
                    c.packets + int(st.get("packets", 0)),
                    c.bytes + int(st.get("bytes", 0)),
                    c.disk + int(st.get("dropped", 0)),
                    c.filtered + int(st.get("filtered", 0)),
                )
        for key in completed & set(sessions):
            namespace, _, name = key.partition("/")
            waiting = state.spooled(namespace, name) if state.spooled is not None else []
            files = shipped.get(key, []) + waiting
            if files:
                c = sessions[key]
                sessions[key] = SessionCounts(c.packets, c.bytes, c.disk, c.filtered, tuple(files))
        return sessions, socket, state.node_drops.since_start()

    return collect
