"""Mirror sessions against the emulator: what AWS checks at CreateTrafficMirrorSession, and the quotas."""

from __future__ import annotations

from typing import Any

import pytest

from trafficmirror_testbed.emulator import Emulator
from trafficmirror_testbed.seed import World

pytestmark = pytest.mark.emulator

NLB_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/capture/0123456789abcdef"


# -- Create / Describe / Modify / Delete ------------------------------------------------------------------
def test_create_describe_delete_session(ec2: Any, mirror: Any, world: World) -> None:
    target, filter_id = mirror.target("capture"), mirror.filter()
    created = ec2.create_traffic_mirror_session(
        NetworkInterfaceId=world.eni("web"),
        TrafficMirrorTargetId=target,
        TrafficMirrorFilterId=filter_id,
        SessionNumber=1,
        PacketLength=128,
        VirtualNetworkId=12388352,
        Description="web to capture",
        TagSpecifications=[{"ResourceType": "traffic-mirror-session", "Tags": [{"Key": "owner", "Value": "s"}]}],
    )["TrafficMirrorSession"]
    assert created["TrafficMirrorSessionId"].startswith("tms-")
    assert created["NetworkInterfaceId"] == world.eni("web")
    assert (created["TrafficMirrorTargetId"], created["TrafficMirrorFilterId"]) == (target, filter_id)
    assert (created["SessionNumber"], created["PacketLength"], created["VirtualNetworkId"]) == (
        1,
        128,
        12388352,
    )
    assert created["Description"] == "web to capture"
    assert created["OwnerId"] == "123456789012"
    assert created["Tags"] == [{"Key": "owner", "Value": "s"}]

    described = ec2.describe_traffic_mirror_sessions(TrafficMirrorSessionIds=[created["TrafficMirrorSessionId"]])
    assert described["TrafficMirrorSessions"] == [created]
    ec2.delete_traffic_mirror_session(TrafficMirrorSessionId=created["TrafficMirrorSessionId"])
    assert ec2.describe_traffic_mirror_sessions()["TrafficMirrorSessions"] == []


def test_virtual_network_id_is_assigned_when_omitted(mirror: Any) -> None:
    target, filter_id = mirror.target("capture"), mirror.filter()
    first = mirror.session("web", target, TrafficMirrorFilterId=filter_id, SessionNumber=1)
    second = mirror.session("web", target, TrafficMirrorFilterId=filter_id, SessionNumber=2)
    for session in (first, second):
        assert 0 <= session["VirtualNetworkId"] <= 16777215
        assert "PacketLength" not in session  # omitted = the whole packet
    assert first["VirtualNetworkId"] != second["VirtualNetworkId"]


def test_describe_sessions_by_filters_and_pages(ec2: Any, mirror: Any, world: World) -> None:
    target, filter_id = mirror.target("capture"), mirror.filter()
    sources = [eni for _, eni in mirror.launch("t3.small", count=3)]
    made = [
        mirror.session(eni, target, TrafficMirrorFilterId=filter_id, SessionNumber=n + 1, VirtualNetworkId=100 + n)
        for n, eni in enumerate(sources)
    ]
    ids = [s["TrafficMirrorSessionId"] for s in made]

    def found(name: str, value: str) -> list[str]:
        result = ec2.describe_traffic_mirror_sessions(Filters=[{"Name": name, "Values": [value]}])
        return [s["TrafficMirrorSessionId"] for s in result["TrafficMirrorSessions"]]

    assert found("network-interface-id", sources[1]) == [ids[1]]
    assert found("session-number", "3") == [ids[2]]
    assert found("virtual-network-id", "100") == [ids[0]]
    assert found("traffic-mirror-target-id", target) == ids
    assert found("traffic-mirror-filter-id", filter_id) == ids
    assert found("traffic-mirror-session-id", ids[2]) == [ids[2]]
    assert found("owner-id", "123456789012") == ids
    pages = ec2.get_paginator("describe_traffic_mirror_sessions").paginate(PaginationConfig={"PageSize": 5})
    assert [s["TrafficMirrorSessionId"] for p in pages for s in p["TrafficMirrorSessions"]] == ids


