"""The field report, end to end: t2.micro refused clearly, then fixed by changing the instance type."""

from __future__ import annotations

import time
from typing import Any

from tests.integration.conftest import RESYNC_SECONDS, Cluster, condition, ready_condition


def _run_instance(ec2: Any, instance_type: str, subnet_id: str) -> tuple[str, str]:
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, InstanceType=instance_type, MinCount=1, MaxCount=1, SubnetId=subnet_id)[
        "Instances"
    ][0]
    return instance["InstanceId"], instance["NetworkInterfaces"][0]["NetworkInterfaceId"]


def _change_type(ec2: Any, instance_id: str, instance_type: str) -> None:
    """The field report's fix: stop, change the type, start."""
    ec2.stop_instances(InstanceIds=[instance_id])
    ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": instance_type})
    ec2.start_instances(InstanceIds=[instance_id])


def _sessions_on(ec2: Any, eni: str) -> list[dict[str, Any]]:
    found = ec2.describe_traffic_mirror_sessions(Filters=[{"Name": "network-interface-id", "Values": [eni]}])
    sessions: list[dict[str, Any]] = found["TrafficMirrorSessions"]
    return sessions


def test_t2_micro_is_refused_clearly_and_recovers_after_the_type_change(cluster: Cluster, ec2: Any, world: Any) -> None:
    subnet = next(iter(world.subnet_ids.values()))
    web, web_eni = _run_instance(ec2, "t2.micro", subnet)
    capture, capture_eni = _run_instance(ec2, "t2.micro", subnet)
    good_source, good_source_eni = _run_instance(ec2, "t3.small", subnet)
    rule = {"ruleNumber": 100}
    cluster.apply({"kind": "MirrorFilter", "metadata": {"name": "all"}, "spec": {"ingressRules": [rule]}})
    cluster.apply({"kind": "MirrorTarget", "metadata": {"name": "ec2-2"}, "spec": {"networkInterfaceId": capture_eni}})

    # The target on a t2.micro is accepted by AWS, as in the report, with a warning.
    target = cluster.wait_phase("mirrortarget", "ec2-2", "Ready")
    warning = condition(target, "InstanceTypeSupported")
    assert warning is not None and warning["status"] == "False" and warning["reason"] == "DoubtfulInstanceType"
    assert any(e["reason"] == "DoubtfulInstanceType" and e["type"] == "Warning" for e in cluster.events("ec2-2"))

    def session(name: str, eni: str) -> dict[str, Any]:
        return {
            "kind": "MirrorSession",
            "metadata": {"name": name},
            "spec": {
                "source": {"networkInterfaceId": eni},
                "targetRef": {"name": "ec2-2"},
                "filterRef": {"name": "all"},
            },
        }

    # A t2.micro source fails before AWS is asked: no session exists in AWS for it.
    cluster.apply(session("ec2-1", web_eni))
    failed = cluster.wait_phase("mirrorsession", "ec2-1", "Failed")
    reason = ready_condition(failed)
    assert reason["reason"] == "UnsupportedInstanceType"
    for word in (web_eni, web, "t2.micro", "t3.micro"):
        assert word in reason["message"]
    assert _sessions_on(ec2, web_eni) == []
    assert any(e["reason"] == "UnsupportedInstanceType" for e in cluster.events("ec2-1"))

    # A supported source to the t2.micro target: AWS refuses it, as the report saw; we say which side.
    cluster.apply(session("good-source", good_source_eni))
    refused = cluster.wait_phase("mirrorsession", "good-source", "Failed")
    assert ready_condition(refused)["reason"] == "UnsupportedInstanceType"
    assert f"{capture_eni} must be attached to a supported instance" in ready_condition(refused)["message"]
    assert refused["status"]["rejectedNetworkInterfaceId"] == capture_eni

    # Failed is terminal: nothing retries in a loop. Over three resync periods the resync looks at
    # the instance types again but never asks AWS to create, and the objects do not churn.
    creates_before = cluster.operator.aws_calls("CreateTrafficMirrorSession")
    versions_before = [cluster.get("mirrorsession", n)["metadata"]["resourceVersion"] for n in ("ec2-1", "good-source")]
    time.sleep(3 * RESYNC_SECONDS)
    assert cluster.operator.aws_calls("CreateTrafficMirrorSession") == creates_before
    assert [
        cluster.get("mirrorsession", n)["metadata"]["resourceVersion"] for n in ("ec2-1", "good-source")
    ] == versions_before

    # The fix from the report: both instances become t3.small; the sessions recover by themselves.
    _change_type(ec2, web, "t3.small")
    _change_type(ec2, capture, "t3.small")
    ready = cluster.wait_phase("mirrorsession", "ec2-1", "Ready", timeout=60)
    cluster.wait_phase("mirrorsession", "good-source", "Ready", timeout=60)
    assert [s["TrafficMirrorSessionId"] for s in _sessions_on(ec2, web_eni)] == [
        ready["status"]["trafficMirrorSessionId"]
    ]
    assert ready["status"]["sourceInstanceType"] == "t3.small"
    del good_source
