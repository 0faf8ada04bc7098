"""The chart on a real cluster, step by step: what the end-to-end tests check and `make demo` shows.

A cluster is reached through a kubeconfig (the test bed's node, or the user's kind/minikube/k3d);
AWS is the test bed's emulator, reached by the pods at an address the caller names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trafficmirror_testbed.emulator import DUMMY_CREDENTIALS, Emulator
from trafficmirror_testbed.kube import REPO_ROOT
from trafficmirror_testbed.seed import World, seed_world

CHART = REPO_ROOT / "charts" / "trafficmirror"
EXAMPLES = REPO_ROOT / "examples"
RELEASE = "trafficmirror"
RELEASE_NAMESPACE = "trafficmirror-system"
OPERATOR = f"{RELEASE}-operator"
CAPTURE = f"{RELEASE}-capture"
CAPTURE_LABEL = "trafficmirror.io/capture"
EXPECTED_PHASES = {"web": "Ready", "legacy": "Failed"}


@dataclass
class Access:
    """kubectl and helm against one cluster."""

    kubeconfig: Path
    bin_dir: Path
    work_dir: Path

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.work_dir / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(self.work_dir / "helm" / "config"),
            "HELM_DATA_HOME": str(self.work_dir / "helm" / "data"),
        }
        command = [str(self.bin_dir / "helm"), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result


def wait_for(what: str, predicate: Callable[[], bool], timeout: float, detail: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise TimeoutError(f"{what}: not after {timeout:.0f}s\n{detail()}")


def register_world(access: Access, emulator: Emulator, capture_node: str | None) -> World:
    """Seed the field report's EC2 instances and make them Kubernetes nodes.

    `capture_node`: a real node (with a kubelet) that becomes the capture node: its providerID names
    the capture instance, its label schedules the capture agent there. Without one (a user's cluster,
    whose nodes already have a providerID), every role is a Node object of its own and the real
    nodes are only labeled for the agent.
    """
    world = seed_world(emulator.client("ec2"))
    fake = []
    for role, node in world.nodes.items():
        name = f"{role}-node"
        if name == capture_node:
            node_obj = access.json("get", "node", name)
            if not node_obj["spec"].get("providerID"):
                patch = {"spec": {"providerID": f"aws:///{emulator.region}a/{node.instance_id}"}}
                access.kubectl("patch", "node", name, "--type", "merge", "-p", json.dumps(patch))
            access.kubectl(
                "label", "node", name, f"{CAPTURE_LABEL}=true", f"node.kubernetes.io/instance-type={node.instance_type}"
            )
            continue
        fake.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {"node.kubernetes.io/instance-type": node.instance_type}},
                # No kubelet runs for these: keep the scheduler and the DaemonSet controller off them.
                "spec": {
                    "providerID": f"aws:///{emulator.region}a/{node.instance_id}",
                    "unschedulable": True,
                    "taints": [{"key": "trafficmirror.io/no-kubelet", "effect": "NoSchedule"}],
                },
            }
        )
    access.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": fake}))
    if capture_node is None:
        for node_obj in access.json("get", "nodes", "-l", "!node.kubernetes.io/instance-type")["items"]:
            access.kubectl("label", "node", node_obj["metadata"]["name"], f"{CAPTURE_LABEL}=true", "--overwrite")
    return world


def chart_values(
    endpoint_url: str,
    *,
    region: str,
    bucket: str,
    cluster: str,
    capture_port: int = 4789,
    capture_metrics_port: int = 9090,
    pull_policy: str = "Never",
    source_check: bool = True,
) -> dict[str, Any]:
    """Chart values for the emulator: its endpoint and dummy credentials, files shipped every 10 s."""
    credentials = [
        {"name": "AWS_ACCESS_KEY_ID", "value": DUMMY_CREDENTIALS["aws_access_key_id"]},
        {"name": "AWS_SECRET_ACCESS_KEY", "value": DUMMY_CREDENTIALS["aws_secret_access_key"]},
    ]
    return {
        # The image is in the node's image store already (imported, not pulled): Never proves it.
        "image": {"pullPolicy": pull_policy},
        "clusterName": cluster,
        "aws": {"region": region, "endpointUrl": endpoint_url},
        "operator": {"extraEnv": credentials, "resyncSeconds": 15},
        "capture": {
            "extraEnv": credentials,
            "port": capture_port,
            "metricsPort": capture_metrics_port,
            "rotateInterval": "10s",
            "s3": {"bucket": bucket},
            "sourceCheck": source_check,
        },
    }


def install(access: Access, values: dict[str, Any], *extra: str) -> str:
    path = access.work_dir / "values.json"
    access.work_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values))
    out = access.helm(
        "upgrade", "--install", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, "--create-namespace",
        "--values", str(path), "--wait", "--timeout", "5m", *extra,
    )  # fmt: skip
    return out.stdout


def wait_workloads(access: Access, timeout: str = "300s") -> None:
    for kind in (f"deployment/{OPERATOR}", f"daemonset/{CAPTURE}"):
        result = access.kubectl("rollout", "status", "-n", RELEASE_NAMESPACE, kind, f"--timeout={timeout}", check=False)
        if result.returncode != 0:
            raise TimeoutError(f"{kind} not rolled out:\n{result.stdout}{result.stderr}\n{diagnose(access)}")


def diagnose(access: Access) -> str:
    """The release's pods, their events and their logs' tails, for a failure message."""
    out = [access.kubectl("get", "pods", "-n", RELEASE_NAMESPACE, "-o", "wide", check=False).stdout]
    for pod in access.json("get", "pods", "-n", RELEASE_NAMESPACE)["items"]:
        name = pod["metadata"]["name"]
        described = access.kubectl("describe", "pod", "-n", RELEASE_NAMESPACE, name, check=False).stdout
        out.append(described[-2500:])
        for container in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
            logs = access.kubectl(
                "logs", "-n", RELEASE_NAMESPACE, name, "-c", container["name"], "--tail=15", check=False
            )
            out.append(f"--- {name}/{container['name']}\n{logs.stdout}{logs.stderr}")
    return "\n".join(out)


def pods(access: Access, component: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/component={component}"
    items: list[dict[str, Any]] = access.json("get", "pods", "-n", RELEASE_NAMESPACE, "-l", selector)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def phases(access: Access, namespace: str) -> dict[str, str]:
    listed = access.json("get", "mirrorsessions", "-n", namespace)
    return {item["metadata"]["name"]: item.get("status", {}).get("phase", "") for item in listed["items"]}


def apply_examples(access: Access, namespace: str, timeout: float = 180) -> str:
    out = access.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES)).stdout
    wait_for(
        "the example sessions' phases",
        lambda: phases(access, namespace) == EXPECTED_PHASES,
        timeout,
        lambda: f"{phases(access, namespace)}\n{operator_logs(access)}",
    )
    return out


def operator_logs(access: Access, tail: int = 40) -> str:
    result = access.kubectl("logs", "-n", RELEASE_NAMESPACE, f"deployment/{OPERATOR}", f"--tail={tail}", check=False)
    return result.stdout + result.stderr


def session_vni(access: Access, namespace: str, name: str = "web") -> int:
    return int(access.json("get", "mirrorsession", name, "-n", namespace)["status"]["virtualNetworkId"])


def agent_metric(address: str, port: int, name: str) -> float | None:
    """One unlabeled sample of the capture agent's /metrics (hostNetwork: on the node's address)."""
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/metrics", timeout=3) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"trafficmirror_capture_{name} "):
            return float(line.split()[1])
    return None


def wait_agent_knows_sessions(address: str, port: int, sessions: int, timeout: float = 60) -> None:
    """Until the agent's MirrorSession watch has delivered the VNIs (else its datagrams count as unknown)."""
    wait_for(
        f"the capture agent knowing {sessions} session(s)",
        lambda: (agent_metric(address, port, "sessions") or 0) >= sessions,
        timeout,
    )


