"""`make demo`: the test bed, the operator and the example manifests, end to end on this machine.

It starts a real kube-apiserver + etcd and the AWS emulator, seeds the field report's instances
(registered as Nodes), runs the operator, applies examples/ and shows what Kubernetes and AWS say:
the session from the t3.small is Ready, the one from the t2.micro is Failed/UnsupportedInstanceType.
Everything it starts is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from trafficmirror_testbed import traffic
from trafficmirror_testbed.emulator import Emulator
from trafficmirror_testbed.kube import REPO_ROOT, ControlPlane, free_port, running_control_plane
from trafficmirror_testbed.seed import seed_world

DEMO_NAMESPACE = "default"
OUTPUT = REPO_ROOT / "demo-output"
BUCKET = "trafficmirror-demo"


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
                if _phases(plane) != {"web": "Ready", "legacy": "Failed"}:
                    return 1
                web = json.loads(plane.kubectl("get", "mirrorsession", "web", "-o", "json").stdout)
                return _capture(plane, emulator, int(web["status"]["virtualNetworkId"]), work)
            finally:
                operator.terminate()
                operator.wait(timeout=30)


def _capture(plane: ControlPlane, emulator: Emulator, vni: int, work: Path) -> int:
    """The capture agent receives the mirrored HTTP exchange and ships a pcapng to disk and S3."""
    shutil.rmtree(OUTPUT, ignore_errors=True)
    captures = OUTPUT / "captures"
    captures.mkdir(parents=True)
    emulator.client("s3").create_bucket(Bucket=BUCKET)
    token_file = work / "agent-token"
    token_file.write_text(plane.admin_token)
    kernel = traffic.can_use_kernel()
    mirror = traffic.KernelMirror(vni).up() if kernel else None
    address = traffic.UNDERLAY_AGENT if kernel else "127.0.0.1"
    metrics_port = free_port()
    agent = subprocess.Popen(
        [
            sys.executable, "-m", "trafficmirror.cli", "capture", "--address", address,
            "--kube", "--kube-server", plane.url, "--kube-token-file", str(token_file),
            "--kube-ca-file", str(plane.ca_file), "--output-dir", str(captures), "--work-dir", str(work / "agent"),
            "--s3-bucket", BUCKET, "--s3-endpoint-url", emulator.endpoint_url, "--node", "capture-node",
            "--cluster", "demo", "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics_port),
        ],
        env={**os.environ, **emulator.env()},
        stdout=(work / "agent.log").open("ab"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_ready(metrics_port, agent, work / "agent.log")
        print(f"\ncapture agent listening on {address}:4789; mirroring the web node's HTTP traffic with VNI {vni}")
        if mirror is not None:
            mirror.http_exchange(requests=3)
        else:
            print("(not root: a userspace VXLAN sender stands in for the kernel vxlan device)")
            traffic.userspace_http_exchange(vni, (address, traffic.VXLAN_PORT))
        time.sleep(1)
    finally:
        agent.send_signal(signal.SIGTERM)  # flushes, closes and ships the open file
        agent.wait(timeout=60)
        if mirror is not None:
            mirror.down()
    pcap = OUTPUT / "web.pcapng"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "trafficmirror.cli",
            "pcap",
            "get",
            f"{DEMO_NAMESPACE}/web",
            "--dir",
            str(captures),
            "-o",
            str(pcap),
        ],
        check=True,
    )
    summary = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", "http", "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "_ws.col.Info"],
        capture_output=True,
        text=True,
    )
    print("\ntshark, the HTTP exchange in the capture:")
    print(summary.stdout.rstrip() or summary.stderr.rstrip())
    keys = [o["Key"] for o in emulator.client("s3").list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    print(f"\nS3 objects in s3://{BUCKET}:")
    print("\n".join(f"  {k}" for k in keys) or "  (none)")
    print(f"\nopen in Wireshark: {pcap}")
    return 0 if keys and "GET" in summary.stdout else 1


def _wait_ready(port: int, agent: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            raise RuntimeError(f"capture agent exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    time.sleep(1)  # let the MirrorSession watch deliver the VNI map
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"capture agent not ready: {log.read_text()[-2000:]}")


if __name__ == "__main__":
    raise SystemExit(main())
