"""The users' RBAC of the chart, with kube-controller-manager's ClusterRole aggregation running: a user bound
to the built-in edit role can capture with `trafficmirror capture`, and reads capture files only once bound to
trafficmirror-pcap-reader in the agent's namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chart.conftest import RELEASE, Release, service_account_kubeconfig
from tests.integration.conftest import Cluster, OperatorProcess, fresh_instance
from trafficmirror.kubecapture import plan
from trafficmirror.kubecapture.podfiles import AGENT_SELECTOR
from trafficmirror_testbed.kube import ControlPlane
from trafficmirror_testbed.node import controller_manager_command, node_bin_dir
from trafficmirror_testbed.seed import World

pytestmark = [pytest.mark.testbed, pytest.mark.emulator]

CAPTURE_EDIT = f"{RELEASE}-capture-edit"
PCAP_READER = f"{RELEASE}-pcap-reader"


@pytest.fixture(scope="module")
def aggregation(control_plane: ControlPlane, release: Release) -> Iterator[None]:
    """kube-controller-manager's clusterrole-aggregation controller: what fills edit, admin and view."""
    command = controller_manager_command(control_plane, node_bin_dir(), "clusterrole-aggregation-controller")
    log = (control_plane.work_dir / "kube-controller-manager-aggregation.log").open("ab")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not _grants(control_plane, "edit", "mirrorsessions", "create"):
            time.sleep(0.5)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def _grants(plane: ControlPlane, role: str, resource: str, verb: str) -> bool:
    rules = json.loads(plane.kubectl("get", "clusterrole", role, "-o", "json").stdout).get("rules") or []
    return any(
        "trafficmirror.io" in r.get("apiGroups", [])
        and resource in r.get("resources", [])
        and verb in r.get("verbs", [])
        for r in rules
    )


def _can(plane: ControlPlane, user: str, verb: str, resource: str, namespace: str) -> bool:
    """`pods/exec` is the exec subresource of pods (kubectl would read it as the pod named exec)."""
    resource, _, sub = resource.partition("/")
    subresource = [f"--subresource={sub}"] if sub else []
    answer = plane.kubectl(
        "auth", "can-i", verb, resource, *subresource, "-n", namespace, f"--as={user}", check=False
    ).stdout.strip()
    assert answer in ("yes", "no")
    return answer == "yes"


def test_the_capture_role_is_aggregated_into_edit_and_view_and_nothing_into_pcaps(
    control_plane: ControlPlane, release: Release, aggregation: None
) -> None:
    for verb in ("create", "delete", "get", "list", "watch", "patch"):
        assert _grants(control_plane, "edit", "mirrorsessions", verb) and _grants(
            control_plane, "edit", "mirrorfilters", verb
        )
    assert _grants(control_plane, "edit", "mirrortargets", "list")
    assert not _grants(control_plane, "edit", "mirrortargets", "create")  # targets are the cluster admin's
    assert _grants(control_plane, "admin", "mirrorsessions", "create")  # admin aggregates edit
    assert _grants(control_plane, "view", "mirrorsessions", "list") and not _grants(
        control_plane, "view", "mirrorsessions", "create"
    )
    reader = json.loads(control_plane.kubectl("get", "clusterrole", PCAP_READER, "-o", "json").stdout)
    assert not any(k.startswith("rbac.authorization.k8s.io/aggregate") for k in reader["metadata"].get("labels", {}))
    assert sorted((tuple(r["resources"]), tuple(r["verbs"])) for r in reader["rules"]) == [
        (("pods",), ("get", "list")),
        (("pods/exec",), ("get", "create")),
    ]