def test_modify_session(ec2: Any, mirror: Any) -> None:
    session = mirror.session("web", mirror.target("capture"), PacketLength=100, Description="old")
    new_target, new_filter = mirror.target("capture"), mirror.filter()
    modified = ec2.modify_traffic_mirror_session(
        TrafficMirrorSessionId=session["TrafficMirrorSessionId"],
        TrafficMirrorTargetId=new_target,
        TrafficMirrorFilterId=new_filter,
        SessionNumber=7,
        VirtualNetworkId=42,
        PacketLength=200,
        Description="new",
    )["TrafficMirrorSession"]
    assert modified["TrafficMirrorTargetId"] == new_target
    assert modified["TrafficMirrorFilterId"] == new_filter
    assert (modified["SessionNumber"], modified["VirtualNetworkId"], modified["PacketLength"]) == (7, 42, 200)
    assert modified["Description"] == "new"
    assert modified["NetworkInterfaceId"] == session["NetworkInterfaceId"]
    described = ec2.describe_traffic_mirror_sessions()["TrafficMirrorSessions"]
    assert described == [modified]


def test_modify_session_remove_fields(ec2: Any, mirror: Any) -> None:
    session = mirror.session("web", PacketLength=100, Description="d", VirtualNetworkId=5)
    modified = ec2.modify_traffic_mirror_session(
        TrafficMirrorSessionId=session["TrafficMirrorSessionId"],
        RemoveFields=["packet-length", "description", "virtual-network-id"],
    )["TrafficMirrorSession"]
    assert "PacketLength" not in modified
    assert "Description" not in modified
    assert modified["VirtualNetworkId"] != 5  # back to the default: a fresh random one


def test_session_not_found(ec2: Any, expect_error: Any) -> None:
    missing = "tms-0123456789abcdef0"
    message = expect_error(
        "InvalidTrafficMirrorSessionId.NotFound",
        ec2.delete_traffic_mirror_session,
        TrafficMirrorSessionId=missing,
    )
    assert message == f"The traffic mirror session ID '{missing}' does not exist"
    expect_error(
        "InvalidTrafficMirrorSessionId.NotFound",
        ec2.modify_traffic_mirror_session,
        TrafficMirrorSessionId=missing,
        Description="x",
    )
    expect_error(
        "InvalidTrafficMirrorSessionId.NotFound",
        ec2.describe_traffic_mirror_sessions,
        TrafficMirrorSessionIds=[missing],
    )


def test_session_needs_existing_target_filter_and_source(ec2: Any, mirror: Any, expect_error: Any) -> None:
    params = mirror.session_params("web")
    expect_error(
        "InvalidTrafficMirrorTargetId.NotFound",
        ec2.create_traffic_mirror_session,
        **{**params, "TrafficMirrorTargetId": "tmt-0123456789abcdef0"},
    )
    expect_error(
        "InvalidTrafficMirrorFilterId.NotFound",
        ec2.create_traffic_mirror_session,
        **{**params, "TrafficMirrorFilterId": "tmf-0123456789abcdef0"},
    )
    expect_error(
        "InvalidNetworkInterfaceID.NotFound",
        ec2.create_traffic_mirror_session,
        **{**params, "NetworkInterfaceId": "eni-0123456789abcdef0"},
    )
    session = mirror.session("web")
    expect_error(
        "InvalidTrafficMirrorTargetId.NotFound",
        ec2.modify_traffic_mirror_session,
        TrafficMirrorSessionId=session["TrafficMirrorSessionId"],
        TrafficMirrorTargetId="tmt-0123456789abcdef0",
    )


