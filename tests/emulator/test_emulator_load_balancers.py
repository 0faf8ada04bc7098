"""The load-balancer adapter against the emulator's elbv2 (moto): what DataPathReady is decided from.

No AWS Load Balancer Controller runs here: the test creates the NLB, target group and listener
itself, as that controller would for a Service of type LoadBalancer.
"""

from __future__ import annotations

from typing import Any

from trafficmirror.aws.elbv2 import LoadBalancers
from trafficmirror.reconcile.datapath import DataPathFacts, decide_data_path
from trafficmirror_testbed.emulator import Emulator
from trafficmirror_testbed.seed import World


def _facts(lbs: LoadBalancers, hostname: str) -> DataPathFacts:
    lb = lbs.by_dns_name(hostname)
    listeners = lbs.listeners(lb.arn) if lb else []
    groups = {arn for listener in listeners for arn in listener.target_group_arns}
    return DataPathFacts(
        service="tm/capture",
        hostname=hostname,
        load_balancer=lb,
        listeners=listeners,
        health={arn: lbs.target_health(arn) for arn in groups},
        ingress_rules=lbs.ingress_rules(list(lb.security_group_ids)) if lb else None,
    )


def test_data_path_follows_the_load_balancer_as_it_is_built_and_broken(
    emulator: Emulator, ec2: Any, world: World
) -> None:
    elbv2 = emulator.client("elbv2")
    lbs = LoadBalancers(elbv2=elbv2, ec2=ec2)
    lb = elbv2.create_load_balancer(Name="capture", Subnets=[world.subnet_ids["a"]], Type="network", Scheme="internal")[
        "LoadBalancers"
    ][0]
    hostname = lb["DNSName"].upper() + "."  # as a resolver may hand it back: case and root dot ignored

    assert decide_data_path(_facts(lbs, "nothing.elb.amazonaws.com")).reason == "LoadBalancerNotFound"
    verdict = decide_data_path(_facts(lbs, hostname))
    assert (verdict.ready, verdict.reason, verdict.load_balancer_arn) == (False, "NoUdpListener", lb["LoadBalancerArn"])

    group = elbv2.create_target_group(
        Name="capture", Protocol="UDP", Port=4789, VpcId=world.vpc_id, TargetType="instance", HealthCheckProtocol="TCP"
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"],
        Protocol="UDP",
        Port=4789,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": group}],
    )
    verdict = decide_data_path(_facts(lbs, hostname))
    assert (verdict.ready, verdict.reason) == (False, "NoHealthyTargets")
    assert "no targets registered" in verdict.message

    elbv2.register_targets(TargetGroupArn=group, Targets=[{"Id": world.instance("capture")}])
    verdict = decide_data_path(_facts(lbs, hostname))
    assert (verdict.ready, verdict.reason) == (True, "DataPathReady"), verdict.message
    assert "1 of 1 target(s) healthy" in verdict.message

    ec2.stop_instances(InstanceIds=[world.instance("capture")])
    verdict = decide_data_path(_facts(lbs, hostname))
    assert (verdict.ready, verdict.reason) == (False, "NoHealthyTargets")
    assert world.instance("capture") in verdict.message
