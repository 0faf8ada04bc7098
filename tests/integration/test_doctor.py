"""`trafficmirror doctor` as a user runs it: a process against the real apiserver and the AWS emulator.

The seeded world (t3.small, c5.large, t2.micro, p4d.24xlarge, m5.metal) must be judged exactly as the
instance-support table judges it, sessions and target sources counted from what AWS holds, and
the capture agent's own report (its pod status) used for the port. No kubelet runs in the test
bed, so the test writes the agent pod's status itself, as the kubelet would, and says so.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from typing import Any

import pytest

from trafficmirror.aws.instance_support import InstanceTypeFacts, decide_support, load_support_table
from trafficmirror.aws.target_quotas import TargetQuotas
from trafficmirror_testbed.emulator import Emulator
from trafficmirror_testbed.kube import ControlPlane
from trafficmirror_testbed.seed import World

from .conftest import fresh_instance

pytestmark = pytest.mark.timeout(180)


def doctor(control_plane: ControlPlane, emulator: Emulator, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trafficmirror.cli", "doctor", *args],
        env={**control_plane.env(), **emulator.env()},
        capture_output=True,
        text=True,
        timeout=120,
    )


def doctor_json(control_plane: ControlPlane, emulator: Emulator, *args: str) -> dict[str, Any]:
    result = doctor(control_plane, emulator, "-o", "json", *args)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def apply(control_plane: ControlPlane, *objects: dict[str, Any]) -> None:
    control_plane.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    )


def node(name: str, instance_id: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"providerID": f"aws:///us-east-1a/{instance_id}"},
    }


def test_doctor_judges_the_seeded_world_as_the_support_table_does(
    control_plane: ControlPlane, emulator: Emulator, ec2: Any, world: World
) -> None:
    report = doctor_json(control_plane, emulator)
    by_name = {n["name"]: n for n in report["nodes"]}
    table = load_support_table()
    verdicts = {}
    for role, seeded in world.nodes.items():
        got = by_name[f"{role}-node"]
        raw = ec2.describe_instance_types(InstanceTypes=[got["instance_type"]])["InstanceTypes"][0]
        expected = decide_support(InstanceTypeFacts.from_instance_type_info(raw), table)
        assert got["instance_id"] == seeded.instance_id
        assert got["instance_type"] == seeded.instance_type
        assert (got["source"], got["reason"], got["alternative"]) == (
            expected.verdict.value,
            expected.reason,
            expected.alternative,
        ), role
        assert got["network_interfaces"][0]["network_interface_id"] == seeded.eni_id
        assert all(e["sessions_limit"] == 3 for e in got["network_interfaces"])
        verdicts[seeded.instance_type] = got["source"]
    # What the field report and AWS's docs say, independent of the table's code.
    assert verdicts["t2.micro"] == "Unsupported"
    assert verdicts["p4d.24xlarge"] == "Unsupported"
    assert verdicts["m5.metal"] == "Unsupported"
    assert verdicts["t3.small"] == "Supported"
    # c5.large follows the emulator's facts (moto's data calls it previous generation), as the operator does.
    # The table output names the same verdicts.
    table_out = doctor(control_plane, emulator)
    assert table_out.returncode == 0, table_out.stderr
    for role in world.nodes:
        line = next(x for x in table_out.stdout.splitlines() if x.startswith(f"{role}-node "))
        assert by_name[f"{role}-node"]["source"] in line


def test_doctor_counts_sessions_sources_per_target_and_cost(
    control_plane: ControlPlane, emulator: Emulator, ec2: Any, world: World
) -> None:
    run = secrets.token_hex(3)
    selector = f"doctor-run={run}"
    source_a, eni_a = fresh_instance(ec2, world)
    source_b, eni_b = fresh_instance(ec2, world)
    idle, _ = fresh_instance(ec2, world)
    capture, eni_capture = fresh_instance(ec2, world, "c5.large")
    big, eni_big = fresh_instance(ec2, world, "m5.24xlarge")
    labels = {"doctor-run": run}
    apply(
        control_plane,
        node(f"src-a-{run}", source_a, labels),
        node(f"src-b-{run}", source_b, labels),
        node(f"idle-{run}", idle, labels),
        node(f"cap-{run}", capture, {**labels, "trafficmirror.io/capture": "true"}),
        node(f"big-{run}", big, labels),
    )
    target = ec2.create_traffic_mirror_target(NetworkInterfaceId=eni_capture)["TrafficMirrorTarget"]
    big_target = ec2.create_traffic_mirror_target(NetworkInterfaceId=eni_big)["TrafficMirrorTarget"]
    mirror_filter = ec2.create_traffic_mirror_filter()["TrafficMirrorFilter"]
    created = []
    for eni, number, to in ((eni_a, 1, target), (eni_a, 2, target), (eni_b, 1, target), (eni_b, 2, big_target)):
        created.append(
            ec2.create_traffic_mirror_session(
                NetworkInterfaceId=eni,
                TrafficMirrorTargetId=to["TrafficMirrorTargetId"],
                TrafficMirrorFilterId=mirror_filter["TrafficMirrorFilterId"],
                SessionNumber=number,
            )["TrafficMirrorSession"]["TrafficMirrorSessionId"]
        )
    # The capture agent on the capture node exited because the CNI holds the port: the kubelet would
    # write this status; here the test writes it through the status subresource.
    namespace = f"doctor-{run}"
    control_plane.kubectl("create", "namespace", namespace)
    control_plane.kubectl("create", "serviceaccount", "default", "-n", namespace, check=False)
    agent_labels = {"app.kubernetes.io/name": "trafficmirror", "app.kubernetes.io/component": "capture"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "capture-agent", "namespace": namespace, "labels": agent_labels},
        "spec": {
            "nodeName": f"cap-{run}",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "capture",
                    "image": "trafficmirror:test",
                    "ports": [
                        {"name": "vxlan", "containerPort": 4789, "protocol": "UDP"},
                        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
                    ],
                }
            ],
        },
    }
    apply(control_plane, pod)
    message = (
        "UDP port 4789 on 0.0.0.0 is already in use. vxlan.calico holds it (a CNI VXLAN device); "
        "move the CNI's VXLAN port or set capture.port"
    )
    status = {
        "status": {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "containerStatuses": [
                {
                    "name": "capture",
                    "ready": False,
                    "restartCount": 3,
                    "image": "trafficmirror:test",
                    "imageID": "",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": message}},
                }
            ],
        }
    }
    control_plane.kubectl(
        "patch",
        "pod",
        "capture-agent",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    try:
        # The cost counts every mirrored ENI of the account, other tests' too: read AWS before and
        # after, and take a report during which nothing else changed sessions.
        for _ in range(5):
            before = {s["NetworkInterfaceId"] for s in ec2.describe_traffic_mirror_sessions()["TrafficMirrorSessions"]}
            report = doctor_json(control_plane, emulator, "-l", selector)
            after = {s["NetworkInterfaceId"] for s in ec2.describe_traffic_mirror_sessions()["TrafficMirrorSessions"]}
            if before == after:
                break
    finally:
        for session_id in created:
            ec2.delete_traffic_mirror_session(TrafficMirrorSessionId=session_id)
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)

    nodes = {n["name"]: n for n in report["nodes"]}
    assert set(nodes) == {f"src-a-{run}", f"src-b-{run}", f"idle-{run}", f"cap-{run}", f"big-{run}"}
    sessions = {n["name"]: n["network_interfaces"][0]["sessions"] for n in report["nodes"]}
    assert sessions == {f"src-a-{run}": 2, f"src-b-{run}": 2, f"idle-{run}": 0, f"cap-{run}": 0, f"big-{run}": 0}

    targets = {t["target_id"]: t for t in report["targets"]}
    small = targets[target["TrafficMirrorTargetId"]]
    quotas = TargetQuotas.packaged()
    assert (small["node"], small["instance_type"], small["sources"]) == (f"cap-{run}", "c5.large", 2)
    assert (small["sources_limit"], small["headroom"]) == (quotas.default_sources_per_target, 8)
    large = targets[big_target["TrafficMirrorTargetId"]]
    assert (large["node"], large["instance_type"], large["sources"]) == (f"big-{run}", "m5.24xlarge", 1)
    assert (large["sources_limit"], large["headroom"]) == (100, 99)

    capture_node = nodes[f"cap-{run}"]["capture"]
    assert capture_node["agent_pod"] == f"{namespace}/capture-agent"
    assert capture_node["port"]["state"] == "InUseByOther"
    assert "vxlan.calico" in capture_node["port"]["how"]
    # The big node hosts a target but no agent: doctor says it cannot know, and why.
    big_capture = nodes[f"big-{run}"]["capture"]
    assert big_capture["agent_pod"] is None and big_capture["port"]["state"] == "Unknown"
    assert nodes[f"src-a-{run}"]["capture"] is None

    # Cost: every ENI with a session, account-wide, at the published price.
    assert before == after, "sessions kept changing under five reports in a row"
    cost = report["cost"]
    assert cost["mirrored_network_interfaces"] == len(before)
    assert cost["usd_per_eni_hour"] == quotas.published_price.usd_per_eni_hour == 0.015
    assert cost["usd_per_hour"] == pytest.approx(len(before) * 0.015)
    assert "aws.amazon.com/vpc/pricing" in cost["price_source"]
    priced = doctor_json(control_plane, emulator, "-l", selector, "--price-per-eni-hour", "0.02")
    assert priced["cost"]["price_source"] == "configured" and priced["cost"]["usd_per_eni_hour"] == 0.02


def test_doctor_reads_the_agents_metrics_through_the_api_server_or_says_why_not(
    control_plane: ControlPlane, emulator: Emulator, ec2: Any, world: World
) -> None:
    """A running agent pod whose metrics the API server will not proxy (a loopback pod IP): Unknown, with the reason."""
    run = secrets.token_hex(3)
    capture, _ = fresh_instance(ec2, world, "c5.large")
    apply(control_plane, node(f"cap-{run}", capture, {"doctor-run": run, "trafficmirror.io/capture": "true"}))
    namespace = f"doctor-{run}"
    control_plane.kubectl("create", "namespace", namespace)
    control_plane.kubectl("create", "serviceaccount", "default", "-n", namespace, check=False)
    apply(
        control_plane,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "capture-agent",
                "namespace": namespace,
                "labels": {"app.kubernetes.io/name": "trafficmirror", "app.kubernetes.io/component": "capture"},
            },
            "spec": {
                "nodeName": f"cap-{run}",
                "automountServiceAccountToken": False,
                "containers": [
                    {
                        "name": "capture",
                        "image": "trafficmirror:test",
                        "ports": [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                    }
                ],
            },
        },
    )
    control_plane.kubectl(
        "patch",
        "pod",
        "capture-agent",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}}),
    )
    try:
        report = doctor_json(control_plane, emulator, "-l", f"doctor-run={run}", "--agent-namespace", namespace)
    finally:
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    (only,) = report["nodes"]
    port = only["capture"]["port"]
    assert port["state"] == "Unknown"
    assert "could not be read through the API server" in port["how"]
    assert only["capture"]["rmem_max"] is None
