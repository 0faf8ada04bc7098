"""Load balancer lookups for a MirrorTarget fronted by a Kubernetes Service: the NLB behind a
hostname, its listeners, the health of its targets, and its security groups' ingress rules.

Read-only; answers are small frozen dataclasses and errors become `AwsError` as in the EC2 adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions

from trafficmirror.aws.errors import AwsError, classify

T = TypeVar("T")


@dataclass(frozen=True)
class LoadBalancer:
    arn: str
    dns_name: str
    type: str  # network | application | gateway
    state: str
    vpc_id: str | None
    security_group_ids: tuple[str, ...]


@dataclass(frozen=True)
class Listener:
    protocol: str
    port: int
    target_group_arns: tuple[str, ...]


@dataclass(frozen=True)
class TargetHealth:
    target_id: str
    state: str  # healthy | unhealthy | initial | unused | draining | unavailable
    reason: str | None


@dataclass(frozen=True)
class IngressRule:
    protocol: str  # "udp", "tcp", "-1" (all), or a number
    from_port: int | None
    to_port: int | None
    sources: tuple[str, ...]  # CIDR blocks and security group IDs


def _translate(error: botocore.exceptions.ClientError) -> AwsError:
    details = error.response.get("Error", {})
    code = str(details.get("Code", "Unknown"))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return AwsError(
        error.operation_name,
        code,
        str(details.get("Message", "")),
        classify(code, status, str(details.get("Message", ""))),
    )


def _guarded(operation: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except botocore.exceptions.ClientError as error:
        raise _translate(error) from error
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError) as error:
        raise AwsError(operation, "EndpointUnreachable", str(error), classify("ServiceUnavailable")) from error


@dataclass
class LoadBalancers:
    elbv2: Any
    ec2: Any

    @classmethod
    def connect(cls, region: str, max_attempts: int = 8) -> LoadBalancers:
        config = botocore.config.Config(
            region_name=region,
            retries={"mode": "standard", "max_attempts": max_attempts},
            user_agent_extra="trafficmirror",
            connect_timeout=5,
            read_timeout=30,
        )
        session = boto3.session.Session()
        elbv2 = session.client("elbv2", config=config)
        ec2 = session.client("ec2", config=config)
        return cls(elbv2=elbv2, ec2=ec2)

    def by_dns_name(self, dns_name: str) -> LoadBalancer | None:
        """DescribeLoadBalancers has no DNS-name filter: the account's load balancers, paged."""
        wanted = dns_name.strip().rstrip(".").lower()
        paging: dict[str, Any] = {"PageSize": 400}
        while True:
            page: dict[str, Any] = _guarded("DescribeLoadBalancers", self._describe_load_balancers(dict(paging)))
            for raw in page.get("LoadBalancers", []):
                if str(raw.get("DNSName", "")).lower() == wanted:
                    return LoadBalancer(
                        arn=raw["LoadBalancerArn"],
                        dns_name=raw["DNSName"],
                        type=raw.get("Type", ""),
                        state=(raw.get("State") or {}).get("Code", "unknown"),
                        vpc_id=raw.get("VpcId"),
                        security_group_ids=tuple(raw.get("SecurityGroups") or ()),
                    )
            if not page.get("NextMarker"):
                return None
            paging["Marker"] = page["NextMarker"]

    def _describe_load_balancers(self, args: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        return lambda: self.elbv2.describe_load_balancers(**args)  # type: ignore[no-any-return]

    def listeners(self, load_balancer_arn: str) -> list[Listener]:
        page = _guarded("DescribeListeners", lambda: self.elbv2.describe_listeners(LoadBalancerArn=load_balancer_arn))
        found = []
        for raw in page.get("Listeners", []):
            groups = [a["TargetGroupArn"] for a in raw.get("DefaultActions", []) if a.get("TargetGroupArn")]
            for action in raw.get("DefaultActions", []):
                groups += [g["TargetGroupArn"] for g in (action.get("ForwardConfig") or {}).get("TargetGroups", [])]
            found.append(Listener(str(raw.get("Protocol", "")), int(raw.get("Port", 0)), tuple(dict.fromkeys(groups))))
        return found

    def target_health(self, target_group_arn: str) -> list[TargetHealth]:
        page = _guarded(
            "DescribeTargetHealth", lambda: self.elbv2.describe_target_health(TargetGroupArn=target_group_arn)
        )
        return [
            TargetHealth(
                target_id=str(raw["Target"]["Id"]),
                state=str((raw.get("TargetHealth") or {}).get("State", "unknown")),
                reason=(raw.get("TargetHealth") or {}).get("Reason"),
            )
            for raw in page.get("TargetHealthDescriptions", [])
        ]

    def ingress_rules(self, security_group_ids: list[str]) -> list[IngressRule]:
        if not security_group_ids:
            return []
        page = _guarded(
            "DescribeSecurityGroups", lambda: self.ec2.describe_security_groups(GroupIds=sorted(security_group_ids))
        )
        rules = []
        for group in page.get("SecurityGroups", []):
            for raw in group.get("IpPermissions", []):
                sources = [r["CidrIp"] for r in raw.get("IpRanges", [])]
                sources += [r["CidrIpv6"] for r in raw.get("Ipv6Ranges", [])]
                sources += [r["GroupId"] for r in raw.get("UserIdGroupPairs", []) if r.get("GroupId")]
                rules.append(
                    IngressRule(
                        protocol=str(raw.get("IpProtocol", "")),
                        from_port=raw.get("FromPort"),
                        to_port=raw.get("ToPort"),
                        sources=tuple(sources),
                    )
                )
        return rules
