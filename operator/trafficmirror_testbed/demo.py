"""`make demo`: the chart and the image on a real cluster, end to end, with AWS emulated.

Without KUBECONFIG it builds a single-node cluster on this machine (node.py; needs root) and
imports the image `make image` built. With KUBECONFIG pointing at a cluster of yours (kind, k3d,
minikube), it uses that one: the image is loaded the way that cluster expects, or the demo says
what it needs.

The story is the field report's: the examples' session from the t3.small is Ready, the one from the
t2.micro is Failed/UnsupportedInstanceType; mirrored HTTP reaches the capture agent pod, whose
pcapng lands in S3, and tshark reads the exchange back. Every step prints how long it took.
Everything it starts is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from trafficmirror_testbed import story, traffic
from trafficmirror_testbed.emulator import Emulator
from trafficmirror_testbed.kube import REPO_ROOT, free_port, testbed_bin_dir
from trafficmirror_testbed.node import (
    free_udp_port,
    image_reference,
    missing_requirements,
    product_image,
    running_node,
)

DEMO_NAMESPACE = "default"
OUTPUT = REPO_ROOT / "demo-output"
BUCKET = "trafficmirror-demo"
CLUSTER = "demo"


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    print(f"\n== {title}", flush=True)
    start = time.monotonic()
    try:
        yield
    finally:
        print(f"   ({time.monotonic() - start:.1f}s)", flush=True)


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    try:
        if os.environ.get("KUBECONFIG"):
            return _on_user_cluster(Path(os.environ["KUBECONFIG"]))
        return _on_own_node()
    finally:
        print(f"\ndemo took {time.monotonic() - started:.0f}s")


def _on_own_node() -> int:
    problems = missing_requirements()
    if problems:
        print("the demo builds a single-node cluster here, and cannot: " + "; ".join(problems), file=sys.stderr)
        print("or point KUBECONFIG at a cluster you have (kind, k3d, minikube)", file=sys.stderr)
        return 2
    with step("image (make image: podman, cached)"):
        image = product_image()
        print(f"   {image_reference()} -> {image}")
    with tempfile.TemporaryDirectory(prefix="trafficmirror-demo-") as tmp:
        work = Path(tmp)
        with step("single-node cluster: etcd, apiserver, controller-manager, scheduler, CoreDNS, kubelet, kube-proxy"):
            node_cm = running_node([image], log=lambda msg: print(f"   {msg}", flush=True))
            node = node_cm.__enter__()
        try:
            assert node.plane is not None
            access = story.Access(node.plane.kubeconfig, node.plane.bin_dir, work)
            with Emulator(host=node.address, log_path=work / "emulator.log") as emulator:
                return _story(access, emulator, emulator.endpoint_url, capture_node=node.name, agent=node.address)
        finally:
            with step("stopping the cluster and removing everything it made"):
                node_cm.__exit__(None, None, None)


def _on_user_cluster(kubeconfig: Path) -> int:
    with tempfile.TemporaryDirectory(prefix="trafficmirror-demo-") as tmp:
        work = Path(tmp)
        access = story.Access(kubeconfig, testbed_bin_dir(), work)
        nodes = access.json("get", "nodes")["items"]
        [node_obj, *_] = nodes
        context = access.kubectl("config", "current-context").stdout.strip()
        address = next(a["address"] for a in node_obj["status"]["addresses"] if a["type"] == "InternalIP")
        print(
            f"using your cluster: context {context}, {len(nodes)} node(s), {node_obj['metadata']['name']} at {address}"
        )
        with step("image (make image: podman, cached)"):
            image = product_image()
        with step(f"loading {image_reference()} into the cluster"):
            if not _load_image(node_obj, context, image):
                return 2
        # The pods reach the emulator at the address this machine uses towards the node.
        route = subprocess.run(["ip", "route", "get", address], capture_output=True, text=True, check=True).stdout
        host = route.split(" src ")[1].split()[0]
        with Emulator(host="0.0.0.0", log_path=work / "emulator.log") as emulator:
            endpoint = f"http://{host}:{emulator.port}"
            return _story(access, emulator, endpoint, capture_node=None, agent=address, pull_policy="IfNotPresent")


def _load_image(node_obj: dict[str, object], context: str, image: Path) -> bool:
    """Load the image tarball the way the cluster's flavour expects; say what is needed otherwise."""
    provider = str(node_obj.get("spec", {}).get("providerID", ""))  # type: ignore[union-attr]
    labels: dict[str, str] = node_obj["metadata"].get("labels", {})  # type: ignore[index]
    if provider.startswith("kind://") or context.startswith("kind-"):
        command = ["kind", "load", "image-archive", str(image), "--name", context.removeprefix("kind-")]
    elif context.startswith("k3d-"):
        command = ["k3d", "image", "import", str(image), "--cluster", context.removeprefix("k3d-")]
    elif "minikube.k8s.io/name" in labels:
        command = ["minikube", "image", "load", str(image), "--profile", labels["minikube.k8s.io/name"]]
    else:
        print(
            f"don't know how to load images into context {context!r}: push {image_reference()} to a registry the\n"
            f"cluster pulls from (podman load -i {image}; podman push ...) and install with image.repository set;\n"
            "kind, k3d and minikube clusters are loaded automatically.",
            file=sys.stderr,
        )
        return False
    if shutil.which(command[0]) is None:
        print(
            f"{command[0]} is not installed: it loads the image into your cluster ({' '.join(command)})",
            file=sys.stderr,
        )
        return False
    subprocess.run(command, check=True)
    return True