def test_session_client_token(ec2: Any, mirror: Any, expect_error: Any) -> None:
    params = mirror.session_params("web")
    first = ec2.create_traffic_mirror_session(ClientToken="uid-s", **params)["TrafficMirrorSession"]
    again = ec2.create_traffic_mirror_session(ClientToken="uid-s", **params)
    assert again["TrafficMirrorSession"] == first
    assert again["ClientToken"] == "uid-s"
    expect_error(
        "IdempotentParameterMismatch",
        ec2.create_traffic_mirror_session,
        ClientToken="uid-s",
        **{**params, "SessionNumber": 2},
    )
    assert len(ec2.describe_traffic_mirror_sessions()["TrafficMirrorSessions"]) == 1


# -- Instance types: the field report ---------------------------------------------------------------------
def test_source_on_t2_micro_is_refused_with_the_field_reports_message(
    ec2: Any, mirror: Any, world: World, expect_error: Any
) -> None:
    message = expect_error(
        "NetworkInterfaceNotSupported",
        ec2.create_traffic_mirror_session,
        **mirror.session_params("legacy-web"),
    )
    assert message == f"{world.eni('legacy-web')} must be attached to a supported instance"


@pytest.mark.parametrize("role", ["gpu", "metal"])
def test_source_on_other_unsupported_types_is_refused(
    ec2: Any, mirror: Any, world: World, expect_error: Any, role: str
) -> None:
    message = expect_error(
        "NetworkInterfaceNotSupported", ec2.create_traffic_mirror_session, **mirror.session_params(role)
    )
    assert message == f"{world.eni(role)} must be attached to a supported instance"


@pytest.mark.parametrize("instance_type", ["c6i.large", "m1.small", "u-6tb1.metal", "c7i.metal-24xl"])
def test_emulators_own_rule_set(mirror: Any, expect_error: Any, instance_type: str) -> None:
    [(_, eni)] = mirror.launch(instance_type)
    expect_error("NetworkInterfaceNotSupported", mirror.session, source=eni)


@pytest.mark.parametrize("instance_type", ["m5.large", "c4.large", "r5.xlarge", "t3a.nano"])
def test_supported_types_pass(mirror: Any, instance_type: str) -> None:
    [(_, eni)] = mirror.launch(instance_type)
    assert mirror.session(eni)["NetworkInterfaceId"] == eni


def test_target_on_t2_micro_is_refused_at_session_time(ec2: Any, mirror: Any, world: World, expect_error: Any) -> None:
    target = mirror.target("legacy-capture")  # accepted here ...
    message = expect_error(
        "NetworkInterfaceNotSupported",
        ec2.create_traffic_mirror_session,
        **mirror.session_params("web", target),
    )  # ... refused here, naming the target's ENI
    assert message == f"{world.eni('legacy-capture')} must be attached to a supported instance"


def test_target_type_check_can_be_switched_off(emulator: Emulator, mirror: Any) -> None:
    assert emulator.configure(target_type_check=False)["target_type_check"] is False
    session = mirror.session("web", mirror.target("legacy-capture"))
    assert session["TrafficMirrorSessionId"].startswith("tms-")


def test_source_check_stays_when_target_check_is_off(emulator: Emulator, mirror: Any, expect_error: Any) -> None:
    emulator.configure(target_type_check=False)
    expect_error("NetworkInterfaceNotSupported", mirror.session, source="legacy-web")


def test_resizing_both_instances_to_t3_small_lets_the_session_through(
    ec2: Any, mirror: Any, world: World, expect_error: Any
) -> None:
    # Field report, steps 4-5: t2.micro -> t3.small by stop/modify/start, then the same call succeeds.
    target = mirror.target("legacy-capture")
    params = mirror.session_params("legacy-web", target)
    expect_error("NetworkInterfaceNotSupported", ec2.create_traffic_mirror_session, **params)
    mirror.resize(world.instance("legacy-web"), "t3.small")
    mirror.resize(world.instance("legacy-capture"), "t3.small")
    session = ec2.create_traffic_mirror_session(**params)["TrafficMirrorSession"]
    assert session["NetworkInterfaceId"] == world.eni("legacy-web")
    described = ec2.describe_instances(InstanceIds=[world.instance("legacy-web")])["Reservations"][0]
    assert described["Instances"][0]["InstanceType"] == "t3.small"


