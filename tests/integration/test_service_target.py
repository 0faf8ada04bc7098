"""A MirrorTarget from a Service of type LoadBalancer: the operator finds the NLB by the Service's
hostname, creates the mirror target on it, and DataPathReady names the missing link.

Nothing plays the AWS Load Balancer Controller in the test bed: the test creates the NLB, its
target group and listener in the emulator, and writes the Service's load-balancer status itself,
as that controller would.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from trafficmirror_testbed.emulator import Emulator
from trafficmirror_testbed.seed import World

from .conftest import Cluster, condition


def _service(cluster: Cluster, name: str) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": cluster.namespace},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app.kubernetes.io/component": "capture"},
            "ports": [{"name": "vxlan", "port": 4789, "protocol": "UDP"}],
        },
    }
    cluster.control_plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def _set_hostname(cluster: Cluster, name: str, hostname: str) -> None:
    status = {"status": {"loadBalancer": {"ingress": [{"hostname": hostname}]}}}
    cluster.control_plane.kubectl(
        "patch",
        "service",
        name,
        "-n",
        cluster.namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )


def _data_path(obj: dict[str, Any] | None) -> dict[str, Any]:
    return (condition(obj, "DataPathReady") or {}) if obj else {}


def test_target_from_a_service_waits_for_the_nlb_then_says_what_is_missing_until_the_listener_exists(
    cluster: Cluster, emulator: Emulator, ec2: Any, world: World
) -> None:
    elbv2 = emulator.client("elbv2")
    name = f"capture-{secrets.token_hex(3)}"
    _service(cluster, name)
    cluster.apply({"kind": "MirrorTarget", "metadata": {"name": "pool"}, "spec": {"serviceRef": {"name": name}}})

    waiting = cluster.wait_for(
        "mirrortarget", "pool", lambda o: _data_path(o).get("reason") == "WaitingForLoadBalancer", timeout=60
    )
    assert waiting["status"]["phase"] == "Pending"
    assert f"{cluster.namespace}/{name} has no load-balancer hostname" in _data_path(waiting)["message"]

    lb = elbv2.create_load_balancer(Name=name, Subnets=[world.subnet_ids["a"]], Type="network", Scheme="internal")[
        "LoadBalancers"
    ][0]
    group = elbv2.create_target_group(
        Name=name, Protocol="UDP", Port=4789, VpcId=world.vpc_id, TargetType="instance", HealthCheckProtocol="TCP"
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=group, Targets=[{"Id": world.instance("capture")}])
    _set_hostname(cluster, name, lb["DNSName"])

    # The target exists on the NLB, but nothing listens on UDP 4789: not silently fine.
    no_listener = cluster.wait_for(
        "mirrortarget", "pool", lambda o: _data_path(o).get("reason") == "NoUdpListener", timeout=60
    )
    assert _data_path(no_listener)["status"] == "False"
    assert "no UDP listener on port 4789" in _data_path(no_listener)["message"]
    target_id = no_listener["status"]["trafficMirrorTargetId"]
    (aws_target,) = ec2.describe_traffic_mirror_targets(TrafficMirrorTargetIds=[target_id])["TrafficMirrorTargets"]
    assert aws_target["NetworkLoadBalancerArn"] == lb["LoadBalancerArn"]

    elbv2.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"],
        Protocol="UDP",
        Port=4789,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": group}],
    )
    ready = cluster.wait_for("mirrortarget", "pool", lambda o: _data_path(o).get("status") == "True", timeout=60)
    assert ready["status"]["phase"] == "Ready"
    assert "1 of 1 target(s) healthy" in _data_path(ready)["message"]
    # Same target: a listener added later does not replace anything in AWS.
    assert ready["status"]["trafficMirrorTargetId"] == target_id

    cluster.delete("mirrortarget", "pool")
    remaining = ec2.describe_traffic_mirror_targets()["TrafficMirrorTargets"]
    assert target_id not in {t["TrafficMirrorTargetId"] for t in remaining}
