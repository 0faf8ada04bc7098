"""The everyday path: a filter, a target and a session become Ready and exist in AWS as specified."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import Cluster, ready_condition
from trafficmirror_testbed.seed import World


def accept_all(name: str) -> dict[str, Any]:
    rule = {"ruleNumber": 100, "action": "accept"}
    return {
        "kind": "MirrorFilter",
        "metadata": {"name": name},
        "spec": {"ingressRules": [rule], "egressRules": [rule]},
    }


def test_three_manifests_give_a_ready_session_in_aws(cluster: Cluster, world: World, ec2: Any) -> None:
    cluster.apply(accept_all("all"))
    cluster.apply({"kind": "MirrorTarget", "metadata": {"name": "capture"}, "spec": {"nodeName": "capture-node"}})
    cluster.apply(
        {
            "kind": "MirrorSession",
            "metadata": {"name": "web"},
            "spec": {
                "source": {"nodeName": "web-node"},
                "targetRef": {"name": "capture"},
                "filterRef": {"name": "all"},
                "sessionNumber": 1,
            },
        }
    )
    session = cluster.wait_phase("mirrorsession", "web", "Ready")
    status = session["status"]
    assert ready_condition(session)["status"] == "True"
    aws = ec2.describe_traffic_mirror_sessions(TrafficMirrorSessionIds=[status["trafficMirrorSessionId"]])
    (described,) = aws["TrafficMirrorSessions"]
    assert described["NetworkInterfaceId"] == world.nodes["web"].eni_id
    assert described["VirtualNetworkId"] == status["virtualNetworkId"]
    assert described["TrafficMirrorTargetId"] == status["trafficMirrorTargetId"]
    # An ENI target: the capture agent accepts the VNI only from the source ENI's address.
    (eni,) = ec2.describe_network_interfaces(NetworkInterfaceIds=[described["NetworkInterfaceId"]])["NetworkInterfaces"]
    assert status["sourceAddresses"] == [eni["PrivateIpAddress"]]
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags["trafficmirror.io/owner-uid"] == session["metadata"]["uid"]
    assert tags["trafficmirror.io/owner"] == f"MirrorSession/{cluster.namespace}/web"
