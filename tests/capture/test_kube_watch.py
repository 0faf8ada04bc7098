"""The VNI map from a read-only watch of MirrorSessions on a real kube-apiserver (the test bed)."""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path

import pytest

from trafficmirror.capture.sessions import KubeWatcher, Session
from trafficmirror_testbed.kube import ControlPlane

pytestmark = pytest.mark.testbed

ENI = "eni-0123456789abcdef0"


def _next(maps: queue.Queue[dict[int, Session]]) -> dict[int, Session]:
    return maps.get(timeout=20)


def test_watch_follows_vni_assignment_change_and_deletion(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(control_plane.admin_token)
    maps: queue.Queue[dict[int, Session]] = queue.Queue()
    w = KubeWatcher(
        maps.put,
        server=control_plane.url,
        token_file=str(token),
        ca_file=str(control_plane.ca_file),
        namespace=namespace,
    )
    threading.Thread(target=w.run, daemon=True).start()
    try:
        assert _next(maps) == {}
        assert w.ready.wait(5)
        manifest = {
            "apiVersion": "trafficmirror.io/v1alpha1",
            "kind": "MirrorSession",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {
                "source": {"networkInterfaceId": ENI},
                "targetRef": {"name": "t"},
                "filterRef": {"name": "f"},
            },
        }
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        # No VNI yet (the operator has not created the AWS session): nothing to map.
        control_plane.kubectl(
            "patch",
            "mirrorsession",
            "web",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"virtualNetworkId": 12388352, "sourceNetworkInterfaceId": ENI}}),
        )
        assert _next(maps) == {12388352: Session(namespace, "web", 12388352, ENI)}
        control_plane.kubectl(
            "patch",
            "mirrorsession",
            "web",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"virtualNetworkId": 7}}),
        )
        assert _next(maps) == {7: Session(namespace, "web", 7, ENI)}
        control_plane.kubectl("delete", "mirrorsession", "web", "-n", namespace)
        assert _next(maps) == {}
    finally:
        w.stop.set()


def test_watch_skips_children_and_drops_a_completed_session(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """A selector session's children (labelled with their parent) are the parent's business: the
    agent maps the parent's status.sources[], never a child's own VNI. A Completed session leaves
    the map (its files close) and is remembered as completed (its files are then listed)."""
    token = tmp_path / "token"
    token.write_text(control_plane.admin_token)
    maps: queue.Queue[dict[int, Session]] = queue.Queue()
    w = KubeWatcher(
        maps.put,
        server=control_plane.url,
        token_file=str(token),
        ca_file=str(control_plane.ca_file),
        namespace=namespace,
    )
    threading.Thread(target=w.run, daemon=True).start()
    try:
        assert _next(maps) == {}
        for name, labels in (("web-0a1b2c3d", {"trafficmirror.io/parent-session": "web"}), ("plain", {})):
            manifest = {
                "apiVersion": "trafficmirror.io/v1alpha1",
                "kind": "MirrorSession",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": {"source": {"networkInterfaceId": ENI}, "targetRef": {"name": "t"}, "filterRef": {"name": "f"}},
            }
            control_plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        for name, vni in (("web-0a1b2c3d", 11), ("plain", 12)):
            control_plane.kubectl(
                "patch", "mirrorsession", name, "-n", namespace, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": {"virtualNetworkId": vni, "phase": "Ready"}}),
            )  # fmt: skip
        assert _next(maps) == {12: Session(namespace, "plain", 12)}  # the child's VNI 11 never shows
        control_plane.kubectl(
            "patch", "mirrorsession", "plain", "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"phase": "Completed"}}),
        )  # fmt: skip
        assert _next(maps) == {}
        assert w.completed == {f"{namespace}/plain"}
        assert maps.empty()
    finally:
        w.stop.set()
