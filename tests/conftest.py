"""Session-wide test bed: a real kube-apiserver + etcd with our CRDs installed."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from trafficmirror_testbed.kube import REPO_ROOT, ControlPlane, testbed_bin_dir

CRD_DIR = REPO_ROOT / "crds"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(bin_dir=testbed_bin_dir(), work_dir=tmp_path_factory.mktemp("kube"))
    plane.start()
    try:
        plane.kubectl("apply", "--server-side", "-f", str(CRD_DIR))
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, so tests never see each other's objects."""
    readable = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    # The hash keeps parametrized cases apart; deleted namespaces linger (no controller-manager here).
    digest = hashlib.sha1(f"{request.node.nodeid}-{os.getpid()}".encode()).hexdigest()[:8]
    name = f"t-{readable}-{digest}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    # No controller-manager runs here, so deleting the namespace would not delete what is in it:
    # delete our objects first, so that a running operator cleans up AWS and stops seeing them.
    control_plane.kubectl(
        "delete",
        "-n",
        name,
        "mirrorsessions,mirrortargets,mirrorfilters",
        "--all",
        "--wait=true",
        "--timeout=60s",
        check=False,
    )
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


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
