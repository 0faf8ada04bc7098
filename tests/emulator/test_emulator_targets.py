"""Create/Describe/Delete TrafficMirrorTarget against the emulator, as AWS answers them."""

from __future__ import annotations

from typing import Any

import pytest

from trafficmirror_testbed.seed import World

pytestmark = pytest.mark.emulator

NLB_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/capture/0123456789abcdef"


def test_create_describe_delete_eni_target(ec2: Any, world: World) -> None:
    created = ec2.create_traffic_mirror_target(
        NetworkInterfaceId=world.eni("capture"),
        Description="capture box",
        TagSpecifications=[{"ResourceType": "traffic-mirror-target", "Tags": [{"Key": "owner", "Value": "t1"}]}],
    )["TrafficMirrorTarget"]
    assert created["TrafficMirrorTargetId"].startswith("tmt-")
    assert created["Type"] == "network-interface"
    assert created["NetworkInterfaceId"] == world.eni("capture")
    assert created["OwnerId"] == "123456789012"
    assert created["Tags"] == [{"Key": "owner", "Value": "t1"}]

    described = ec2.describe_traffic_mirror_targets(TrafficMirrorTargetIds=[created["TrafficMirrorTargetId"]])
    assert described["TrafficMirrorTargets"] == [created]

    deleted = ec2.delete_traffic_mirror_target(TrafficMirrorTargetId=created["TrafficMirrorTargetId"])
    assert deleted["TrafficMirrorTargetId"] == created["TrafficMirrorTargetId"]
    assert ec2.describe_traffic_mirror_targets()["TrafficMirrorTargets"] == []


def test_nlb_and_gateway_load_balancer_endpoint_targets(ec2: Any) -> None:
    nlb = ec2.create_traffic_mirror_target(NetworkLoadBalancerArn=NLB_ARN)["TrafficMirrorTarget"]
    assert nlb["Type"] == "network-load-balancer"
    assert nlb["NetworkLoadBalancerArn"] == NLB_ARN
    gwlbe = ec2.create_traffic_mirror_target(GatewayLoadBalancerEndpointId="vpce-0123456789abcdef0")
    assert gwlbe["TrafficMirrorTarget"]["Type"] == "gateway-load-balancer-endpoint"


def test_target_needs_exactly_one_destination(ec2: Any, world: World, expect_error: Any) -> None:
    message = expect_error(
        "InvalidInput",
        ec2.create_traffic_mirror_target,
        NetworkInterfaceId=world.eni("capture"),
        NetworkLoadBalancerArn=NLB_ARN,
    )
    assert "Only 1 of NetworkInterfaceId" in message
    expect_error("InvalidInput", ec2.create_traffic_mirror_target, Description="nothing")


def test_target_eni_must_exist(ec2: Any, expect_error: Any) -> None:
    message = expect_error(
        "InvalidNetworkInterfaceID.NotFound",
        ec2.create_traffic_mirror_target,
        NetworkInterfaceId="eni-0123456789abcdef0",
    )
    assert "eni-0123456789abcdef0" in message


def test_target_on_unsupported_type_is_accepted_at_create(ec2: Any, world: World) -> None:
    # Field report, step 2: AWS takes a t2.micro target; the refusal comes only at session creation.
    created = ec2.create_traffic_mirror_target(NetworkInterfaceId=world.eni("legacy-capture"))
    assert created["TrafficMirrorTarget"]["NetworkInterfaceId"] == world.eni("legacy-capture")


def test_target_not_found(ec2: Any, expect_error: Any) -> None:
    missing = "tmt-0123456789abcdef0"
    message = expect_error(
        "InvalidTrafficMirrorTargetId.NotFound",
        ec2.delete_traffic_mirror_target,
        TrafficMirrorTargetId=missing,
    )
    assert message == f"The traffic mirror target ID '{missing}' does not exist"
    expect_error(
        "InvalidTrafficMirrorTargetId.NotFound",
        ec2.describe_traffic_mirror_targets,
        TrafficMirrorTargetIds=[missing],
    )


def test_target_in_use_cannot_be_deleted(ec2: Any, mirror: Any, expect_error: Any) -> None:
    target = mirror.target("capture")
    session = mirror.session("web", target)
    message = expect_error(
        "TrafficMirrorTargetInUseException", ec2.delete_traffic_mirror_target, TrafficMirrorTargetId=target
    )
    assert target in message
    ec2.delete_traffic_mirror_session(TrafficMirrorSessionId=session["TrafficMirrorSessionId"])
    ec2.delete_traffic_mirror_target(TrafficMirrorTargetId=target)


def test_client_token_returns_the_original_target(ec2: Any, world: World) -> None:
    first = ec2.create_traffic_mirror_target(NetworkInterfaceId=world.eni("capture"), ClientToken="uid-1")
    again = ec2.create_traffic_mirror_target(NetworkInterfaceId=world.eni("capture"), ClientToken="uid-1")
    assert again["TrafficMirrorTarget"] == first["TrafficMirrorTarget"]
    assert again["ClientToken"] == "uid-1"
    assert len(ec2.describe_traffic_mirror_targets()["TrafficMirrorTargets"]) == 1


