"""The operator as a separate process against the real apiserver and the AWS emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from trafficmirror_testbed.emulator import Emulator
from trafficmirror_testbed.kube import ControlPlane, free_port
from trafficmirror_testbed.seed import World, seed_world

RESYNC_SECONDS = 4
TIMEBOX_REFRESH_SECONDS = 3  # how often a time-boxed session's status says anew how long it has left


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with Emulator(log_path=tmp_path_factory.mktemp("emulator") / "emulator.log") as running:
        yield running


@pytest.fixture(scope="session")
def ec2(emulator: Emulator) -> Any:
    return emulator.client("ec2")


@pytest.fixture(scope="session")
def world(ec2: Any, control_plane: ControlPlane) -> World:
    """The seeded VPC and instances, each also a Kubernetes Node whose providerID names it."""
    seeded = seed_world(ec2)
    nodes = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": f"{role}-node"},
            "spec": {"providerID": f"aws:///us-east-1a/{node.instance_id}"},
        }
        for role, node in seeded.nodes.items()
    ]
    control_plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}))
    return seeded


class OperatorProcess:
    def __init__(self, control_plane: ControlPlane, emulator: Emulator, log: Path) -> None:
        self.control_plane = control_plane
        self.emulator = emulator
        self.log = log
        self.metrics_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **self.control_plane.env(),
            **self.emulator.env(),
            "TRAFFICMIRROR_RESYNC_SECONDS": str(RESYNC_SECONDS),
            "TRAFFICMIRROR_METRICS_PORT": str(self.metrics_port),
            "TRAFFICMIRROR_CLUSTER_NAME": "testbed",
            "TRAFFICMIRROR_TIMEBOX_REFRESH_SECONDS": str(TIMEBOX_REFRESH_SECONDS),
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trafficmirror.cli",
                "operator",
                "--log-format",
                "full",
                "--liveness",
                f"http://127.0.0.1:{free_port()}/healthz",
            ],
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def stop(self, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def aws_calls(self, operation: str) -> float:
        """EC2 calls the operator made for one operation, from its own Prometheus endpoint."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("trafficmirror_aws_calls_total{") and f'operation="{operation}"' in line
        )

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def operator_process(
    control_plane: ControlPlane, emulator: Emulator, world: World, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "trafficmirror"}}
        ),
    )
    running = OperatorProcess(control_plane, emulator, tmp_path_factory.mktemp("operator") / "operator.log")
    running.start()
    yield running
    running.stop()


class Cluster:
    """kubectl for one test namespace, and waiting on what the operator writes."""

    def __init__(self, control_plane: ControlPlane, namespace: str, operator: OperatorProcess) -> None:
        self.control_plane = control_plane
        self.namespace = namespace
        self.operator = operator

    def apply(self, manifest: dict[str, Any]) -> None:
        manifest = {**manifest, "apiVersion": "trafficmirror.io/v1alpha1"}
        self.control_plane.kubectl("apply", "-n", self.namespace, "-f", "-", input=json.dumps(manifest))

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = self.control_plane.kubectl("get", "-n", self.namespace, kind, name, "-o", "json", check=False)
        if result.returncode != 0:
            return None
        loaded: dict[str, Any] = json.loads(result.stdout)
        return loaded

    def delete(self, kind: str, name: str, wait: bool = True) -> None:
        self.control_plane.kubectl(
            "delete", "-n", self.namespace, kind, name, f"--wait={str(wait).lower()}", "--timeout=90s"
        )

    def wait_for(
        self, kind: str, name: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            last = self.get(kind, name)
            if last is not None and predicate(last):
                return last
            time.sleep(0.3)
        raise AssertionError(
            f"{kind}/{name} never matched; last seen status: {json.dumps((last or {}).get('status'), indent=1)}\n"
            f"operator log:\n{self.operator.log_tail()}"
        )

    def wait_phase(self, kind: str, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        return self.wait_for(kind, name, lambda o: o.get("status", {}).get("phase") == phase, timeout)

    def events(self, name: str) -> list[dict[str, Any]]:
        result = self.control_plane.kubectl(
            "get",
            "events",
            "-n",
            self.namespace,
            "--field-selector",
            f"involvedObject.name={name}",
            "-o",
            "json",
        )
        items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
        return items


@pytest.fixture
def cluster(control_plane: ControlPlane, namespace: str, operator_process: OperatorProcess) -> Cluster:
    return Cluster(control_plane, namespace, operator_process)


def ready_condition(obj: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), None)


__all__ = ["Cluster", "condition", "os", "ready_condition"]


def fresh_instance(ec2: Any, world: World, instance_type: str = "t3.small") -> tuple[str, str]:
    """A new instance (ID, primary ENI) for one test, so sessions of other tests never collide with it."""
    instance = ec2.run_instances(
        ImageId=world.image_id,
        InstanceType=instance_type,
        MinCount=1,
        MaxCount=1,
        SubnetId=world.subnet_ids["a"],
    )["Instances"][0]
    return instance["InstanceId"], instance["NetworkInterfaces"][0]["NetworkInterfaceId"]
