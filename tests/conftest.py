"""Session-wide test bed: a real kube-apiserver + etcd with our CRDs installed."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from trafficmirror_testbed.kube import REPO_ROOT, ControlPlane, testbed_bin_dir
from trafficmirror_testbed.node import controller_manager_command, node_bin_dir

CRD_DIR = REPO_ROOT / "crds"


@contextlib.contextmanager
def controller_manager(plane: ControlPlane, controllers: str) -> Iterator[None]:
    """kube-controller-manager running only `controllers` against `plane`, for as long as the block runs."""
    command = controller_manager_command(plane, node_bin_dir(), controllers)
    with (plane.work_dir / "kube-controller-manager.log").open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(bin_dir=testbed_bin_dir(), work_dir=tmp_path_factory.mktemp("kube"))
    plane.start()
    try:
        plane.kubectl("apply", "--server-side", "-f", str(CRD_DIR))
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        # The namespace controller (and the garbage collector): deleted namespaces finish deleting. Started once the
        # CRDs are served: a garbage collector started before them cannot map their kinds until its next discovery
        # (30 s), and the owned objects of a custom resource (a child session's generated filter) would wait.
        with controller_manager(plane, "namespace-controller,garbage-collector-controller"):
            yield plane
    finally:
        plane.stop()


def create_test_namespace(plane: ControlPlane, request: pytest.FixtureRequest) -> str:
    """A fresh namespace named after the test, so tests never see each other's objects."""
    readable = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    # The hash keeps parametrized cases apart and a name never comes back while its namespace finishes deleting.
    digest = hashlib.sha1(f"{request.node.nodeid}-{os.getpid()}".encode()).hexdigest()[:8]
    name = f"t-{readable}-{digest}"
    plane.kubectl("create", "namespace", name)
    return name


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted and waited for afterwards."""
    name = create_test_namespace(control_plane, request)
    yield name
    # The namespace controller deletes what is in it; a running operator's finalizers clean up AWS first.
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
    # Pods on the test bed's nodes have no kubelet to confirm a graceful end: they would hold the
    # namespace for good. A terminating namespace takes no new pods, so these are the last.
    control_plane.kubectl("delete", "pods", "--all", "-n", name, "--grace-period=0", "--force", check=False)
    control_plane.kubectl("wait", "--for=delete", f"namespace/{name}", "--timeout=60s", check=False)


@pytest.fixture
def bare_namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test whose deletion is not waited for, for tests where no operator and no pod
    runs: nothing there carries a finalizer, and waiting for the namespace controller cost about 5 s a test."""
    name = create_test_namespace(control_plane, request)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def sigint_as_default() -> None:
    """For `preexec_fn` of a child that a test interrupts as Ctrl-C would: a shell starts background
    jobs with SIGINT ignored, an ignored signal stays ignored across exec, and Python then installs no
    KeyboardInterrupt handler. The test would be testing how it was started."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
