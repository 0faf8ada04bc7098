"""Filters, filter rules and network services against the emulator, as AWS answers them."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.emulator

ANY = "0.0.0.0/0"


def test_create_describe_delete_filter(ec2: Any) -> None:
    created = ec2.create_traffic_mirror_filter(
        Description="everything",
        TagSpecifications=[{"ResourceType": "traffic-mirror-filter", "Tags": [{"Key": "owner", "Value": "f1"}]}],
    )["TrafficMirrorFilter"]
    assert created["TrafficMirrorFilterId"].startswith("tmf-")
    assert created["Description"] == "everything"
    assert created["Tags"] == [{"Key": "owner", "Value": "f1"}]

    described = ec2.describe_traffic_mirror_filters(TrafficMirrorFilterIds=[created["TrafficMirrorFilterId"]])
    assert described["TrafficMirrorFilters"][0]["TrafficMirrorFilterId"] == created["TrafficMirrorFilterId"]

    ec2.delete_traffic_mirror_filter(TrafficMirrorFilterId=created["TrafficMirrorFilterId"])
    assert ec2.describe_traffic_mirror_filters()["TrafficMirrorFilters"] == []


def test_describe_filters_by_tag_and_description_with_paging(ec2: Any) -> None:
    ids = []
    for n in range(7):
        tags = [{"Key": "trafficmirror.io/owner", "Value": "ns/x" if n % 2 else "ns/y"}]
        spec = [{"ResourceType": "traffic-mirror-filter", "Tags": tags}]
        ids.append(
            ec2.create_traffic_mirror_filter(Description=f"f{n}", TagSpecifications=spec)["TrafficMirrorFilter"][
                "TrafficMirrorFilterId"
            ]
        )
    by_tag = ec2.describe_traffic_mirror_filters(Filters=[{"Name": "tag:trafficmirror.io/owner", "Values": ["ns/x"]}])
    assert [f["TrafficMirrorFilterId"] for f in by_tag["TrafficMirrorFilters"]] == ids[1::2]
    by_description = ec2.describe_traffic_mirror_filters(Filters=[{"Name": "description", "Values": ["f4"]}])
    assert [f["TrafficMirrorFilterId"] for f in by_description["TrafficMirrorFilters"]] == [ids[4]]
    by_id = ec2.describe_traffic_mirror_filters(Filters=[{"Name": "traffic-mirror-filter-id", "Values": [ids[0]]}])
    assert [f["TrafficMirrorFilterId"] for f in by_id["TrafficMirrorFilters"]] == [ids[0]]

    page = ec2.describe_traffic_mirror_filters(MaxResults=5)
    assert len(page["TrafficMirrorFilters"]) == 5
    rest = ec2.describe_traffic_mirror_filters(MaxResults=5, NextToken=page["NextToken"])
    assert [f["TrafficMirrorFilterId"] for f in rest["TrafficMirrorFilters"]] == ids[5:]
    assert "NextToken" not in rest


def test_filter_not_found(ec2: Any, expect_error: Any) -> None:
    missing = "tmf-0123456789abcdef0"
    message = expect_error(
        "InvalidTrafficMirrorFilterId.NotFound",
        ec2.delete_traffic_mirror_filter,
        TrafficMirrorFilterId=missing,
    )
    assert message == f"The traffic mirror filter ID '{missing}' does not exist"
    expect_error(
        "InvalidTrafficMirrorFilterId.NotFound",
        ec2.describe_traffic_mirror_filters,
        TrafficMirrorFilterIds=[missing],
    )
    expect_error(
        "InvalidTrafficMirrorFilterId.NotFound",
        ec2.create_traffic_mirror_filter_rule,
        TrafficMirrorFilterId=missing,
        TrafficDirection="ingress",
        RuleNumber=1,
        RuleAction="accept",
        SourceCidrBlock=ANY,
        DestinationCidrBlock=ANY,
    )


def test_filter_in_use_cannot_be_deleted(ec2: Any, mirror: Any, expect_error: Any) -> None:
    filter_id = mirror.filter()
    session = mirror.session("web", TrafficMirrorFilterId=filter_id)
    message = expect_error(
        "TrafficMirrorFilterInUse", ec2.delete_traffic_mirror_filter, TrafficMirrorFilterId=filter_id
    )
    assert filter_id in message
    ec2.delete_traffic_mirror_session(TrafficMirrorSessionId=session["TrafficMirrorSessionId"])
    ec2.delete_traffic_mirror_filter(TrafficMirrorFilterId=filter_id)


def test_filter_client_token(ec2: Any, expect_error: Any) -> None:
    first = ec2.create_traffic_mirror_filter(Description="a", ClientToken="uid-f")["TrafficMirrorFilter"]
    again = ec2.create_traffic_mirror_filter(Description="a", ClientToken="uid-f")["TrafficMirrorFilter"]
    assert again["TrafficMirrorFilterId"] == first["TrafficMirrorFilterId"]
    expect_error("IdempotentParameterMismatch", ec2.create_traffic_mirror_filter, Description="b", ClientToken="uid-f")


def test_create_rule_is_visible_in_the_filter(ec2: Any, mirror: Any) -> None:
    filter_id = mirror.filter()
    created = ec2.create_traffic_mirror_filter_rule(
        TrafficMirrorFilterId=filter_id,
        TrafficDirection="ingress",
        RuleNumber=100,
        RuleAction="accept",
        Protocol=6,
        SourceCidrBlock="10.0.0.0/8",
        DestinationCidrBlock=ANY,
        DestinationPortRange={"FromPort": 443, "ToPort": 443},
        Description="https in",
    )["TrafficMirrorFilterRule"]
    assert created["TrafficMirrorFilterRuleId"].startswith("tmfr-")
    assert created["DestinationPortRange"] == {"FromPort": 443, "ToPort": 443}
    egress = mirror.rule(filter_id, 100, "egress", RuleAction="reject")

    described = ec2.describe_traffic_mirror_filters(TrafficMirrorFilterIds=[filter_id])["TrafficMirrorFilters"][0]
    assert described["IngressFilterRules"] == [created]
    assert [r["TrafficMirrorFilterRuleId"] for r in described["EgressFilterRules"]] == [egress]
    assert described["EgressFilterRules"][0]["RuleAction"] == "reject"
    assert "Protocol" not in described["EgressFilterRules"][0]  # no protocol = all protocols


def test_rules_are_listed_by_rule_number(ec2: Any, mirror: Any) -> None:
    filter_id = mirror.filter()
    for number in (300, 100, 200):
        mirror.rule(filter_id, number)
    rules = ec2.describe_traffic_mirror_filters()["TrafficMirrorFilters"][0]["IngressFilterRules"]
    assert [r["RuleNumber"] for r in rules] == [100, 200, 300]


def test_describe_filter_rules(ec2: Any, mirror: Any) -> None:
    filter_id = mirror.filter()
    other = mirror.filter()
    ingress = mirror.rule(filter_id, 10, Protocol=17)
    egress = mirror.rule(filter_id, 10, "egress")
    mirror.rule(other, 10)
    found = ec2.describe_traffic_mirror_filter_rules(TrafficMirrorFilterId=filter_id)["TrafficMirrorFilterRules"]
    assert [r["TrafficMirrorFilterRuleId"] for r in found] == [ingress, egress]
    udp = ec2.describe_traffic_mirror_filter_rules(Filters=[{"Name": "protocol", "Values": ["17"]}])
    assert [r["TrafficMirrorFilterRuleId"] for r in udp["TrafficMirrorFilterRules"]] == [ingress]


def test_modify_rule_and_remove_fields(ec2: Any, mirror: Any) -> None:
    filter_id = mirror.filter()
    rule_id = mirror.rule(
        filter_id, 1, Protocol=6, SourcePortRange={"FromPort": 1024, "ToPort": 65535}, Description="d"
    )
    modified = ec2.modify_traffic_mirror_filter_rule(
        TrafficMirrorFilterRuleId=rule_id,
        RuleNumber=5,
        RuleAction="reject",
        Protocol=17,
        DestinationPortRange={"FromPort": 53, "ToPort": 53},
        SourceCidrBlock="192.168.0.0/16",
    )["TrafficMirrorFilterRule"]
    assert modified["RuleNumber"] == 5
    assert modified["RuleAction"] == "reject"
    assert modified["Protocol"] == 17
    assert modified["DestinationPortRange"] == {"FromPort": 53, "ToPort": 53}
    assert modified["SourcePortRange"] == {"FromPort": 1024, "ToPort": 65535}
    assert modified["SourceCidrBlock"] == "192.168.0.0/16"

    removed = ec2.modify_traffic_mirror_filter_rule(
        TrafficMirrorFilterRuleId=rule_id,
        RemoveFields=["source-port-range", "destination-port-range", "protocol", "description"],
    )["TrafficMirrorFilterRule"]
    for gone in ("SourcePortRange", "DestinationPortRange", "Protocol", "Description"):
        assert gone not in removed
    stored = ec2.describe_traffic_mirror_filters()["TrafficMirrorFilters"][0]["IngressFilterRules"]
    assert stored == [removed]


def test_modify_rule_can_change_direction(ec2: Any, mirror: Any) -> None:
    filter_id = mirror.filter()
    rule_id = mirror.rule(filter_id, 7)
    ec2.modify_traffic_mirror_filter_rule(TrafficMirrorFilterRuleId=rule_id, TrafficDirection="egress")
    described = ec2.describe_traffic_mirror_filters()["TrafficMirrorFilters"][0]
    assert described["IngressFilterRules"] == []
    assert [r["TrafficMirrorFilterRuleId"] for r in described["EgressFilterRules"]] == [rule_id]


def test_delete_rule(ec2: Any, mirror: Any) -> None:
    filter_id = mirror.filter()
    rule_id = mirror.rule(filter_id, 1)
    assert ec2.delete_traffic_mirror_filter_rule(TrafficMirrorFilterRuleId=rule_id)["TrafficMirrorFilterRuleId"] == (
        rule_id
    )
    assert ec2.describe_traffic_mirror_filters()["TrafficMirrorFilters"][0]["IngressFilterRules"] == []


def test_rule_not_found(ec2: Any, expect_error: Any) -> None:
    missing = "tmfr-0123456789abcdef0"
    message = expect_error(
        "InvalidTrafficMirrorFilterRuleId.NotFound",
        ec2.delete_traffic_mirror_filter_rule,
        TrafficMirrorFilterRuleId=missing,
    )
    assert message == f"The traffic mirror filter rule ID '{missing}' does not exist"
    expect_error(
        "InvalidTrafficMirrorFilterRuleId.NotFound",
        ec2.modify_traffic_mirror_filter_rule,
        TrafficMirrorFilterRuleId=missing,
        RuleAction="reject",
    )


def test_deleting_a_filter_deletes_its_rules(ec2: Any, mirror: Any, expect_error: Any) -> None:
    filter_id = mirror.filter()
    rule_id = mirror.rule(filter_id, 1)
    ec2.delete_traffic_mirror_filter(TrafficMirrorFilterId=filter_id)
    expect_error(
        "InvalidTrafficMirrorFilterRuleId.NotFound",
        ec2.delete_traffic_mirror_filter_rule,
        TrafficMirrorFilterRuleId=rule_id,
    )


def test_rule_limit_is_ten_per_filter(mirror: Any, expect_error: Any) -> None:
    filter_id = mirror.filter()
    for number in range(1, 6):
        mirror.rule(filter_id, number, "ingress")
        mirror.rule(filter_id, number, "egress")
    message = expect_error("TrafficMirrorFilterRuleLimitExceeded", mirror.rule, filter_id=filter_id, number=99)
    assert "(10)" in message


def test_rule_number_is_unique_per_direction(mirror: Any, expect_error: Any) -> None:
    filter_id = mirror.filter()
    mirror.rule(filter_id, 100, "ingress")
    mirror.rule(filter_id, 100, "egress")  # the other direction may reuse it
    message = expect_error(
        "TrafficMirrorFilterRuleAlreadyExists",
        mirror.rule,
        filter_id=filter_id,
        number=100,
        direction="ingress",
    )
    assert "100" in message


def test_modify_rule_to_a_taken_number_is_refused(ec2: Any, mirror: Any, expect_error: Any) -> None:
    filter_id = mirror.filter()
    mirror.rule(filter_id, 1)
    second = mirror.rule(filter_id, 2)
    expect_error(
        "TrafficMirrorFilterRuleAlreadyExists",
        ec2.modify_traffic_mirror_filter_rule,
        TrafficMirrorFilterRuleId=second,
        RuleNumber=1,
    )


def test_port_ranges_only_with_tcp_or_udp(mirror: Any, expect_error: Any) -> None:
    filter_id = mirror.filter()
    message = expect_error(
        "InvalidParameterValue",
        mirror.rule,
        filter_id=filter_id,
        number=1,
        Protocol=1,
        DestinationPortRange={"FromPort": 1, "ToPort": 2},
    )
    assert "TCP" in message
    expect_error(
        "InvalidParameterValue",
        mirror.rule,
        filter_id=filter_id,
        number=2,
        SourcePortRange={"FromPort": 80, "ToPort": 80},
    )
    mirror.rule(filter_id, 3, Protocol=17, SourcePortRange={"FromPort": 53, "ToPort": 53})


def test_modify_port_range_needs_the_protocol_again(ec2: Any, mirror: Any, expect_error: Any) -> None:
    # The Terraform trap: the rule is TCP already, yet AWS wants Protocol in the same request.
    filter_id = mirror.filter()
    rule_id = mirror.rule(filter_id, 1, Protocol=6, DestinationPortRange={"FromPort": 80, "ToPort": 80})
    expect_error(
        "InvalidParameterValue",
        ec2.modify_traffic_mirror_filter_rule,
        TrafficMirrorFilterRuleId=rule_id,
        DestinationPortRange={"FromPort": 443, "ToPort": 443},
    )
    modified = ec2.modify_traffic_mirror_filter_rule(
        TrafficMirrorFilterRuleId=rule_id, Protocol=6, DestinationPortRange={"FromPort": 443, "ToPort": 443}
    )
    assert modified["TrafficMirrorFilterRule"]["DestinationPortRange"] == {"FromPort": 443, "ToPort": 443}


def test_rule_values_are_checked(mirror: Any, expect_error: Any) -> None:
    filter_id = mirror.filter()
    expect_error("InvalidParameterValue", mirror.rule, filter_id=filter_id, number=1, SourceCidrBlock="10.0.0/33")
    expect_error("InvalidParameterValue", mirror.rule, filter_id=filter_id, number=0)
    expect_error("InvalidParameterValue", mirror.rule, filter_id=filter_id, number=1, Protocol=256)
    expect_error(
        "InvalidParameterValue",
        mirror.rule,
        filter_id=filter_id,
        number=1,
        Protocol=6,
        DestinationPortRange={"FromPort": 90, "ToPort": 80},
    )


def test_rule_client_token(ec2: Any, mirror: Any, expect_error: Any) -> None:
    filter_id = mirror.filter()
    first = mirror.rule(filter_id, 1, ClientToken="uid-r")
    assert mirror.rule(filter_id, 1, ClientToken="uid-r") == first
    expect_error("IdempotentParameterMismatch", mirror.rule, filter_id=filter_id, number=2, ClientToken="uid-r")
    assert len(ec2.describe_traffic_mirror_filter_rules()["TrafficMirrorFilterRules"]) == 1


def test_modify_network_services(ec2: Any, mirror: Any) -> None:
    filter_id = mirror.filter()
    added = ec2.modify_traffic_mirror_filter_network_services(
        TrafficMirrorFilterId=filter_id, AddNetworkServices=["amazon-dns"]
    )["TrafficMirrorFilter"]
    assert added["NetworkServices"] == ["amazon-dns"]
    described = ec2.describe_traffic_mirror_filters(TrafficMirrorFilterIds=[filter_id])["TrafficMirrorFilters"][0]
    assert described["NetworkServices"] == ["amazon-dns"]
    removed = ec2.modify_traffic_mirror_filter_network_services(
        TrafficMirrorFilterId=filter_id, RemoveNetworkServices=["amazon-dns"]
    )["TrafficMirrorFilter"]
    assert removed.get("NetworkServices", []) == []


def test_network_services_know_only_amazon_dns(ec2: Any, mirror: Any, expect_error: Any) -> None:
    filter_id = mirror.filter()
    # botocore sends enum values unchecked, so this reaches the server.
    message = expect_error(
        "InvalidParameterValue",
        ec2.modify_traffic_mirror_filter_network_services,
        TrafficMirrorFilterId=filter_id,
        AddNetworkServices=["amazon-ntp"],
    )
    assert "amazon-ntp" in message
    expect_error(
        "InvalidTrafficMirrorFilterId.NotFound",
        ec2.modify_traffic_mirror_filter_network_services,
        TrafficMirrorFilterId="tmf-0123456789abcdef0",
        AddNetworkServices=["amazon-dns"],
    )
