"""Each capture node's entry in MirrorSession status, on a real kube-apiserver (the test bed):
nodes never overwrite each other nor the operator's fields, Lossy follows the drops, patches
are rate-limited and none is sent at steady state."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from frames import ipv4_udp
from netbed import NOBODY, PYTHON

from trafficmirror.capture import vxlan
from trafficmirror.capture.lossstats import NodeDrops
from trafficmirror.capture.report import SessionCounts, StatusReporter
from trafficmirror.capture.sessions import KubeWatcher
from trafficmirror_testbed.kube import ControlPlane, free_port

pytestmark = pytest.mark.testbed

ENI = "eni-0123456789abcdef0"


class Counters:
    """What a node's agent would collect; the test moves the numbers."""

    def __init__(self) -> None:
        self.sessions: dict[str, SessionCounts] = {}
        self.socket = 0
        self.node = NodeDrops()
        self.lock = threading.Lock()

    def __call__(self) -> tuple[dict[str, SessionCounts], int, NodeDrops]:
        with self.lock:
            return dict(self.sessions), self.socket, self.node


def _session(plane: ControlPlane, namespace: str, name: str) -> None:
    manifest = {
        "apiVersion": "trafficmirror.io/v1alpha1",
        "kind": "MirrorSession",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"source": {"networkInterfaceId": ENI}, "targetRef": {"name": "t"}, "filterRef": {"name": "f"}},
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def _status(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    obj = json.loads(plane.kubectl("get", "mirrorsession", name, "-n", namespace, "-o", "json").stdout)
    return obj.get("status", {})  # type: ignore[no-any-return]


def _operator_patch(plane: ControlPlane, namespace: str, name: str, i: int) -> None:
    """What the operator writes (kopf merges its own status keys)."""
    status = {
        "phase": "Ready",
        "observedGeneration": i,
        "virtualNetworkId": 7,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": f"pass {i}"}],
    }
    plane.kubectl(
        "patch", "mirrorsession", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def _reporter(plane: ControlPlane, tmp_path: Path, node: str, counters: Counters, **kw: Any) -> StatusReporter:
    token = tmp_path / "token"
    token.write_text(plane.admin_token)
    watcher = KubeWatcher(lambda _m: None, server=plane.url, token_file=str(token), ca_file=str(plane.ca_file))
    return StatusReporter(watcher, node, counters, **kw)


def test_two_nodes_and_the_operator_write_one_session_without_overwriting_each_other(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    _session(control_plane, namespace, "web")
    key = f"{namespace}/web"
    rng = random.Random(9)
    nodes = {n: Counters() for n in ("node-a", "node-b")}
    reporters = {
        n: _reporter(control_plane, tmp_path, n, c, interval_s=0, patches_per_second=1000) for n, c in nodes.items()
    }

    def node_loop(n: str) -> None:
        c, r = nodes[n], reporters[n]
        for _ in range(15):
            with c.lock:
                old = c.sessions.get(key, SessionCounts())
                c.sessions[key] = SessionCounts(old.packets + rng.randint(1, 1000), old.bytes + 100, old.disk)
            r.report_once()

    threads = [threading.Thread(target=node_loop, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for i in range(10):
        _operator_patch(control_plane, namespace, "web", i)
    for t in threads:
        t.join()

    status = _status(control_plane, namespace, "web")
    assert status["phase"] == "Ready" and status["conditions"][0]["message"] == "pass 9"
    assert set(status["captureNodes"]) == {"node-a", "node-b"}
    for n, c in nodes.items():
        entry = status["captureNodes"][n]
        assert entry["packets"] == c.sessions[key].packets  # the last patch of each node, intact
        assert entry["drops"] == {
            "disk": 0, "socket": 0, "softnet": 0, "nic": 0, "udpRcvbufErrors": 0, "udpInErrors": 0,
        }  # fmt: skip
        (lossy,) = entry["conditions"]
        assert (lossy["type"], lossy["status"], lossy["reason"]) == ("Lossy", "False", "NoDrops")
        assert reporters[n].failures == 0


def test_lossy_follows_the_drops_by_layer_and_says_whose_they_are(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    _session(control_plane, namespace, "api")
    key = f"{namespace}/api"
    c = Counters()
    r = _reporter(control_plane, tmp_path, "node-a", c, interval_s=0)

    def lossy() -> dict[str, Any]:
        r.report_once()
        (cond,) = _status(control_plane, namespace, "api")["captureNodes"]["node-a"]["conditions"]
        return cond  # type: ignore[no-any-return]

    c.sessions[key] = SessionCounts(10, 1000, 0)
    first = lossy()
    assert first["status"] == "False"
    c.sessions[key] = SessionCounts(20, 2000, 9003)  # a full disk: this session's own packets
    cond = lossy()
    assert (cond["status"], cond["reason"]) == ("True", "WriteErrors") and "disk=9003" in cond["message"]
    c.socket = 5
    cond = lossy()
    assert (cond["status"], cond["reason"]) == ("True", "SocketOverflow") and "shared" in cond["message"]
    c.node = NodeDrops(nic=3, softnet=2)
    cond = lossy()
    assert (cond["status"], cond["reason"]) == ("True", "NodeDrops") and "node-wide" in cond["message"]
    c.sessions[key] = SessionCounts(30, 3000, 9003)
    cond = lossy()
    assert (cond["status"], cond["reason"]) == ("False", "NoDrops")
    entry = _status(control_plane, namespace, "api")["captureNodes"]["node-a"]
    assert entry["drops"] == {"disk": 9003, "socket": 5, "softnet": 2, "nic": 3, "udpRcvbufErrors": 0, "udpInErrors": 0}


def test_patches_are_rate_limited_and_none_is_sent_at_steady_state(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    names = [f"s{i}" for i in range(6)]
    for name in names:
        _session(control_plane, namespace, name)
    c = Counters()
    c.sessions = {f"{namespace}/{n}": SessionCounts(1, 1, 0) for n in names}
    c.sessions["_unknown/vni-5"] = SessionCounts(1, 1, 0)  # no MirrorSession: never patched
    c.sessions[f"{namespace}/gone"] = SessionCounts(1, 1, 0)  # deleted meanwhile: a 404, not a retry loop

    budgeted = _reporter(control_plane, tmp_path, "node-a", c, interval_s=0, patches_per_second=2)
    assert budgeted.report_once() == 2  # the budget, not the session count, bounds a burst

    r = _reporter(control_plane, tmp_path, "node-b", c, interval_s=0, patches_per_second=1000)
    r.report_once()
    assert r.patches == len(names) + 1  # each session once, and the deleted one once
    for name in names:
        assert _status(control_plane, namespace, name)["captureNodes"]["node-b"]["packets"] == 1
    for _ in range(3):  # nothing changed: nothing sent
        assert r.report_once() == 0
    assert r.patches == len(names) + 1

    slow = _reporter(control_plane, tmp_path, "node-c", c, interval_s=3600)
    slow.report_once()
    sent = slow.patches
    c.sessions = {k: SessionCounts(v.packets + 1, v.bytes, v.disk) for k, v in c.sessions.items()}
    assert slow.report_once() == 0 and slow.patches == sent  # within the interval: held back


def test_the_agent_reports_what_it_wrote_into_the_sessions_status(control_plane: ControlPlane, namespace: str) -> None:
    """The agent as a process (as nobody, no capabilities) with --kube: it learns the VNI from
    the MirrorSession, writes the mirrored packets, and its node's entry says so."""
    _session(control_plane, namespace, "e2e")
    control_plane.kubectl(
        "patch", "mirrorsession", "e2e", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"virtualNetworkId": 4242, "phase": "Ready"}}),
    )  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="tm-report-", dir="/tmp"))
    os.chmod(work, 0o755)
    try:
        (work / "token").write_text(control_plane.admin_token)
        shutil.copy(control_plane.ca_file, work / "ca.crt")
        for sub in ("work", "out"):
            (work / sub).mkdir()
        for p in work.iterdir():
            os.chown(p, NOBODY, NOBODY)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        metrics_port = free_port()
        cmd = [
            "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", PYTHON, "-m", "trafficmirror.capture", "agent",
            "--address", "127.0.0.1", "--port", str(port), "--metrics-address", "127.0.0.1",
            "--metrics-port", str(metrics_port), "--work-dir", str(work / "work"), "--output-dir", str(work / "out"),
            "--node", "node-e2e", "--no-fsync", "--kube", "--kube-server", control_plane.url,
            "--kube-token-file", str(work / "token"), "--kube-ca-file", str(work / "ca.crt"),
            "--kube-namespace", namespace, "--status-interval", "0.5",
        ]  # fmt: skip
        env = {"PATH": os.environ["PATH"], "HOME": "/tmp", "PYTHONUNBUFFERED": "1"}
        with open(work / "agent.log", "w") as log:
            agent = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:

            def sessions_known() -> float:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
                        text = r.read().decode()
                except OSError:
                    return 0
                lines = [ln for ln in text.splitlines() if ln.startswith("trafficmirror_capture_sessions ")]
                return float(lines[0].split()[1]) if lines else 0

            end = time.monotonic() + 60
            while sessions_known() < 1 and time.monotonic() < end:  # the watch has the VNI
                assert agent.poll() is None, (work / "agent.log").read_text()
                time.sleep(0.2)
            frames = [ipv4_udp("10.0.0.1", "10.0.0.2", 1, 2, b"e2e%04d" % i) for i in range(300)]
            entry: dict[str, Any] = {}
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                for f in frames:
                    tx.sendto(vxlan.header(4242) + f, ("127.0.0.1", port))
                while time.monotonic() < end:
                    entry = _status(control_plane, namespace, "e2e").get("captureNodes", {}).get("node-e2e", {})
                    if entry.get("packets") == len(frames):
                        break
                    time.sleep(0.3)
            assert entry.get("packets") == len(frames), (entry, (work / "agent.log").read_text()[-3000:])
            assert entry["drops"]["disk"] == 0 and entry["drops"]["socket"] == 0
            (lossy,) = entry["conditions"]
            assert lossy["type"] == "Lossy"
            status = _status(control_plane, namespace, "e2e")
            assert status["phase"] == "Ready" and status["virtualNetworkId"] == 4242  # the operator's, untouched
        finally:
            agent.terminate()
            assert agent.wait(60) == 0, (work / "agent.log").read_text()[-3000:]
    finally:
        shutil.rmtree(work, ignore_errors=True)