def test_instance_type_changes_only_while_stopped(ec2: Any, world: World, expect_error: Any) -> None:
    message = expect_error(
        "IncorrectInstanceState",
        ec2.modify_instance_attribute,
        InstanceId=world.instance("legacy-web"),
        InstanceType={"Value": "t3.small"},
    )
    assert message == f"The instance '{world.instance('legacy-web')}' is not in the 'stopped' state."


def test_type_rules_can_be_overridden_at_run_time(emulator: Emulator, mirror: Any, expect_error: Any) -> None:
    emulator.configure(unsupported_types=["t3.*"], supported_types=["t2.micro"])
    expect_error("NetworkInterfaceNotSupported", mirror.session, source="web")
    assert mirror.session("legacy-web")["TrafficMirrorSessionId"].startswith("tms-")


def test_source_eni_without_instance_is_not_type_checked(ec2: Any, mirror: Any, world: World) -> None:
    # An ALB's, RDS's or Fargate task's ENI: no instance, nothing to refuse.
    eni = ec2.create_network_interface(SubnetId=world.subnet_ids["a"])["NetworkInterface"]["NetworkInterfaceId"]
    assert mirror.session(eni)["NetworkInterfaceId"] == eni


# -- The target must be usable ----------------------------------------------------------------------------
def test_target_whose_instance_is_stopped_is_invalid(ec2: Any, mirror: Any, world: World, expect_error: Any) -> None:
    target = mirror.target("capture")
    ec2.stop_instances(InstanceIds=[world.instance("capture")])
    message = expect_error("InvalidTrafficMirrorTarget", mirror.session, source="web", target=target)
    assert target in message and "stopped" in message


def test_target_whose_eni_is_gone_is_invalid(ec2: Any, mirror: Any, world: World, expect_error: Any) -> None:
    eni = ec2.create_network_interface(SubnetId=world.subnet_ids["b"])["NetworkInterface"]["NetworkInterfaceId"]
    target = mirror.target(eni)
    ec2.delete_network_interface(NetworkInterfaceId=eni)
    message = expect_error("InvalidTrafficMirrorTarget", mirror.session, source="web", target=target)
    assert eni in message


# -- Quotas and ranges -------------------------------------------------------------------------------------
def test_three_sessions_per_source_interface(ec2: Any, mirror: Any, world: World, expect_error: Any) -> None:
    target, filter_id = mirror.target("capture"), mirror.filter()
    for number in (1, 2, 3):
        mirror.session("web", target, TrafficMirrorFilterId=filter_id, SessionNumber=number)
    message = expect_error(
        "TrafficMirrorSessionsPerInterfaceLimitExceeded",
        mirror.session,
        source="web",
        target=target,
        SessionNumber=4,
    )
    assert world.eni("web") in message


def test_session_number_is_unique_per_source_interface(mirror: Any, expect_error: Any) -> None:
    target = mirror.target("capture")
    mirror.session("web", target, SessionNumber=5)
    message = expect_error("InvalidParameterValue", mirror.session, source="web", target=target, SessionNumber=5)
    assert "5" in message
    [(_, other)] = mirror.launch("t3.small")
    assert mirror.session(other, target, SessionNumber=5)["SessionNumber"] == 5  # another source may reuse it


