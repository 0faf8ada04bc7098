"""The Helm chart against the real test bed: its own apiserver (no CRDs until the chart installs them),
the AWS emulator, and the operator running with the chart's ServiceAccount token instead of admin."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import controller_manager
from tests.integration.conftest import Cluster, OperatorProcess, ec2, emulator, world
from trafficmirror_testbed.emulator import Emulator
from trafficmirror_testbed.kube import REPO_ROOT, ControlPlane, kubeconfig_text, testbed_bin_dir

CHART = REPO_ROOT / "charts" / "trafficmirror"
RELEASE = "trafficmirror"
RELEASE_NAMESPACE = "trafficmirror-system"
OPERATOR_SA = "trafficmirror-operator"
CAPTURE_SA = "trafficmirror-capture"

__all__ = ["ec2", "emulator", "world"]  # the integration fixtures, served here against this file's control plane


def helm(plane_or_bin: ControlPlane | Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm; against a control plane when one is given, else offline (template, lint)."""
    if isinstance(plane_or_bin, ControlPlane):
        command = [str(plane_or_bin.bin_dir / "helm"), "--kubeconfig", str(plane_or_bin.kubeconfig), *args]
    else:
        command = [str(plane_or_bin / "helm"), *args]
    env = {
        **os.environ,
        "HELM_CACHE_HOME": "/tmp/trafficmirror-helm/cache",
        "HELM_CONFIG_HOME": "/tmp/trafficmirror-helm/config",
    }
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def render(bin_dir: Path, *set_args: str, namespace: str = RELEASE_NAMESPACE) -> list[dict[str, Any]]:
    out = helm(bin_dir, "template", RELEASE, str(CHART), "--namespace", namespace, *set_args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    return testbed_bin_dir()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory, bin_dir: Path) -> Iterator[ControlPlane]:
    """A control plane of our own, without CRDs: installing them is the chart's job here."""
    plane = ControlPlane(bin_dir=bin_dir, work_dir=tmp_path_factory.mktemp("chart-kube"))
    plane.start()
    try:
        # The namespace controller: without it each test's namespace never finishes deleting, and the
        # namespace fixture's teardown waits out its whole timeout (60 s a test).
        with controller_manager(plane, "namespace-controller"):
            yield plane
    finally:
        plane.stop()


@dataclass
class Release:
    namespace: str
    install_output: str


@pytest.fixture(scope="session")
def release(control_plane: ControlPlane) -> Release:
    """`helm install` of the chart with its defaults into an apiserver that has no CRDs yet."""
    installed = helm(
        control_plane, "install", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, "--create-namespace"
    )
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    return Release(RELEASE_NAMESPACE, installed.stdout)


@dataclass
class TokenPlane:
    """What OperatorProcess needs of a control plane, with a ServiceAccount's kubeconfig instead of admin's."""

    kubeconfig: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


def service_account_kubeconfig(plane: ControlPlane, namespace: str, account: str, path: Path) -> Path:
    token = plane.kubectl("create", "token", account, "-n", namespace, "--duration=2h").stdout.strip()
    user = f"system:serviceaccount:{namespace}:{account}"
    path.write_text(kubeconfig_text(plane.url, str(plane.ca_file), token, user=user))
    return path


@pytest.fixture(scope="session")
def operator_kubeconfig(
    control_plane: ControlPlane, release: Release, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return service_account_kubeconfig(
        control_plane, release.namespace, OPERATOR_SA, tmp_path_factory.mktemp("sa") / "operator.kubeconfig"
    )


@pytest.fixture(scope="session")
def chart_operator(
    control_plane: ControlPlane,
    emulator: Emulator,
    world: Any,
    operator_kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """The operator as the chart's Deployment runs it (peering on, the chart's ClusterKopfPeering), but as a
    local process: no kubelet runs in the test bed. Its only credentials are the operator ServiceAccount's."""
    running = OperatorProcess(
        TokenPlane(operator_kubeconfig),  # type: ignore[arg-type]
        emulator,
        tmp_path_factory.mktemp("chart-operator") / "operator.log",
    )
    running.start()
    yield running
    running.stop()


@pytest.fixture
def chart_cluster(control_plane: ControlPlane, namespace: str, chart_operator: OperatorProcess) -> Cluster:
    return Cluster(control_plane, namespace, chart_operator)


def can_i(plane: ControlPlane, namespace: str, account: str, verb: str, resource: str, where: str | None) -> bool:
    scope = ["--all-namespaces"] if where is None else ["-n", where]
    result = plane.kubectl(
        "auth", "can-i", verb, resource, *scope, f"--as=system:serviceaccount:{namespace}:{account}", check=False
    )
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), result.stderr
    return answer == "yes"


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)