def _udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def _story(
    access: story.Access,
    emulator: Emulator,
    endpoint: str,
    *,
    capture_node: str | None,
    agent: str,
    pull_policy: str = "Never",
) -> int:
    print(f"   AWS emulator at {endpoint}")
    with step("EC2 instances of the field report, as Kubernetes nodes"):
        world = story.register_world(access, emulator, capture_node)
        for role, node in world.nodes.items():
            print(f"   {role}-node: {node.instance_type} {node.instance_id} {node.eni_id}")
        emulator.client("s3").create_bucket(Bucket=BUCKET)
    # AWS sends to 4789; on this machine the port may be taken by another receiver: then any free one.
    capture_port = traffic.VXLAN_PORT if capture_node is None or _udp_port_free(traffic.VXLAN_PORT) else free_udp_port()
    values = story.chart_values(
        endpoint,
        region=emulator.region,
        bucket=BUCKET,
        cluster=CLUSTER,
        capture_port=capture_port,
        capture_metrics_port=free_port() if capture_node else 9090,
        pull_policy=pull_policy,
        # On a cluster of yours the demo's datagrams come from this machine, not from the emulated source
        # ENI's address, so the agent's source check would count them as spoofed: it is off there, and said.
        source_check=capture_node is not None,
    )
    if capture_node is None:
        print("   capture.sourceCheck=false: the mirrored datagrams come from this machine, not the source ENI")
    with step("helm install charts/trafficmirror (operator Deployment, capture DaemonSet)"):
        story.install(access, values)
        story.wait_workloads(access)
        print(access.kubectl("get", "pods", "-n", story.RELEASE_NAMESPACE, "-o", "wide").stdout, end="")
    with step("kubectl apply -f examples/"):
        print(access.kubectl("apply", "-n", DEMO_NAMESPACE, "-f", str(story.EXAMPLES)).stdout, end="")
        try:
            story.wait_for("sessions", lambda: story.phases(access, DEMO_NAMESPACE) == story.EXPECTED_PHASES, 180, str)
        except TimeoutError:
            print(story.operator_logs(access))
        print(access.kubectl("get", "mirrortargets,mirrorfilters,mirrorsessions", "-n", DEMO_NAMESPACE).stdout, end="")
    if story.phases(access, DEMO_NAMESPACE) != story.EXPECTED_PHASES:
        return 1
    legacy = access.json("get", "mirrorsession", "legacy", "-n", DEMO_NAMESPACE)
    ready = next(c for c in legacy["status"].get("conditions", []) if c["type"] == "Ready")
    print(f"\nmirrorsession/legacy: {ready['reason']}: {ready['message']}")
    sessions = emulator.client("ec2").describe_traffic_mirror_sessions()["TrafficMirrorSessions"]
    print(f"sessions in AWS: {[(s['TrafficMirrorSessionId'], s['VirtualNetworkId']) for s in sessions]}")
    vni = story.session_vni(access, DEMO_NAMESPACE)
    with step(f"mirrored HTTP (VNI {vni}) to the capture agent pod at {agent}:{capture_port}"):
        story.wait_agent_knows_sessions(agent, values["capture"]["metricsPort"], 1)
        if capture_node is not None:
            mirror = traffic.KernelMirror(
                vni,
                prefix="tmdemo",
                remote=agent,
                port=capture_port,
                underlay=story.mirror_underlay(access, DEMO_NAMESPACE),
            ).up()
            try:
                mirror.http_exchange(requests=3)
            finally:
                mirror.down()
        else:
            # From this machine straight to the node: no forwarding through the host's firewall.
            sent = traffic.userspace_http_exchange(vni, (agent, capture_port))
            print(f"   {sent} VXLAN datagrams (a userspace sender: your node is not in this machine's kernel)")
    shutil.rmtree(OUTPUT, ignore_errors=True)
    OUTPUT.mkdir(parents=True)
    pcap = OUTPUT / "web.pcapng"
    with step("the agent ships the pcapng to S3 (rotation every 10 s); trafficmirror pcap get, read by tshark"):
        try:
            exchanges = 3 if capture_node is not None else 1
            lines = story.fetch_http(emulator, BUCKET, CLUSTER, f"{DEMO_NAMESPACE}/web", pcap, requests=exchanges)
        except TimeoutError as error:
            print(error)
            print(
                access.kubectl("logs", "-n", story.RELEASE_NAMESPACE, f"daemonset/{story.CAPTURE}", check=False).stdout
            )
            return 1
        print("\n".join(f"   {line}" for line in lines))
    keys = story.s3_keys(emulator, BUCKET)
    print(f"\nS3 objects in s3://{BUCKET}:")
    print("\n".join(f"  {k}" for k in keys) or "  (none)")
    print(f"\nopen in Wireshark: {pcap}")
    print(json.dumps({"sessions": story.phases(access, DEMO_NAMESPACE), "s3_objects": len(keys)}))
    return 0 if keys and any("GET" in line for line in lines) else 1


if __name__ == "__main__":
    raise SystemExit(main())