def test_client_token_with_other_parameters_is_refused(ec2: Any, world: World, expect_error: Any) -> None:
    ec2.create_traffic_mirror_target(NetworkInterfaceId=world.eni("capture"), ClientToken="uid-2")
    expect_error(
        "IdempotentParameterMismatch",
        ec2.create_traffic_mirror_target,
        NetworkInterfaceId=world.eni("web"),
        ClientToken="uid-2",
    )


def test_describe_targets_by_filters(ec2: Any, world: World) -> None:
    def tagged(owner: str) -> list[dict[str, Any]]:
        return [{"ResourceType": "traffic-mirror-target", "Tags": [{"Key": "owner", "Value": owner}]}]

    a = ec2.create_traffic_mirror_target(
        NetworkInterfaceId=world.eni("capture"), Description="alpha", TagSpecifications=tagged("ns/a")
    )["TrafficMirrorTarget"]["TrafficMirrorTargetId"]
    b = ec2.create_traffic_mirror_target(
        NetworkInterfaceId=world.eni("legacy-capture"), Description="beta", TagSpecifications=tagged("ns/b")
    )["TrafficMirrorTarget"]["TrafficMirrorTargetId"]

    def ids(*filters: dict[str, Any]) -> list[str]:
        found = ec2.describe_traffic_mirror_targets(Filters=list(filters))["TrafficMirrorTargets"]
        return [t["TrafficMirrorTargetId"] for t in found]

    assert ids({"Name": "tag:owner", "Values": ["ns/b"]}) == [b]
    assert ids({"Name": "tag:owner", "Values": ["ns/*"]}) == [a, b]
    assert ids({"Name": "description", "Values": ["alpha"]}) == [a]
    assert ids({"Name": "network-interface-id", "Values": [world.eni("legacy-capture")]}) == [b]
    assert ids({"Name": "traffic-mirror-target-id", "Values": [a]}) == [a]
    assert ids({"Name": "owner-id", "Values": ["123456789012"]}) == [a, b]
    assert ids({"Name": "tag-key", "Values": ["owner"]}, {"Name": "description", "Values": ["beta"]}) == [b]


def test_unknown_filter_name_is_refused(ec2: Any, expect_error: Any) -> None:
    message = expect_error(
        "InvalidParameterValue",
        ec2.describe_traffic_mirror_targets,
        Filters=[{"Name": "colour", "Values": ["red"]}],
    )
    assert "colour" in message


def test_describe_targets_pages(ec2: Any, world: World) -> None:
    created = [
        ec2.create_traffic_mirror_target(NetworkInterfaceId=world.eni("capture"), Description=str(n))[
            "TrafficMirrorTarget"
        ]["TrafficMirrorTargetId"]
        for n in range(12)
    ]
    first = ec2.describe_traffic_mirror_targets(MaxResults=5)
    assert [t["TrafficMirrorTargetId"] for t in first["TrafficMirrorTargets"]] == created[:5]
    second = ec2.describe_traffic_mirror_targets(MaxResults=5, NextToken=first["NextToken"])
    assert [t["TrafficMirrorTargetId"] for t in second["TrafficMirrorTargets"]] == created[5:10]
    pages = ec2.get_paginator("describe_traffic_mirror_targets").paginate(PaginationConfig={"PageSize": 5})
    assert [t["TrafficMirrorTargetId"] for page in pages for t in page["TrafficMirrorTargets"]] == created


def test_paging_parameters_are_checked(ec2: Any, expect_error: Any) -> None:
    expect_error("InvalidParameterValue", ec2.describe_traffic_mirror_targets, MaxResults=1001)
    expect_error("InvalidPaginationToken", ec2.describe_traffic_mirror_targets, NextToken="not-a-token")


def test_dry_run(ec2: Any, world: World, expect_error: Any) -> None:
    expect_error(
        "DryRunOperation",
        ec2.create_traffic_mirror_target,
        NetworkInterfaceId=world.eni("capture"),
        DryRun=True,
    )
    assert ec2.describe_traffic_mirror_targets()["TrafficMirrorTargets"] == []


def test_create_tags_and_describe_tags_know_mirror_resources(ec2: Any, mirror: Any) -> None:
    target = mirror.target("capture")
    ec2.create_tags(Resources=[target], Tags=[{"Key": "later", "Value": "yes"}])
    described = ec2.describe_traffic_mirror_targets(TrafficMirrorTargetIds=[target])["TrafficMirrorTargets"][0]
    assert described["Tags"] == [{"Key": "later", "Value": "yes"}]
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [target]}])["Tags"]
    assert tags == [{"Key": "later", "ResourceId": target, "ResourceType": "traffic-mirror-target", "Value": "yes"}]
