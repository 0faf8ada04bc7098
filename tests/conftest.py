"""Session-wide test bed: a real kube-apiserver + etcd with our CRDs installed."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from trafficmirror_testbed.kube import REPO_ROOT, ControlPlane, testbed_bin_dir
from trafficmirror_testbed.node import controller_manager_command, node_bin_dir

CRD_DIR = REPO_ROOT / "crds"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(bin_dir=testbed_bin_dir(), work_dir=tmp_path_factory.mktemp("kube"))
    plane.start()
    controller_manager: subprocess.Popen[bytes] | None = None
    try:
        plane.kubectl("apply", "--server-side", "-f", str(CRD_DIR))
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        # The namespace controller (and the garbage collector): deleted namespaces finish deleting. Started once the
        # CRDs are served: a garbage collector started before them cannot map their kinds until its next discovery
        # (30 s), and the owned objects of a custom resource (a child session's generated filter) would wait.
        command = controller_manager_command(plane, node_bin_dir(), "namespace-controller,garbage-collector-controller")
        log = (plane.work_dir / "kube-controller-manager.log").open("ab")
        controller_manager = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        yield plane
    finally:
        if controller_manager is not None:
            controller_manager.terminate()
            controller_manager.wait(timeout=30)
        plane.stop()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, so tests never see each other's objects."""
    readable = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    # The hash keeps parametrized cases apart and a name never comes back while its namespace finishes deleting.
    digest = hashlib.sha1(f"{request.node.nodeid}-{os.getpid()}".encode()).hexdigest()[:8]
    name = f"t-{readable}-{digest}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    # The namespace controller deletes what is in it; a running operator's finalizers clean up AWS first.
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
    # Pods on the test bed's nodes have no kubelet to confirm a graceful end: they would hold the
    # namespace for good. A terminating namespace takes no new pods, so these are the last.
    control_plane.kubectl("delete", "pods", "--all", "-n", name, "--grace-period=0", "--force", check=False)
    control_plane.kubectl("wait", "--for=delete", f"namespace/{name}", "--timeout=60s", check=False)


def kubectl_output(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout or "") + (result.stderr or "")


__all__ = ["CRD_DIR", "Path", "kubectl_output"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-seed",
        type=int,
        default=None,
        help="replay tests/integration/test_chaos.py with this seed (or set TRAFFICMIRROR_CHAOS_SEED)",
    )
