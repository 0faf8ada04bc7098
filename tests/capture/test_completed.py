"""A Completed session on a real kube-apiserver (the test bed): the agent closes its files, ships
them, and lists where they are in ``status.captureNodes.<node>.files``; a file whose upload
fails stays in the node's spool and is listed there."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from frames import ipv4_udp
from netbed import NOBODY, PYTHON
from test_status_report import _session, _status

from trafficmirror.capture import pcapng, vxlan
from trafficmirror_testbed.kube import ControlPlane, free_port

pytestmark = pytest.mark.testbed

VNI = 4343


def _metric(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return 0
    lines = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    return float(lines[0].split()[1]) if lines else 0


def _patch_status(plane: ControlPlane, namespace: str, status: dict[str, Any], name: str = "done") -> None:
    plane.kubectl(
        "patch", "mirrorsession", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def test_a_completed_sessions_files_are_closed_shipped_and_listed_in_its_status(
    control_plane: ControlPlane, namespace: str
) -> None:
    _session(control_plane, namespace, "done")
    _patch_status(control_plane, namespace, {"virtualNetworkId": VNI, "phase": "Ready"})
    work = Path(tempfile.mkdtemp(prefix="tm-completed-", dir="/tmp"))
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
        dead_s3 = f"http://127.0.0.1:{free_port()}"  # nothing listens: every upload fails
        metrics_port = free_port()
        cmd = [
            "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", PYTHON, "-m", "trafficmirror.capture", "agent",
            "--address", "127.0.0.1", "--port", str(port), "--metrics-address", "127.0.0.1",
            "--metrics-port", str(metrics_port), "--work-dir", str(work / "work"), "--output-dir", str(work / "out"),
            "--s3-bucket", "captures", "--s3-endpoint-url", dead_s3, "--s3-region", "us-east-1",
            "--rotate-interval", "0", "--node", "node-done", "--no-fsync", "--kube", "--kube-server", control_plane.url,
            "--kube-token-file", str(work / "token"), "--kube-ca-file", str(work / "ca.crt"),
            "--kube-namespace", namespace, "--status-interval", "0.5",
        ]  # fmt: skip
        env = {
            "PATH": os.environ["PATH"],
            "HOME": "/tmp",
            "PYTHONUNBUFFERED": "1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        with open(work / "agent.log", "w") as log:
            agent = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            end = time.monotonic() + 90
            while _metric(metrics_port, "trafficmirror_capture_sessions") < 1 and time.monotonic() < end:
                assert agent.poll() is None, (work / "agent.log").read_text()
                time.sleep(0.2)
            frames = [ipv4_udp("10.0.0.1", "10.0.0.2", 1, 2, b"done%04d" % i) for i in range(200)]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                for f in frames:
                    tx.sendto(vxlan.header(VNI) + f, ("127.0.0.1", port))
            written = f'trafficmirror_capture_packets_total{{namespace="{namespace}",session="done"}}'
            while _metric(metrics_port, written) < len(frames) and time.monotonic() < end:
                time.sleep(0.2)
            assert not list((work / "out").rglob("*.pcapng"))  # still open: no rotation by time or size
            _patch_status(control_plane, namespace, {"phase": "Completed"})
            entry: dict[str, Any] = {}
            while time.monotonic() < end:
                entry = _status(control_plane, namespace, "done").get("captureNodes", {}).get("node-done", {})
                if len(entry.get("files", [])) == 2:
                    break
                time.sleep(0.3)
            files = entry.get("files", [])
            assert len(files) == 2, (entry, (work / "agent.log").read_text()[-3000:])
            shipped = [f for f in files if f.startswith(str(work / "out"))]
            spooled = [f for f in files if f.startswith(str(work / "work" / "spool"))]
            assert len(shipped) == 1 and len(spooled) == 1, files  # S3 failed: the file waits in the spool
            for path in (shipped[0], spooled[0]):
                assert [p.data for p in pcapng.read_file(path).packets] == frames  # closed, whole
            assert not list((work / "work" / "open").rglob("*.part"))
            assert entry["packets"] == len(frames) and entry["filteredOut"] == 0
            assert _status(control_plane, namespace, "done")["phase"] == "Completed"  # the operator's, untouched
        finally:
            agent.terminate()
            rc = agent.wait(60)
        assert rc in (0, 2), (work / "agent.log").read_text()[-3000:]  # 2: a file still spooled at exit (S3)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_a_completed_pod_selector_session_lists_each_pods_files_and_children_are_not_read(
    control_plane: ControlPlane, namespace: str
) -> None:
    """A podSelector session as the operator writes it (status.sources[], one child MirrorSession
    per ENI labelled with its parent): the agent maps the parent's source VNI, never the child's
    own, splits by pod, counts the rest as filtered out in the node's entry, and on Completed
    lists each pod's closed file."""
    a, b, x, peer = "10.1.0.1", "10.1.0.3", "10.1.0.9", "10.1.0.2"
    parent = {
        "apiVersion": "trafficmirror.io/v1alpha1",
        "kind": "MirrorSession",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "source": {"podSelector": {"matchLabels": {"app": "web"}}},
            "capture": {"files": "perPod"},
            "targetRef": {"name": "t"},
            "filterRef": {"name": "f"},
        },
    }
    child = {
        "apiVersion": "trafficmirror.io/v1alpha1",
        "kind": "MirrorSession",
        "metadata": {
            "name": "web-0a1b2c3d",
            "namespace": namespace,
            "labels": {"trafficmirror.io/parent-session": "web"},
        },
        "spec": {
            "source": {"networkInterfaceId": "eni-0aaaaaaaaaaaaaaa1"},
            "targetRef": {"name": "t"},
            "filterRef": {"name": "f"},
        },
    }
    for obj in (parent, child):
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(obj))
    pods = [{"namespace": namespace, "name": "web-1", "ip": a}, {"namespace": namespace, "name": "web-2", "ip": b}]
    source = {
        "networkInterfaceId": "eni-0aaaaaaaaaaaaaaa1",
        "nodeName": "node-1",
        "pods": pods,
        "sessionName": "web-0a1b2c3d",
        "virtualNetworkId": VNI,
        "sourceAddresses": ["127.0.0.1"],
        "state": "Mirroring",
    }
    _patch_status(control_plane, namespace, {"phase": "Ready", "sources": [source]}, "web")
    # The child's own VNI (the same ENI's AWS session, as the operator records it on the child).
    _patch_status(control_plane, namespace, {"phase": "Ready", "virtualNetworkId": VNI + 1}, "web-0a1b2c3d")
    work = Path(tempfile.mkdtemp(prefix="tm-completed-", dir="/tmp"))
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
            "--rotate-interval", "0", "--node", "node-done", "--no-fsync", "--kube", "--kube-server", control_plane.url,
            "--kube-token-file", str(work / "token"), "--kube-ca-file", str(work / "ca.crt"),
            "--kube-namespace", namespace, "--status-interval", "0.5",
        ]  # fmt: skip
        env = {"PATH": os.environ["PATH"], "HOME": "/tmp", "PYTHONUNBUFFERED": "1"}
        with open(work / "agent.log", "w") as log:
            agent = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            end = time.monotonic() + 90
            while _metric(metrics_port, "trafficmirror_capture_sessions") < 1 and time.monotonic() < end:
                assert agent.poll() is None, (work / "agent.log").read_text()
                time.sleep(0.2)
            assert _metric(metrics_port, "trafficmirror_capture_sessions") == 1  # the parent's source only
            pairs = [(a, peer), (peer, b), (a, b), (x, peer)]
            frames = [ipv4_udp(*pairs[i % 4], 1, 2, b"web%04d" % i) for i in range(400)]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                for f in frames:
                    tx.sendto(vxlan.header(VNI) + f, ("127.0.0.1", port))
                for f in frames[:50]:  # on the child's own VNI: nobody's, refused as unknown
                    tx.sendto(vxlan.header(VNI + 1) + f, ("127.0.0.1", port))
            seen = "trafficmirror_capture_datagrams_total"
            while _metric(metrics_port, seen) < len(frames) + 50 and time.monotonic() < end:
                time.sleep(0.2)
            _patch_status(control_plane, namespace, {"phase": "Completed"}, "web")
            entry: dict[str, Any] = {}
            # A closed file waiting in the spool is listed where it waits, then where it was shipped:
            # this test reads the shipped ones (the spool's copy is gone once shipped).
            shipped = str(work / "out") + "/"
            while time.monotonic() < end:
                entry = _status(control_plane, namespace, "web").get("captureNodes", {}).get("node-done", {})
                files = entry.get("files", [])
                if len(files) == 2 and all(f.startswith(shipped) for f in files):
                    break
                time.sleep(0.3)
            files = entry.get("files", [])
            assert len(files) == 2 and all(f.startswith(shipped) for f in files), (
                entry,
                (work / "agent.log").read_text()[-3000:],
            )
            assert entry["packets"] == 300 and entry["filteredOut"] == 100  # a->b counted once
            by_pod = {Path(f).parent.name: f for f in entry["files"]}
            assert set(by_pod) == {f"{namespace}_web-1", f"{namespace}_web-2"}
            for pod_dir, ip in ((f"{namespace}_web-1", a), (f"{namespace}_web-2", b)):
                cap = pcapng.read_file(by_pod[pod_dir])
                expected = [f for f in frames if socket.inet_aton(ip) in (f[26:30], f[30:34])]
                assert [p.data for p in cap.packets] == expected and len(expected) == 200
                assert f"pod=web-{pod_dir[-1]}" in cap.interfaces[0].description.split()
            assert "captureNodes" not in _status(control_plane, namespace, "web-0a1b2c3d")
            unknown = 'trafficmirror_capture_malformed_total{reason="unknown_vni"}'
            assert _metric(metrics_port, unknown) == 50
        finally:
            agent.terminate()
            rc = agent.wait(60)
        assert rc == 0, (work / "agent.log").read_text()[-3000:]
    finally:
        shutil.rmtree(work, ignore_errors=True)
