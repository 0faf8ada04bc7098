"""DataPathReady: which link between a mirror target on a Service's NLB and a capture agent is missing."""

from __future__ import annotations

import pytest

from trafficmirror.aws.elbv2 import IngressRule, Listener, LoadBalancer, TargetHealth
from trafficmirror.reconcile.datapath import DataPathFacts, decide_data_path

ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/capture/0123456789abcdef"
TG = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/capture/0123456789abcdef"
NLB = LoadBalancer(ARN, "capture-1.elb.amazonaws.com", "network", "active", "vpc-1", ())
NLB_WITH_SG = LoadBalancer(ARN, "capture-1.elb.amazonaws.com", "network", "active", "vpc-1", ("sg-1",))
ALB = LoadBalancer(ARN.replace("/net/", "/app/"), "web-1.elb.amazonaws.com", "application", "active", "vpc-1", ())
UDP = Listener("UDP", 4789, (TG,))
HEALTHY = {TG: [TargetHealth("i-1", "healthy", None), TargetHealth("i-2", "unhealthy", "Target.FailedHealthChecks")]}
SICK = {TG: [TargetHealth("i-2", "unhealthy", "Target.FailedHealthChecks")]}


def facts(**changes: object) -> DataPathFacts:
    base: dict[str, object] = {
        "service": "tm/capture",
        "hostname": "capture-1.elb.amazonaws.com",
        "load_balancer": NLB,
        "listeners": [UDP],
        "health": HEALTHY,
        "ingress_rules": None,
    }
    return DataPathFacts(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "ready", "reason", "says", "arn"),
    [
        (facts(hostname=None), False, "WaitingForLoadBalancer", "tm/capture has no load-balancer hostname", None),
        (facts(load_balancer=None), False, "LoadBalancerNotFound", "capture-1.elb.amazonaws.com", None),
        (facts(load_balancer=ALB), False, "NotANetworkLoadBalancer", "application", None),
        (facts(listeners=[]), False, "NoUdpListener", "listeners: none", ARN),
        (facts(listeners=[Listener("TCP", 4789, (TG,))]), False, "NoUdpListener", "TCP 4789", ARN),
        (facts(listeners=[Listener("UDP", 4790, (TG,))]), False, "NoUdpListener", "UDP 4790", ARN),
        (facts(health={TG: []}), False, "NoHealthyTargets", "no targets registered", ARN),
        (facts(health=SICK), False, "NoHealthyTargets", "i-2 unhealthy (Target.FailedHealthChecks)", ARN),
        (facts(listeners=[Listener("TCP_UDP", 4789, (TG,))]), True, "DataPathReady", "1 of 2 target(s) healthy", ARN),
        (facts(), True, "DataPathReady", "UDP 4789 listener", ARN),
        (
            facts(load_balancer=NLB_WITH_SG, ingress_rules=[IngressRule("tcp", 0, 65535, ("10.0.0.0/8",))]),
            False,
            "SecurityGroupBlocksVxlan",
            "sg-1",
            ARN,
        ),
        (
            facts(load_balancer=NLB_WITH_SG, ingress_rules=[IngressRule("udp", 4000, 5000, ("10.0.0.0/8",))]),
            True,
            "DataPathReady",
            "healthy",
            ARN,
        ),
        (
            facts(load_balancer=NLB_WITH_SG, ingress_rules=[IngressRule("-1", None, None, ("10.0.0.0/8",))]),
            True,
            "DataPathReady",
            "healthy",
            ARN,
        ),
    ],
)
def test_data_path_names_the_missing_link(
    given: DataPathFacts, ready: bool, reason: str, says: str, arn: str | None
) -> None:
    verdict = decide_data_path(given)
    assert (verdict.ready, verdict.reason, verdict.load_balancer_arn) == (ready, reason, arn)
    assert says in verdict.message
