"""MirrorTarget: where mirrored traffic is sent (an ENI, an instance, a node, an NLB or a GWLB endpoint)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from trafficmirror.api.common import (
    CamelModel,
    CommonSpec,
    CommonStatus,
    InstanceId,
    NetworkInterfaceId,
    NodeName,
    exactly_one_of,
    immutable_once_set,
)

TARGET_KINDS = (
    "networkInterfaceId",
    "instanceId",
    "nodeName",
    "networkLoadBalancerArn",
    "gatewayLoadBalancerEndpointId",
    "serviceRef",
)

NetworkLoadBalancerArn = Annotated[
    str,
    Field(
        pattern=r"^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:loadbalancer/net/[A-Za-z0-9-]+/[0-9a-f]+$",
        description="ARN of a Network Load Balancer with a UDP 4789 listener.",
    ),
]
GatewayLoadBalancerEndpointId = Annotated[
    str, Field(pattern=r"^vpce-[0-9a-f]{8,17}$", description="A Gateway Load Balancer endpoint ID, vpce-….")
]


ServiceName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$")]


class ServiceReference(CamelModel):
    name: ServiceName = Field(description="Name of the Service in the target's namespace.")


TrafficMirrorTargetId = Annotated[str, Field(pattern=r"^tmt-[0-9a-f]{8,17}$")]


class MirrorTargetSpec(
    CommonSpec,
    json_schema_extra={
        "x-kubernetes-validations": [
            exactly_one_of(*TARGET_KINDS, what="a MirrorTarget"),
            immutable_once_set("region"),
            immutable_once_set("adoptId"),
        ]
    },
):
    network_interface_id: NetworkInterfaceId | None = None
    instance_id: InstanceId | None = Field(default=None, description="An EC2 instance; its primary ENI is used.")
    node_name: NodeName | None = None
    network_load_balancer_arn: NetworkLoadBalancerArn | None = None
    gateway_load_balancer_endpoint_id: GatewayLoadBalancerEndpointId | None = None
    service_ref: ServiceReference | None = Field(
        default=None,
        description="A Service of type LoadBalancer in front of the capture agents (an NLB with a UDP 4789 "
        "listener); the target is created on its Network Load Balancer and DataPathReady says what is missing.",
    )
    adopt_id: TrafficMirrorTargetId | None = Field(
        default=None, description="An existing TrafficMirrorTarget (tmt-…) to manage instead of creating one."
    )

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> MirrorTargetSpec:
        if sum(getattr(self, f) is not None for f in TARGET_FIELDS) != 1:
            raise ValueError(f"set exactly one of {', '.join(TARGET_KINDS)}")
        return self


TARGET_FIELDS = (
    "network_interface_id",
    "instance_id",
    "node_name",
    "network_load_balancer_arn",
    "gateway_load_balancer_endpoint_id",
    "service_ref",
)


class MirrorTargetStatus(CommonStatus):
    traffic_mirror_target_id: str | None = None
    network_interface_id: str | None = Field(default=None, description="The ENI the target resolved to.")
    endpoint_type: Literal["NetworkInterface", "NetworkLoadBalancer", "GatewayLoadBalancerEndpoint"] | None = Field(
        default=None, description="What the target sends to."
    )
    instance_type: str | None = Field(default=None, description="Instance type behind the target ENI, if any.")
    availability_zone: str | None = Field(
        default=None, description="Availability Zone of the target ENI; sessions choosing from a pool prefer their own."
    )
    previous_target_ids: list[str] | None = Field(
        default=None, description="Replaced targets, deleted as soon as no session uses them."
    )
