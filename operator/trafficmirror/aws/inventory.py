"""Read-only EC2 lookups for `trafficmirror doctor`: instances, their ENIs, mirror targets and sessions.

Its own client and its own IAM policy (``iam/doctor-policy.json``): whoever runs doctor needs only
Describe calls, not the operator's role. Answers are small frozen dataclasses; no decisions here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from trafficmirror.aws.errors import AwsError, classify
from trafficmirror.aws.instance_support import InstanceTypeFacts


@dataclass(frozen=True)
class InstanceRecord:
    instance_id: str
    instance_type: str
    availability_zone: str | None
    state: str
    network_interface_ids: tuple[str, ...]
    """Attached ENIs, primary (device index 0) first."""


@dataclass(frozen=True)
class TargetRecord:
    target_id: str
    network_interface_id: str | None
    network_load_balancer_arn: str | None
    gateway_load_balancer_endpoint_id: str | None


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    network_interface_id: str
    target_id: str


@dataclass(frozen=True)
class Inventory:
    """Everything doctor asks EC2, in one snapshot."""

    instances: dict[str, InstanceRecord]
    interface_instances: dict[str, str | None]
    """ENI -> instance it is attached to, for target ENIs on instances not asked about."""
    targets: tuple[TargetRecord, ...]
    sessions: tuple[SessionRecord, ...]
    type_facts: dict[str, InstanceTypeFacts]


@dataclass
class Ec2Inventory:
    client: Any

    @classmethod
    def connect(cls, region: str) -> Ec2Inventory:
        config = botocore.config.Config(
            region_name=region,
            retries={"mode": "standard", "max_attempts": 8},
            user_agent_extra="trafficmirror-doctor",
            connect_timeout=5,
            read_timeout=30,
        )
        client = boto3.session.Session().client("ec2", config=config)
        return cls(client=client)

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = getattr(self.client, operation)(**kwargs)
            return response
        except botocore.exceptions.ClientError as error:
            details = error.response.get("Error", {})
            code = str(details.get("Code", "Unknown"))
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise AwsError(
                error.operation_name,
                code,
                str(details.get("Message", "")),
                classify(code, status, str(details.get("Message", ""))),
            ) from error
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError) as error:
            raise AwsError(operation, "EndpointUnreachable", str(error), classify("ServiceUnavailable")) from error

    def _pages(self, operation: str, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        token: str | None = None
        by_id = any(name.endswith("Ids") or name == "InstanceTypes" for name in kwargs)
        while True:
            paging = {} if by_id else {"MaxResults": 1000}
            page = self._call(operation, **paging, **({"NextToken": token} if token else {}), **kwargs)
            yield from page.get(key, [])
            token = page.get("NextToken")
            if not token:
                return

    def instances(self, instance_ids: list[str]) -> dict[str, InstanceRecord]:
        if not instance_ids:
            return {}
        found: dict[str, InstanceRecord] = {}
        for reservation in self._pages("describe_instances", "Reservations", InstanceIds=sorted(set(instance_ids))):
            for raw in reservation["Instances"]:
                interfaces = sorted(
                    raw.get("NetworkInterfaces", []), key=lambda n: (n.get("Attachment") or {}).get("DeviceIndex", 0)
                )
                found[raw["InstanceId"]] = InstanceRecord(
                    instance_id=raw["InstanceId"],
                    instance_type=raw["InstanceType"],
                    availability_zone=(raw.get("Placement") or {}).get("AvailabilityZone"),
                    state=(raw.get("State") or {}).get("Name", "unknown"),
                    network_interface_ids=tuple(n["NetworkInterfaceId"] for n in interfaces),
                )
        return found

    def interface_instances(self, network_interface_ids: list[str]) -> dict[str, str | None]:
        if not network_interface_ids:
            return {}
        return {
            raw["NetworkInterfaceId"]: (raw.get("Attachment") or {}).get("InstanceId")
            for raw in self._pages(
                "describe_network_interfaces",
                "NetworkInterfaces",
                NetworkInterfaceIds=sorted(set(network_interface_ids)),
            )
        }

    def targets(self) -> tuple[TargetRecord, ...]:
        return tuple(
            TargetRecord(
                target_id=raw["TrafficMirrorTargetId"],
                network_interface_id=raw.get("NetworkInterfaceId"),
                network_load_balancer_arn=raw.get("NetworkLoadBalancerArn"),
                gateway_load_balancer_endpoint_id=raw.get("GatewayLoadBalancerEndpointId"),
            )
            for raw in self._pages("describe_traffic_mirror_targets", "TrafficMirrorTargets")
        )

    def sessions(self) -> tuple[SessionRecord, ...]:
        return tuple(
            SessionRecord(
                session_id=raw["TrafficMirrorSessionId"],
                network_interface_id=raw["NetworkInterfaceId"],
                target_id=raw["TrafficMirrorTargetId"],
            )
            for raw in self._pages("describe_traffic_mirror_sessions", "TrafficMirrorSessions")
        )

    def instance_type_facts(self, instance_types: list[str]) -> dict[str, InstanceTypeFacts]:
        """DescribeInstanceTypes for the types asked; a type EC2 does not know gets name-only facts."""
        wanted = sorted(set(instance_types))
        facts = {name: InstanceTypeFacts.name_only(name) for name in wanted}
        for name in wanted:  # one by one: an unknown type fails the whole call
            try:
                for raw in self._pages("describe_instance_types", "InstanceTypes", InstanceTypes=[name]):
                    facts[name] = InstanceTypeFacts.from_instance_type_info(raw)
            except AwsError as error:
                if error.code not in ("InvalidInstanceType", "InvalidParameterValue"):
                    raise
        return facts

    def snapshot(self, instance_ids: list[str]) -> Inventory:
        instances = self.instances(instance_ids)
        targets = self.targets()
        sessions = self.sessions()
        known_enis = {eni for record in instances.values() for eni in record.network_interface_ids}
        target_enis = [t.network_interface_id for t in targets if t.network_interface_id]
        interface_instances = self.interface_instances([eni for eni in target_enis if eni not in known_enis])
        others = [i for i in interface_instances.values() if i and i not in instances]
        instances.update(self.instances(others))
        type_facts = self.instance_type_facts([record.instance_type for record in instances.values()])
        return Inventory(
            instances=instances,
            interface_instances=interface_instances,
            targets=targets,
            sessions=sessions,
            type_facts=type_facts,
        )
