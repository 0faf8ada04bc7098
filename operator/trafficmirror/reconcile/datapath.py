"""Will mirrored traffic sent to a Service's load balancer reach a capture agent? A pure decision.

A MirrorTarget with ``serviceRef`` names a Service of type LoadBalancer in front of the capture
agents. AWS accepts a mirror target on any NLB, listener or not, healthy targets or not, and then
mirrors into nothing; the ``DataPathReady`` condition says which link is missing instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trafficmirror.aws.elbv2 import IngressRule, Listener, LoadBalancer, TargetHealth
from trafficmirror.reconcile.common import ConditionUpdate
from trafficmirror.reconcile.context import ReconcileContext

DATA_PATH_CONDITION = "DataPathReady"
VXLAN_PORT = 4789
UDP_PROTOCOLS = ("UDP", "TCP_UDP")


@dataclass(frozen=True)
class DataPathFacts:
    """What the reconciler found, step by step; None where it did not get that far."""

    service: str  # namespace/name
    hostname: str | None
    load_balancer: LoadBalancer | None
    listeners: Sequence[Listener] = ()
    health: Mapping[str, Sequence[TargetHealth]] | None = None  # target group ARN -> targets
    ingress_rules: Sequence[IngressRule] | None = None


@dataclass(frozen=True)
class DataPathVerdict:
    ready: bool
    reason: str
    message: str
    load_balancer_arn: str | None
    """The NLB to create the mirror target on, as soon as it is known (even when not ready)."""


def _allows_vxlan(rule: IngressRule, port: int) -> bool:
    if rule.protocol == "-1":
        return True
    if rule.protocol.lower() not in ("udp", "17"):
        return False
    return rule.from_port is not None and rule.to_port is not None and rule.from_port <= port <= rule.to_port


def decide_data_path(facts: DataPathFacts, port: int = VXLAN_PORT) -> DataPathVerdict:
    if not facts.hostname:
        return DataPathVerdict(
            False,
            "WaitingForLoadBalancer",
            f"Service {facts.service} has no load-balancer hostname yet (status.loadBalancer.ingress); "
            "the AWS Load Balancer Controller writes it once the NLB exists",
            None,
        )
    lb = facts.load_balancer
    if lb is None:
        return DataPathVerdict(
            False,
            "LoadBalancerNotFound",
            f"no load balancer in this account and region has the DNS name {facts.hostname} of Service {facts.service}",
            None,
        )
    if lb.type != "network":
        return DataPathVerdict(
            False,
            "NotANetworkLoadBalancer",
            f"{lb.arn} is a {lb.type or 'unknown'} load balancer; a mirror target needs a Network Load Balancer "
            "(annotate the Service for an NLB)",
            None,
        )
    udp = [li for li in facts.listeners if li.protocol.upper() in UDP_PROTOCOLS and li.port == port]
    if not udp:
        seen = ", ".join(f"{li.protocol} {li.port}" for li in facts.listeners) or "none"
        return DataPathVerdict(
            False,
            "NoUdpListener",
            f"NLB {lb.arn} has no UDP listener on port {port} (listeners: {seen}); give the Service a UDP port {port}",
            lb.arn,
        )
    groups = sorted({arn for li in udp for arn in li.target_group_arns})
    health = facts.health or {}
    targets = [t for arn in groups for t in health.get(arn, ())]
    healthy = [t for t in targets if t.state == "healthy"]
    if not healthy:
        detail = "; ".join(f"{t.target_id} {t.state}{f' ({t.reason})' if t.reason else ''}" for t in targets)
        return DataPathVerdict(
            False,
            "NoHealthyTargets",
            f"the UDP {port} listener of NLB {lb.arn} forwards to no healthy target "
            f"({detail or 'no targets registered'}); is the capture agent running and its health check passing?",
            lb.arn,
        )
    rules = facts.ingress_rules
    if lb.security_group_ids and rules is not None and not any(_allows_vxlan(rule, port) for rule in rules):
        return DataPathVerdict(
            False,
            "SecurityGroupBlocksVxlan",
            f"no ingress rule of the NLB's security groups {', '.join(lb.security_group_ids)} allows UDP {port}; "
            "allow it from the mirror sources' subnets",
            lb.arn,
        )
    return DataPathVerdict(
        True,
        DATA_PATH_CONDITION,
        f"NLB {lb.arn}: UDP {port} listener, {len(healthy)} of {len(targets)} target(s) healthy",
        lb.arn,
    )


def check_service(namespace: str, service: str, region: str | None, ctx: ReconcileContext) -> DataPathVerdict:
    """Gather the facts step by step (stopping at the first missing link) and decide."""
    key = f"{namespace}/{service}"
    hostname = ctx.service_hostnames.get((namespace, service)) or None
    if hostname is None or ctx.load_balancers_for_region is None:
        return decide_data_path(DataPathFacts(service=key, hostname=None, load_balancer=None))
    balancers = ctx.load_balancers_for_region(region)
    lb = balancers.by_dns_name(hostname)
    if lb is None or lb.type != "network":
        return decide_data_path(DataPathFacts(service=key, hostname=hostname, load_balancer=lb))
    listeners = balancers.listeners(lb.arn)
    groups = sorted({arn for li in listeners if li.port == VXLAN_PORT for arn in li.target_group_arns})
    health = {arn: balancers.target_health(arn) for arn in groups}
    rules = balancers.ingress_rules(list(lb.security_group_ids)) if lb.security_group_ids else None
    return decide_data_path(
        DataPathFacts(
            service=key, hostname=hostname, load_balancer=lb, listeners=listeners, health=health, ingress_rules=rules
        )
    )


def condition_of(verdict: DataPathVerdict) -> ConditionUpdate:
    return ConditionUpdate(DATA_PATH_CONDITION, "True" if verdict.ready else "False", verdict.reason, verdict.message)
