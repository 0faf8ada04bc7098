"""The operator's defects found in trial use, each reproduced against the real apiserver and the
emulator, with the AWS calls counted where a loop was the defect (from the operator's own metrics)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.conftest import RESYNC_SECONDS, Cluster, condition, fresh_instance, ready_condition
from trafficmirror_testbed.emulator import Emulator
from trafficmirror_testbed.seed import World

TWO_PERIODS = 2 * RESYNC_SECONDS
# Two resync periods, plus what a loaded 2-core machine adds to a reconcile and a watch event.
CONVERGE_SECONDS = TWO_PERIODS + 20
NLB = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/capture/0123456789abcdef"
RULE = {"ruleNumber": 10, "protocol": 6, "destinationPortRange": {"fromPort": 443, "toPort": 443}}


def _filter(name: str = "https", **spec: Any) -> dict[str, Any]:
    return {"kind": "MirrorFilter", "metadata": {"name": name}, "spec": {"ingressRules": [RULE], **spec}}


def _target(name: str = "capture", **spec: Any) -> dict[str, Any]:
    return {"kind": "MirrorTarget", "metadata": {"name": name}, "spec": spec}


def _session(source_eni: str, name: str = "web", **spec: Any) -> dict[str, Any]:
    return {
        "kind": "MirrorSession",
        "metadata": {"name": name},
        "spec": {
            "source": {"networkInterfaceId": source_eni},
            "targetRef": {"name": "capture"},
            "filterRef": {"name": "https"},
            **spec,
        },
    }


def _status(cluster: Cluster, kind: str, name: str) -> dict[str, Any]:
    found = cluster.get(kind, name)
    assert found is not None, f"{kind}/{name} is gone"
    status: dict[str, Any] = found.get("status", {})
    return status


def _calls(cluster: Cluster, *operations: str) -> float:
    return sum(cluster.operator.aws_calls(op) for op in operations)


def _steady(cluster: Cluster, operations: tuple[str, ...], seconds: float = 3 * RESYNC_SECONDS) -> float:
    """The calls of `operations` the operator makes while nothing changes, over `seconds`."""
    before = _calls(cluster, *operations)
    time.sleep(seconds)
    return _calls(cluster, *operations) - before


MUTATING_SESSION = ("ModifyTrafficMirrorSession", "CreateTrafficMirrorSession", "DeleteTrafficMirrorSession")
MUTATING_FILTER = (
    "CreateTrafficMirrorFilterRule",
    "ModifyTrafficMirrorFilterRule",
    "DeleteTrafficMirrorFilterRule",
    "ModifyTrafficMirrorFilterNetworkServices",
)


@pytest.fixture
def source_eni(ec2: Any, world: World) -> str:
    return fresh_instance(ec2, world)[1]


@pytest.fixture
def mirrored(cluster: Cluster, world: World, source_eni: str) -> dict[str, Any]:
    cluster.apply(_filter())
    cluster.apply(_target(networkInterfaceId=world.eni("capture")))
    cluster.apply(_session(source_eni))
    return cluster.wait_phase("mirrorsession", "web", "Ready")


# --- 1. a recorded resource deleted outside -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mirrorsession", "mirrortarget", "mirrorfilter"])
def test_any_recorded_resource_deleted_outside_is_recreated_with_a_new_id(
    cluster: Cluster, mirrored: Any, ec2: Any, kind: str
) -> None:
    name = {"mirrorsession": "web", "mirrortarget": "capture", "mirrorfilter": "https"}[kind]
    id_field, delete, create = {
        "mirrorsession": ("trafficMirrorSessionId", "delete_traffic_mirror_session", "CreateTrafficMirrorSession"),
        "mirrortarget": ("trafficMirrorTargetId", "delete_traffic_mirror_target", "CreateTrafficMirrorTarget"),
        "mirrorfilter": ("trafficMirrorFilterId", "delete_traffic_mirror_filter", "CreateTrafficMirrorFilter"),
    }[kind]
    if kind != "mirrorsession":  # AWS deletes a target or filter only once no session uses it
        cluster.delete("mirrorsession", "web")
    old_id = _status(cluster, kind, name)[id_field]
    creates = _calls(cluster, create)
    getattr(ec2, delete)(**{id_field[0].upper() + id_field[1:]: old_id})

    recreated = cluster.wait_for(
        kind,
        name,
        lambda o: o["status"].get(id_field) not in (None, old_id) and o["status"]["phase"] == "Ready",
        timeout=CONVERGE_SECONDS,
    )
    new_id = recreated["status"][id_field]
    describe = {
        "mirrorsession": lambda: ec2.describe_traffic_mirror_sessions(TrafficMirrorSessionIds=[new_id]),
        "mirrortarget": lambda: ec2.describe_traffic_mirror_targets(TrafficMirrorTargetIds=[new_id]),
        "mirrorfilter": lambda: ec2.describe_traffic_mirror_filters(TrafficMirrorFilterIds=[new_id]),
    }[kind]
    assert describe(), f"{new_id} is not in AWS"
    # Settled: it stays on the new ID, with exactly one more create, and no flip back to Pending.
    time.sleep(TWO_PERIODS)
    settled = _status(cluster, kind, name)
    assert settled[id_field] == new_id and settled["phase"] == "Ready"
    assert _calls(cluster, create) - creates == 1


# --- 2. spec.region ----------------------------------------------------------------------------------


def test_objects_in_another_region_use_that_region_for_every_call(
    cluster: Cluster, emulator: Emulator, ec2: Any
) -> None:
    west = emulator.client("ec2", region="us-west-2")
    vpc = west.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    subnet = west.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24")["Subnet"]["SubnetId"]
    image = west.describe_images()["Images"][0]["ImageId"]
    enis = [
        west.run_instances(ImageId=image, InstanceType=t, MinCount=1, MaxCount=1, SubnetId=subnet)["Instances"][0][
            "NetworkInterfaces"
        ][0]["NetworkInterfaceId"]
        for t in ("c5.large", "t3.small")
    ]
    cluster.apply(_filter(region="us-west-2"))
    cluster.apply(_target(networkInterfaceId=enis[0], region="us-west-2"))
    cluster.apply(_session(enis[1], region="us-west-2"))
    session = cluster.wait_phase("mirrorsession", "web", "Ready", timeout=90)
    target = cluster.wait_phase("mirrortarget", "capture", "Ready")
    assert target["status"]["instanceType"] == "c5.large"
    session_id = session["status"]["trafficMirrorSessionId"]
    assert west.describe_traffic_mirror_sessions(TrafficMirrorSessionIds=[session_id])["TrafficMirrorSessions"]
    home = [s["TrafficMirrorSessionId"] for s in ec2.describe_traffic_mirror_sessions()["TrafficMirrorSessions"]]
    assert session_id not in home


def test_a_target_whose_eni_is_not_found_says_so_in_its_status(cluster: Cluster) -> None:
    cluster.apply(_target(networkInterfaceId="eni-0000000000000dead"))
    pending = cluster.wait_for(
        "mirrortarget", "capture", lambda o: bool(o.get("status", {}).get("conditions")), timeout=CONVERGE_SECONDS
    )
    assert pending["status"]["phase"] == "Pending"
    assert "eni-0000000000000dead" in ready_condition(pending)["message"]


# --- 3. supported sources are not refused before AWS is asked ------------------------------------------


@pytest.mark.parametrize("instance_type", ["c5.large", "m5.large", "r5.large", "c4.large", "m4.large"])
def test_a_source_of_a_supported_type_is_mirrored(cluster: Cluster, world: World, ec2: Any, instance_type: str) -> None:
    cluster.apply(_filter())
    cluster.apply(_target(networkInterfaceId=world.eni("capture")))
    cluster.apply(_session(fresh_instance(ec2, world, instance_type)[1]))
    session = cluster.wait_for(
        "mirrorsession", "web", lambda o: o.get("status", {}).get("phase") in ("Ready", "Failed"), timeout=60
    )
    assert session["status"]["phase"] == "Ready", ready_condition(session)


# --- 4. tags ---------------------------------------------------------------------------------------


def test_tags_follow_the_spec_and_come_back_when_removed_outside(
    cluster: Cluster, mirrored: Any, source_eni: str, ec2: Any
) -> None:
    session_id = mirrored["status"]["trafficMirrorSessionId"]

    def tags() -> dict[str, str]:
        found = ec2.describe_traffic_mirror_sessions(TrafficMirrorSessionIds=[session_id])["TrafficMirrorSessions"]
        return {t["Key"]: t["Value"] for t in found[0].get("Tags", [])}

    cluster.apply(_session(source_eni, tags={"team": "netops"}))
    _wait(lambda: tags().get("team") == "netops", CONVERGE_SECONDS, "the spec's tag never reached AWS")
    ec2.delete_tags(Resources=[session_id], Tags=[{"Key": "team"}])
    ec2.create_tags(Resources=[session_id], Tags=[{"Key": "stray", "Value": "x"}])
    _wait(
        lambda: tags().get("team") == "netops" and "stray" not in tags(),
        CONVERGE_SECONDS,
        f"tags not repaired: {tags()}",
    )
    assert tags()["trafficmirror.io/owner-uid"] == cluster.get("mirrorsession", "web")["metadata"]["uid"]
    assert _steady(cluster, ("CreateTags", "DeleteTags")) == 0


def test_a_long_object_name_gets_an_owner_tag_aws_accepts(cluster: Cluster, ec2: Any) -> None:
    name = "f" * 253
    cluster.apply(_filter(name=name))
    ready = cluster.wait_phase("mirrorfilter", name, "Ready")
    found = ec2.describe_traffic_mirror_filters(TrafficMirrorFilterIds=[ready["status"]["trafficMirrorFilterId"]])
    tags = {t["Key"]: t["Value"] for t in found["TrafficMirrorFilters"][0]["Tags"]}
    assert all(len(v) <= 256 for v in tags.values())
    assert tags["trafficmirror.io/owner-uid"] == cluster.get("mirrorfilter", name)["metadata"]["uid"]


# --- 5. no modify loop --------------------------------------------------------------------------------


def test_a_session_to_an_nlb_without_packet_length_is_not_modified_every_resync(
    cluster: Cluster, source_eni: str
) -> None:
    cluster.apply(_filter())
    cluster.apply(_target(networkLoadBalancerArn=NLB))
    cluster.apply(_session(source_eni))
    ready = cluster.wait_phase("mirrorsession", "web", "Ready")
    assert ready["status"]["packetLength"] == 8500
    assert _steady(cluster, MUTATING_SESSION) == 0


def test_ipv6_rules_in_any_spelling_are_not_rewritten_every_resync(cluster: Cluster) -> None:
    rule = {"ruleNumber": 20, "sourceCidrBlock": "2001:DB8:0::/48", "destinationCidrBlock": "::/0"}
    cluster.apply(_filter(egressRules=[rule]))
    cluster.wait_for("mirrorfilter", "https", lambda o: "egress/20" in o.get("status", {}).get("ruleIds", {}))
    assert _steady(cluster, MUTATING_FILTER) == 0


# --- 6. no hot delete loop ----------------------------------------------------------------------------


def test_a_target_moved_to_a_t2_micro_is_not_deleted_in_a_loop(cluster: Cluster, mirrored: Any, world: World) -> None:
    cluster.apply(_target(networkInterfaceId=world.eni("legacy-capture")))
    cluster.wait_for(
        "mirrortarget", "capture", lambda o: bool(o.get("status", {}).get("previousTargetIds")), timeout=60
    )
    session = cluster.wait_for(
        "mirrorsession", "web", lambda o: o["status"].get("phase") == "Failed", timeout=CONVERGE_SECONDS
    )
    assert ready_condition(session)["reason"] == "UnsupportedInstanceType"
    deletes = _steady(cluster, ("DeleteTrafficMirrorTarget", "ModifyTrafficMirrorSession"))
    assert deletes == 0, f"{deletes} target deletes or session moves that AWS already refused"
    replaced = condition(cluster.get("mirrortarget", "capture") or {}, "Replaced")
    assert replaced is not None and replaced["reason"] == "WaitingForSessions"


# --- 7. adoption fights -------------------------------------------------------------------------------


def test_adopting_a_filter_another_live_object_manages_is_refused_naming_it(cluster: Cluster) -> None:
    cluster.apply(_filter())
    filter_id = cluster.wait_phase("mirrorfilter", "https", "Ready")["status"]["trafficMirrorFilterId"]
    cluster.apply(_filter(name="thief", adoptId=filter_id, ingressRules=[{"ruleNumber": 99}]))
    refused = cluster.wait_phase("mirrorfilter", "thief", "Failed")
    assert ready_condition(refused)["reason"] == "OwnedByAnother"
    assert f"MirrorFilter {cluster.namespace}/https" in ready_condition(refused)["message"]
    assert _steady(cluster, MUTATING_FILTER) == 0
    cluster.delete("mirrorfilter", "thief")  # no InUse, no leftover
    assert cluster.get("mirrorfilter", "https")["status"]["phase"] == "Ready"


# --- 8. quota is a fact of the world ------------------------------------------------------------------


def test_a_session_over_the_source_quota_is_created_once_a_slot_frees(
    cluster: Cluster, mirrored: Any, source_eni: str, ec2: Any
) -> None:
    status = mirrored["status"]
    others = [
        ec2.create_traffic_mirror_session(
            NetworkInterfaceId=source_eni,
            TrafficMirrorTargetId=status["trafficMirrorTargetId"],
            TrafficMirrorFilterId=status["trafficMirrorFilterId"],
            SessionNumber=number,
        )["TrafficMirrorSession"]["TrafficMirrorSessionId"]
        for number in (2, 3)
    ]
    cluster.apply(_session(source_eni, name="fourth", sessionNumber=4))
    failed = cluster.wait_phase("mirrorsession", "fourth", "Failed")
    assert ready_condition(failed)["reason"] == "QuotaExceeded"
    ec2.delete_traffic_mirror_session(TrafficMirrorSessionId=others[0])
    cluster.wait_phase("mirrorsession", "fourth", "Ready", timeout=CONVERGE_SECONDS)
    # Not the operator's to delete: without this the target and filter wait on it in every later test.
    ec2.delete_traffic_mirror_session(TrafficMirrorSessionId=others[1])


def test_a_session_to_a_stopped_target_instance_is_created_once_it_runs_again(
    cluster: Cluster, world: World, ec2: Any, source_eni: str
) -> None:
    """A target's instance stopped (e.g. to change its type): AWS refuses sessions to it, a fact that changes.
    The session says TargetNotRunning, asks AWS again once a resync period (not in a loop), and is Ready once
    the instance runs."""
    instance_id, eni = fresh_instance(ec2, world, "c5.large")
    cluster.apply(_filter())
    cluster.apply(_target(networkInterfaceId=eni))
    cluster.wait_phase("mirrortarget", "capture", "Ready")
    ec2.stop_instances(InstanceIds=[instance_id])
    cluster.apply(_session(source_eni))
    failed = cluster.wait_phase("mirrorsession", "web", "Failed")
    assert ready_condition(failed)["reason"] == "TargetNotRunning", ready_condition(failed)
    assert "stopped" in ready_condition(failed)["message"]
    creates = _steady(cluster, ("CreateTrafficMirrorSession",))
    assert creates <= 4, f"{creates} creates in 3 resync periods while the target's instance was stopped"
    ec2.start_instances(InstanceIds=[instance_id])
    ready = cluster.wait_phase("mirrorsession", "web", "Ready", timeout=CONVERGE_SECONDS)
    found = ec2.describe_traffic_mirror_sessions(TrafficMirrorSessionIds=[ready["status"]["trafficMirrorSessionId"]])
    assert found["TrafficMirrorSessions"][0]["NetworkInterfaceId"] == source_eni


# --- 9. stale status ---------------------------------------------------------------------------------


def test_a_resized_target_instance_updates_its_type_and_warning(cluster: Cluster, world: World, ec2: Any) -> None:
    instance_id, eni = fresh_instance(ec2, world, "t2.micro")
    cluster.apply(_target(networkInterfaceId=eni))
    doubtful = cluster.wait_phase("mirrortarget", "capture", "Ready")
    assert (condition(doubtful, "InstanceTypeSupported") or {}).get("reason") == "DoubtfulInstanceType"
    ec2.stop_instances(InstanceIds=[instance_id])
    ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "c5.large"})
    ec2.start_instances(InstanceIds=[instance_id])
    resized = cluster.wait_for(
        "mirrortarget",
        "capture",
        lambda o: o["status"].get("instanceType") == "c5.large",
        timeout=CONVERGE_SECONDS + 15,  # the instance-type cache lives 15 s
    )
    assert (condition(resized, "InstanceTypeSupported") or {}).get("status") == "True"


def test_a_delete_that_waits_for_sessions_shows_deleting(cluster: Cluster, mirrored: Any) -> None:
    cluster.delete("mirrortarget", "capture", wait=False)
    waiting = cluster.wait_for(
        "mirrortarget", "capture", lambda o: ready_condition(o)["reason"] == "WaitingForSessions"
    )
    time.sleep(RESYNC_SECONDS)
    assert _status(cluster, "mirrortarget", "capture")["phase"] == "Deleting", waiting["status"]


def _wait(predicate: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(message)
