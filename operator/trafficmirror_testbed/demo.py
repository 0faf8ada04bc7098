"""`make demo`: the test bed, the operator and the example manifests, end to end on this machine.

It starts a real kube-apiserver + etcd and the AWS emulator, seeds the field report's instances
(registered as Nodes), runs the operator, applies examples/ and shows what Kubernetes and AWS say:
the session from the t3.small is Ready, the one from the t2.micro is Failed/UnsupportedInstanceType.
Everything it starts is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trafficmirror_testbed.emulator import Emulator
from trafficmirror_testbed.kube import REPO_ROOT, ControlPlane, free_port, running_control_plane
from trafficmirror_testbed.seed import seed_world

DEMO_NAMESPACE = "default"


def _register_nodes(plane: ControlPlane, emulator: Emulator) -> None:
    world = seed_world(emulator.client("ec2"))
    nodes = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": f"{role}-node", "labels": {"node.kubernetes.io/instance-type": node.instance_type}},
            "spec": {"providerID": f"aws:///{emulator.region}a/{node.instance_id}"},
        }
        for role, node in world.nodes.items()
    ]
    plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}))
    for role, node in world.nodes.items():
        print(f"  node {role}-node: {node.instance_type} {node.instance_id} {node.eni_id}")


def _phases(plane: ControlPlane) -> dict[str, str]:
    listed = json.loads(plane.kubectl("get", "mirrorsessions", "-n", DEMO_NAMESPACE, "-o", "json").stdout)
    return {item["metadata"]["name"]: item.get("status", {}).get("phase", "") for item in listed["items"]}


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="trafficmirror-demo-") as tmp:
        work = Path(tmp)
        with running_control_plane(work / "kube") as plane, Emulator(log_path=work / "emulator.log") as emulator:
            print(f"kube-apiserver at {plane.url}, AWS emulator at {emulator.endpoint_url}")
            plane.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"))
            plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
            plane.kubectl(
                "apply",
                "-f",
                "-",
                input=json.dumps(
                    {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "trafficmirror"}}
                ),
            )
            print("EC2 instances of the field report, as Kubernetes nodes:")
            _register_nodes(plane, emulator)
            log = (work / "operator.log").open("ab")
            operator = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "trafficmirror.cli",
                    "operator",
                    "--liveness",
                    f"http://127.0.0.1:{free_port()}/healthz",
                ],
                env={**plane.env(), **emulator.env(), "TRAFFICMIRROR_METRICS_PORT": str(free_port())},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                print(plane.kubectl("apply", "-n", DEMO_NAMESPACE, "-f", str(REPO_ROOT / "examples")).stdout, end="")
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline and _phases(plane) != {"web": "Ready", "legacy": "Failed"}:
                    time.sleep(1)
                shown = plane.kubectl("get", "mirrortargets,mirrorfilters,mirrorsessions", "-n", DEMO_NAMESPACE)
                print(shown.stdout, end="")
                legacy = json.loads(plane.kubectl("get", "mirrorsession", "legacy", "-o", "json").stdout)
                ready = next(c for c in legacy["status"].get("conditions", []) if c["type"] == "Ready")
                print(f"\nmirrorsession/legacy: {ready['reason']}: {ready['message']}")
                sessions = emulator.client("ec2").describe_traffic_mirror_sessions()["TrafficMirrorSessions"]
                print(f"sessions in AWS: {[(s['TrafficMirrorSessionId'], s['VirtualNetworkId']) for s in sessions]}")
                return 0 if _phases(plane) == {"web": "Ready", "legacy": "Failed"} else 1
            finally:
                operator.terminate()
                operator.wait(timeout=30)


if __name__ == "__main__":
    raise SystemExit(main())
