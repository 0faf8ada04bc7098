"""The reconcilers' pure decisions, table by table."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from trafficmirror.api import MirrorFilterSpec, Phase
from trafficmirror.aws.ec2 import AwsFilterRule, AwsSession, PortRange, RuleParams, SessionChanges, SessionParams
from trafficmirror.reconcile.common import (
    MAX_CLIENT_TOKEN,
    ConditionUpdate,
    Event,
    Outcome,
    client_token,
    merge_conditions,
    transition_events,
)
from trafficmirror.reconcile.endpoints import instance_id_from_provider_id
from trafficmirror.reconcile.filter import desired_rules, network_service_changes, rule_changes
from trafficmirror.reconcile.session import session_modifications

UID = "0b6cbd2e-6f3e-4a7e-9a55-3f1f3c5f8a01"


def test_client_token_is_stable_bounded_and_changes_with_the_request() -> None:
    token = client_token(UID, {"eni": "eni-1"})
    assert token == client_token(UID, {"eni": "eni-1"})
    assert len(token) <= MAX_CLIENT_TOKEN and token.startswith(UID)
    assert token != client_token(UID, {"eni": "eni-2"})


@pytest.mark.parametrize(
    ("provider_id", "instance_id"),
    [
        ("aws:///us-east-1a/i-0123456789abcdef0", "i-0123456789abcdef0"),
        ("aws:///eu-west-1b/i-0abc", "i-0abc"),
        ("gce://project/zone/node", None),
        ("", None),
        (None, None),
        ("aws:///us-east-1a/", None),
    ],
)
def test_instance_id_comes_from_an_aws_provider_id(provider_id: str | None, instance_id: str | None) -> None:
    assert instance_id_from_provider_id(provider_id) == instance_id


def _rule(direction: str, number: int, rule_id: str = "", **changes: object) -> AwsFilterRule:
    params = RuleParams(direction, number, "accept", "0.0.0.0/0", "0.0.0.0/0")
    for key, value in changes.items():
        params = RuleParams(**{**params.__dict__, key: value})  # type: ignore[arg-type]
    return AwsFilterRule(rule_id or f"tmfr-{direction}{number}", params)


def test_rule_changes_delete_modify_and_create_by_direction_and_number() -> None:
    spec = MirrorFilterSpec.model_validate(
        {
            "ingressRules": [
                {"ruleNumber": 10},
                {"ruleNumber": 20, "protocol": 6, "destinationPortRange": {"fromPort": 443, "toPort": 443}},
            ],
            "egressRules": [{"ruleNumber": 10}],
        }
    )
    actual = [_rule("ingress", 10), _rule("ingress", 20, protocol=17), _rule("egress", 30)]
    changes = rule_changes(desired_rules(spec), actual)
    assert [r.rule_id for r in changes.delete] == ["tmfr-egress30"]
    assert [(r.rule_id, p.protocol, p.destination_port_range) for r, p in changes.modify] == [
        ("tmfr-ingress20", 6, PortRange(443, 443))
    ]
    assert [(p.direction, p.rule_number) for p in changes.create] == [("egress", 10)]


def test_rules_that_match_need_no_change() -> None:
    spec = MirrorFilterSpec.model_validate({"ingressRules": [{"ruleNumber": 10}]})
    assert rule_changes(desired_rules(spec), [_rule("ingress", 10)]).empty


@pytest.mark.parametrize(
    ("desired", "actual", "expected"),
    [
        (["amazon-dns"], (), (["amazon-dns"], [])),
        ([], ("amazon-dns",), ([], ["amazon-dns"])),
        (["amazon-dns"], ("amazon-dns",), ([], [])),
    ],
)
def test_network_service_changes(
    desired: list[str], actual: tuple[str, ...], expected: tuple[list[str], list[str]]
) -> None:
    assert network_service_changes(desired, actual) == expected


ACTUAL = AwsSession("tms-1", "eni-1", "tmt-1", "tmf-1", 1, 4242, None, "[trafficmirror:x]", {})


@pytest.mark.parametrize(
    ("desired", "changes"),
    [
        (SessionParams("eni-1", "tmt-1", "tmf-1", 1, None, None, "[trafficmirror:x]"), SessionChanges()),
        (
            SessionParams("eni-1", "tmt-2", "tmf-1", 1, None, None, "[trafficmirror:x]"),
            SessionChanges(target_id="tmt-2"),
        ),
        (
            SessionParams("eni-1", "tmt-1", "tmf-2", 3, 7, 128, "[trafficmirror:x]"),
            SessionChanges(filter_id="tmf-2", session_number=3, virtual_network_id=7, packet_length=128),
        ),
    ],
    ids=["in sync, AWS-chosen VNI kept", "target swapped", "everything modifiable"],
)
def test_session_modifications(desired: SessionParams, changes: SessionChanges) -> None:
    assert session_modifications(ACTUAL, desired) == changes


def test_dropping_the_packet_length_removes_the_field() -> None:
    truncated = AwsSession("tms-1", "eni-1", "tmt-1", "tmf-1", 1, 4242, 128, "d", {})
    desired = SessionParams("eni-1", "tmt-1", "tmf-1", 1, None, None, "d")
    assert session_modifications(truncated, desired) == SessionChanges(remove_packet_length=True)


def test_conditions_keep_their_transition_time_while_the_status_holds() -> None:
    first = datetime(2026, 1, 1, tzinfo=UTC)
    later = datetime(2026, 1, 2, tzinfo=UTC)
    created = merge_conditions([], [ConditionUpdate("Ready", "False", "Creating")], 1, first)
    same = merge_conditions(created, [ConditionUpdate("Ready", "False", "WaitingForTarget", "m")], 2, later)
    flipped = merge_conditions(same, [ConditionUpdate("Ready", "True", "Ready")], 2, later)
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z" and same[0]["reason"] == "WaitingForTarget"
    assert flipped[0]["lastTransitionTime"] == "2026-01-02T00:00:00Z" and flipped[0]["observedGeneration"] == 2


def test_an_event_for_every_transition_and_none_without_one() -> None:
    failed = Outcome(Phase.FAILED, [ConditionUpdate("Ready", "False", "UnsupportedInstanceType", "t2.micro")])
    assert transition_events("Pending", "Creating", failed) == [Event("Warning", "UnsupportedInstanceType", "t2.micro")]
    assert transition_events("Failed", "UnsupportedInstanceType", failed) == []