def test_modify_to_a_taken_session_number_is_refused(ec2: Any, mirror: Any, expect_error: Any) -> None:
    target = mirror.target("capture")
    mirror.session("web", target, SessionNumber=1)
    second = mirror.session("web", target, SessionNumber=2)
    expect_error(
        "InvalidParameterValue",
        ec2.modify_traffic_mirror_session,
        TrafficMirrorSessionId=second["TrafficMirrorSessionId"],
        SessionNumber=1,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [("SessionNumber", 0), ("SessionNumber", 32767), ("VirtualNetworkId", 16777216), ("PacketLength", 0)],
)
def test_session_ranges(mirror: Any, expect_error: Any, name: str, value: int) -> None:
    expect_error("InvalidParameterValue", mirror.session, source="web", **{name: value})


def test_ten_sources_per_eni_target(mirror: Any, expect_error: Any) -> None:
    target, filter_id = mirror.target("capture"), mirror.filter()
    sources = [eni for _, eni in mirror.launch("t3.small", count=11)]
    for eni in sources[:10]:
        mirror.session(eni, target, TrafficMirrorFilterId=filter_id)
    message = expect_error(
        "TrafficMirrorSourcesPerTargetLimitExceeded", mirror.session, source=sources[10], target=target
    )
    assert target in message
    # A further session from a source the target already has is no new source.
    assert mirror.session(sources[0], target, SessionNumber=2)["NetworkInterfaceId"] == sources[0]


def test_sources_per_target_follow_the_quota_of_the_targets_instance_type(mirror: Any, expect_error: Any) -> None:
    """AWS's sources-per-target quota depends on the target's type: 100 on the listed large types, 10 on others."""
    [(_, large_eni)] = mirror.launch("m5.24xlarge")
    [(_, small_eni)] = mirror.launch("c5.large")
    large, small, filter_id = mirror.target(large_eni), mirror.target(small_eni), mirror.filter()
    sources = [eni for _, eni in mirror.launch("t3.small", count=12)]
    for eni in sources[:10]:
        mirror.session(eni, small, TrafficMirrorFilterId=filter_id)
        mirror.session(eni, large, TrafficMirrorFilterId=filter_id, SessionNumber=2)
    message = expect_error(
        "TrafficMirrorSourcesPerTargetLimitExceeded", mirror.session, source=sources[10], target=small
    )
    assert "(10)" in message and small in message
    for eni in sources[10:]:
        mirror.session(eni, large, TrafficMirrorFilterId=filter_id)
    sessions = mirror.ec2.describe_traffic_mirror_sessions()["TrafficMirrorSessions"]
    assert len({s["NetworkInterfaceId"] for s in sessions if s["TrafficMirrorTargetId"] == large}) == 12


def test_sources_per_target_limit_is_configurable(emulator: Emulator, mirror: Any, expect_error: Any) -> None:
    emulator.configure(sources_per_target_limit=1)
    target = mirror.target("capture")
    mirror.session("web", target)
    [(_, second_source)] = mirror.launch("m5.large")
    expect_error("TrafficMirrorSourcesPerTargetLimitExceeded", mirror.session, source=second_source, target=target)


def test_nlb_target_caps_packet_length(ec2: Any, mirror: Any, expect_error: Any) -> None:
    target = ec2.create_traffic_mirror_target(NetworkLoadBalancerArn=NLB_ARN)["TrafficMirrorTarget"]
    target_id = target["TrafficMirrorTargetId"]
    assert mirror.session("web", target_id)["PacketLength"] == 8500  # AWS's default for NLB targets
    expect_error("InvalidParameterValue", mirror.session, source="web", target=target_id, PacketLength=8501)


def test_repointing_a_session_applies_the_target_checks(ec2: Any, mirror: Any, world: World, expect_error: Any) -> None:
    session = mirror.session("web", mirror.target("capture"))
    bad_target = mirror.target("legacy-capture")
    message = expect_error(
        "NetworkInterfaceNotSupported",
        ec2.modify_traffic_mirror_session,
        TrafficMirrorSessionId=session["TrafficMirrorSessionId"],
        TrafficMirrorTargetId=bad_target,
    )
    assert world.eni("legacy-capture") in message
