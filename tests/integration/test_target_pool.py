"""Sessions choosing their target from a pool (spec.targetSelector): 25 sources over three ENI targets
in two Availability Zones and one NLB target, against the real apiserver and the AWS emulator, whose
sources-per-target limit follows the quota of each target's instance type (10 for c5.large).

15 sources sit in us-east-1a, which has one ENI target (10 sources at most); 10 sit in us-east-1b,
which has two. So: a's target fills to its quota, a's other 5 spill onto the NLB (not across zones),
b's 10 stay in b. Then a b target is deleted and its sources move to the other b target.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter, defaultdict
from typing import Any

from trafficmirror_testbed.seed import World

from .conftest import Cluster, condition

ZONE_QUOTA = 10  # c5.large: not on AWS's list of 100-source types
NLB_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/capture-pool/{}"


def _launch(ec2: Any, world: World, instance_type: str, subnet: str, count: int) -> list[str]:
    launched = ec2.run_instances(
        ImageId=world.image_id,
        InstanceType=instance_type,
        MinCount=count,
        MaxCount=count,
        SubnetId=world.subnet_ids[subnet],
    )["Instances"]
    return [i["NetworkInterfaces"][0]["NetworkInterfaceId"] for i in launched]


def _apply_all(cluster: Cluster, items: list[dict[str, Any]]) -> None:
    manifests = [{**item, "apiVersion": "trafficmirror.io/v1alpha1"} for item in items]
    cluster.control_plane.kubectl(
        "apply",
        "-n",
        cluster.namespace,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
    )


def _sessions(cluster: Cluster) -> dict[str, dict[str, Any]]:
    result = cluster.control_plane.kubectl("get", "-n", cluster.namespace, "mirrorsessions", "-o", "json")
    return {item["metadata"]["name"]: item for item in json.loads(result.stdout)["items"]}


def _wait_all_ready(cluster: Cluster, names: list[str], timeout: float = 180) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    sessions: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        sessions = _sessions(cluster)
        if all(sessions.get(n, {}).get("status", {}).get("phase") == "Ready" for n in names):
            return sessions
        time.sleep(1)
    phases = Counter(s.get("status", {}).get("phase") for s in sessions.values())
    raise AssertionError(f"not all sessions Ready: {phases}\noperator log:\n{cluster.operator.log_tail()}")


def _aws_sources_by_target(ec2: Any, source_enis: set[str]) -> dict[str, set[str]]:
    by_target: dict[str, set[str]] = defaultdict(set)
    for session in ec2.describe_traffic_mirror_sessions()["TrafficMirrorSessions"]:
        if session["NetworkInterfaceId"] in source_enis:
            by_target[session["TrafficMirrorTargetId"]].add(session["NetworkInterfaceId"])
    return by_target


def test_25_sources_over_three_eni_targets_in_two_zones_and_an_nlb_then_a_target_deleted(
    cluster: Cluster, ec2: Any, world: World
) -> None:
    pool = f"pool-{secrets.token_hex(3)}"
    labels = {"trafficmirror.io/pool": pool}
    capture = {
        "capture-a1": _launch(ec2, world, "c5.large", "a", 1)[0],
        "capture-b1": _launch(ec2, world, "c5.large", "b", 1)[0],
        "capture-b2": _launch(ec2, world, "c5.large", "b", 1)[0],
    }
    sources_a = _launch(ec2, world, "t3.small", "a", 15)
    sources_b = _launch(ec2, world, "t3.small", "b", 10)
    zone_of = {**dict.fromkeys(sources_a, "us-east-1a"), **dict.fromkeys(sources_b, "us-east-1b")}
    targets: list[dict[str, Any]] = [
        {"kind": "MirrorTarget", "metadata": {"name": name, "labels": labels}, "spec": {"networkInterfaceId": eni}}
        for name, eni in capture.items()
    ]
    targets.append(
        {
            "kind": "MirrorTarget",
            "metadata": {"name": "capture-nlb", "labels": labels},
            "spec": {"networkLoadBalancerArn": NLB_ARN.format(secrets.token_hex(8))},
        }
    )
    # A target outside the pool (other labels) is never chosen.
    targets.append(
        {
            "kind": "MirrorTarget",
            "metadata": {"name": "elsewhere", "labels": {"trafficmirror.io/pool": "other"}},
            "spec": {"networkInterfaceId": _launch(ec2, world, "c5.large", "a", 1)[0]},
        }
    )
    mirror_filter = {"kind": "MirrorFilter", "metadata": {"name": "all"}, "spec": {"ingressRules": [{"ruleNumber": 1}]}}
    _apply_all(cluster, [*targets, mirror_filter])
    for target in targets:
        cluster.wait_phase("mirrortarget", target["metadata"]["name"], "Ready", timeout=90)
    target_ids = {
        name: cluster.wait_phase("mirrortarget", name, "Ready")["status"]["trafficMirrorTargetId"]
        for name in [*capture, "capture-nlb", "elsewhere"]
    }
    name_of = {aws_id: name for name, aws_id in target_ids.items()}

    source_enis = [*sources_a, *sources_b]
    names = [f"src-{i:02d}" for i in range(len(source_enis))]
    _apply_all(
        cluster,
        [
            {
                "kind": "MirrorSession",
                "metadata": {"name": name},
                "spec": {
                    "source": {"networkInterfaceId": eni},
                    "targetSelector": {"matchLabels": labels},
                    "filterRef": {"name": "all"},
                },
            }
            for name, eni in zip(names, source_enis, strict=True)
        ],
    )
    sessions = _wait_all_ready(cluster, names)

    # AWS: no target above its quota; a's target full, a's overflow on the NLB, b's sources in b.
    by_target = _aws_sources_by_target(ec2, set(source_enis))
    counts = {name_of[t]: len(s) for t, s in by_target.items()}
    assert counts.get("elsewhere") is None, counts
    for name in capture:
        assert counts.get(name, 0) <= ZONE_QUOTA, counts
    assert counts["capture-a1"] == ZONE_QUOTA, counts
    assert counts["capture-nlb"] == 5, counts
    assert counts.get("capture-b1", 0) + counts.get("capture-b2", 0) == 10, counts
    assert by_target[target_ids["capture-nlb"]] <= set(sources_a)  # only a's overflow
    assert by_target[target_ids["capture-a1"]] <= set(sources_a)

    # Status says which target each source got and why, and agrees with AWS.
    for name, eni in zip(names, source_enis, strict=True):
        status = sessions[name]["status"]
        chosen = condition(sessions[name], "TargetChosen")
        assert chosen is not None and chosen["status"] == "True", status
        assert eni in by_target[target_ids[status["targetName"]]]
        assert status["trafficMirrorTargetId"] == target_ids[status["targetName"]]
        if status["targetName"] == "capture-nlb":
            assert chosen["reason"] == "LoadBalancerOverflow" and zone_of[eni] == "us-east-1a"
        else:
            assert chosen["reason"] == "SameZone", chosen
            assert zone_of[eni] in chosen["message"]

    # A b target is deleted: its sources move (to the other b target: 10 fit there), nothing points at it.
    moved = [n for n in names if sessions[n]["status"]["targetName"] == "capture-b1"]
    cluster.delete("mirrortarget", "capture-b1")
    after = _wait_all_ready(cluster, names)
    assert all(after[n]["status"]["targetName"] == "capture-b2" for n in moved), {
        n: after[n]["status"]["targetName"] for n in moved
    }
    by_target = _aws_sources_by_target(ec2, set(source_enis))
    assert target_ids["capture-b1"] not in by_target
    assert by_target[target_ids["capture-b2"]] == set(sources_b)
    for target_id, enis in by_target.items():
        assert name_of[target_id] == "capture-nlb" or len(enis) <= ZONE_QUOTA
    remaining = {t["TrafficMirrorTargetId"] for t in ec2.describe_traffic_mirror_targets()["TrafficMirrorTargets"]}
    assert target_ids["capture-b1"] not in remaining