def mirror_underlay(access: Access, namespace: str, name: str = "web") -> tuple[str, str]:
    """The vxlan device's outer addresses, as AWS would send them: from the source ENI's private
    address (the agent accepts a session's datagrams only from its status.sourceAddresses) to an
    address of the same /24 on this machine's end of the underlay."""
    status = access.json("get", "mirrorsession", name, "-n", namespace)["status"]
    addresses = status.get("sourceAddresses") or []
    if not addresses:
        return ("10.217.250.1", "10.217.250.2")
    source = addresses[0]
    prefix, last = source.rsplit(".", 1)
    return (source, f"{prefix}.{254 if last != '254' else 253}")


def s3_keys(emulator: Emulator, bucket: str) -> list[str]:
    listed = emulator.client("s3").list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in listed.get("Contents", [])]


def pcap_get(
    emulator: Emulator, bucket: str, cluster: str, session: str, out: Path
) -> subprocess.CompletedProcess[str]:
    """`trafficmirror pcap get` from S3, as a user would run it."""
    return subprocess.run(
        [
            sys.executable, "-m", "trafficmirror.cli", "pcap", "get", session,
            "--s3-bucket", bucket, "--cluster", cluster,
            "--s3-endpoint-url", emulator.endpoint_url, "--s3-region", emulator.region, "-o", str(out),
        ],
        env={**os.environ, **emulator.env()},
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip


def fetch_http(
    emulator: Emulator, bucket: str, cluster: str, session: str, out: Path, requests: int, timeout: float = 120
) -> list[str]:
    """`pcap get` from S3 until the capture holds `requests` HTTP requests and responses: the agent ships
    a file per rotation, and an exchange may straddle two of them."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pcap_get(emulator, bucket, cluster, session, out)
        if got.returncode == 0:
            lines = http_in_pcap(out)
            if sum("HTTP/1.0 200" in line for line in lines) >= requests:
                return lines
        time.sleep(2)
    raise TimeoutError(f"{session}: {requests} HTTP exchanges not in S3 after {timeout:.0f}s: {lines}")


def http_in_pcap(pcap: Path) -> list[str]:
    """The HTTP lines tshark reads in a capture: "src dst info"."""
    shown = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", "http", "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "_ws.col.Info"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [" ".join(line.split()) for line in shown.stdout.splitlines() if line.strip()]