@pytest.fixture
def user(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> tuple[str, Path]:
    """A ServiceAccount standing in for a user, bound to the built-in edit role in the test namespace only."""
    control_plane.kubectl("create", "serviceaccount", "alice", "-n", namespace)
    control_plane.kubectl(
        "create",
        "rolebinding",
        "alice-edit",
        "-n",
        namespace,
        "--clusterrole=edit",
        f"--serviceaccount={namespace}:alice",
    )
    return f"system:serviceaccount:{namespace}:alice", service_account_kubeconfig(
        control_plane, namespace, "alice", tmp_path / "alice.kubeconfig"
    )


def _capture_as(kubeconfig: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return subprocess.Popen(
        [sys.executable, "-m", "trafficmirror.cli", "capture", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _session_of_run(control_plane: ControlPlane, namespace: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = json.loads(
            control_plane.kubectl(
                "get",
                "mirrorsessions",
                "-n",
                namespace,
                "-l",
                f"{plan.CREATED_BY_LABEL}={plan.CREATED_BY}",
                "-o",
                "json",
            ).stdout
        )["items"]
        if items and (items[0].get("status") or {}).get("phase") == "Ready":
            found: dict[str, Any] = items[0]
            return found
        time.sleep(0.3)
    raise AssertionError("the capture's session never became Ready")


def _agent_lists_a_file(control_plane: ControlPlane, namespace: str, session: dict[str, Any]) -> str:
    """Standing in for the capture agent on capture-node (no agent runs here): its entry in the session's
    status, with a file kept on the node."""
    name = session["metadata"]["name"]
    path = f"/var/lib/trafficmirror/captures/{namespace}/{name}/capture-node-20261130T080000.000Z-1.pcapng"
    entry = {"captureNodes": {"capture-node": {"packets": 12, "bytes": 3400, "files": [path]}}}
    control_plane.kubectl(
        "patch",
        "mirrorsession",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": entry}),
    )
    return path


@pytest.fixture
def agent_pod(control_plane: ControlPlane, release: Release) -> Iterator[str]:
    """A capture agent pod on capture-node, Running (set by the test, standing in for the kubelet)."""
    labels = dict(kv.split("=") for kv in AGENT_SELECTOR.split(","))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "agent-on-capture-node", "namespace": release.namespace, "labels": labels},
        "spec": {"nodeName": "capture-node", "containers": [{"name": "capture", "image": "trafficmirror:test"}]},
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(pod))
    control_plane.kubectl(
        "patch", "pod", "agent-on-capture-node", "-n", release.namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"phase": "Running"}}),
    )  # fmt: skip
    yield "agent-on-capture-node"
    control_plane.kubectl(
        "delete", "pod", "agent-on-capture-node", "-n", release.namespace, "--grace-period=0", "--force", check=False
    )


def test_a_user_with_edit_captures_and_reads_pcaps_only_with_the_pcap_reader_role(
    control_plane: ControlPlane,
    release: Release,
    aggregation: None,
    chart_operator: OperatorProcess,
    chart_cluster: Cluster,
    namespace: str,
    user: tuple[str, Path],
    agent_pod: str,
    ec2: Any,
    world: World,
) -> None:
    who, kubeconfig = user
    chart_cluster.apply(
        {"kind": "MirrorTarget", "metadata": {"name": "capture"}, "spec": {"networkInterfaceId": world.eni("capture")}}
    )
    chart_cluster.wait_phase("mirrortarget", "capture", "Ready", timeout=90)
    instance, _eni = fresh_instance(ec2, world)
    node = f"src-{namespace[-8:]}"
    control_plane.kubectl(
        "apply", "-f", "-",
        input=json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}, "spec": {"providerID": f"aws:///us-east-1a/{instance}"}}),
    )  # fmt: skip
    assert _can(control_plane, who, "create", "mirrorsessions.trafficmirror.io", namespace)
    assert not _can(control_plane, who, "create", "mirrortargets.trafficmirror.io", namespace)
    assert not _can(control_plane, who, "create", "pods/exec", release.namespace)
    assert not _can(control_plane, who, "list", "pods", release.namespace)

    for bound in (False, True):
        if bound:
            control_plane.kubectl(
                "create", "rolebinding", f"alice-pcaps-{namespace[-8:]}", "-n", release.namespace,
                f"--clusterrole={PCAP_READER}", f"--serviceaccount={namespace}:alice",
            )  # fmt: skip
            assert _can(control_plane, who, "create", "pods/exec", release.namespace)
            assert not _can(control_plane, who, "create", "pods/exec", "default")  # only where the agents run
        run = _capture_as(
            kubeconfig, f"node/{node}", "-n", namespace, "--for", "15s", "--agent-namespace", release.namespace
        )
        session = _session_of_run(control_plane, namespace)
        assert session["spec"]["source"] == {"nodeName": node}
        _agent_lists_a_file(control_plane, namespace, session)
        _, stderr = run.communicate(timeout=240)
        # Creating, waiting and deleting worked with edit alone; reading the file is what differs.
        assert "capturing node/" in stderr and "Completed" in stderr, stderr
        assert "deleted mirrorfilters/" in stderr or "still deleting" in stderr, stderr
        assert run.returncode == 1, stderr
        if not bound:
            assert "permission denied: cannot list pods" in stderr and PCAP_READER in stderr, stderr
        else:
            # Past authorization: the API server tried to reach the pod's node, which has no kubelet here.
            assert "permission denied" not in stderr and "forbidden" not in stderr.lower(), stderr
            assert "pods/exec" in stderr, stderr
        left = control_plane.kubectl("get", "mirrorsessions,mirrorfilters", "-n", namespace, "-o", "name").stdout
        assert left.strip() == "", left
