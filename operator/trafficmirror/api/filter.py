"""MirrorFilter: which packets are mirrored, as rules per direction plus optional network services."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from trafficmirror.api.common import CamelModel, CommonSpec, CommonStatus, immutable_once_set

MAX_RULES_PER_FILTER = 10  # AWS quota, not adjustable
NO_RULES_MESSAGE = (
    "a filter needs at least one rule in ingressRules or egressRules (or a networkServices entry): "
    "with none it mirrors nothing; check the field names (e.g. ingressRules, egressRules)"
)
PORT_PROTOCOLS = (6, 17)  # TCP and UDP: the only protocols with ports

CidrBlock = Annotated[
    str,
    Field(
        max_length=49,
        description="An IPv4 or IPv6 CIDR block with no host bits set (10.0.0.0/8, not 10.1.2.3/8: AWS would "
        "store the network address, and the rule would never match the spec). Rejected at admission.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "isCIDR(self)", "message": "must be a CIDR block such as 10.0.0.0/16 or ::/0"},
                {
                    "rule": "!isCIDR(self) || cidr(self) == cidr(self).masked()",
                    "message": "must be a network address with no host bits set, e.g. 10.0.0.0/8 rather than "
                    "10.1.2.3/8 (AWS keeps only the network address)",
                },
            ]
        },
    ),
]
TrafficMirrorFilterId = Annotated[str, Field(pattern=r"^tmf-[0-9a-f]{8,17}$")]


def is_cidr(value: str) -> bool:
    """The apiserver's CEL isCIDR(): address/length, no zone, no IPv4-mapped IPv6, no leading zeros."""
    address, slash, length = value.partition("/")
    canonical_length = length.isascii() and length.isdigit() and (length == "0" or not length.startswith("0"))
    if not slash or "%" in address or not canonical_length:
        return False
    try:
        ip = ipaddress.ip_address(address)
        ipaddress.ip_network(value, strict=False)  # the length fits the family
    except ValueError:
        return False
    return not (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None)


class PortRange(
    CamelModel,
    json_schema_extra={
        "x-kubernetes-validations": [
            {"rule": "self.fromPort <= self.toPort", "message": "fromPort must not be greater than toPort"}
        ]
    },
):
    from_port: int = Field(ge=0, le=65535)
    to_port: int = Field(ge=0, le=65535)

    @model_validator(mode="after")
    def _ordered(self) -> PortRange:
        if self.from_port > self.to_port:
            raise ValueError("fromPort must not be greater than toPort")
        return self


def _ports_need_tcp_or_udp(field: str) -> dict[str, str]:
    return {
        "rule": f"!has(self.{field}) || (has(self.protocol) && (self.protocol == 6 || self.protocol == 17))",
        "message": f"{field} is only allowed with protocol 6 (TCP) or 17 (UDP)",
        "fieldPath": f".{field}",
    }


class FilterRule(
    CamelModel,
    json_schema_extra={
        "x-kubernetes-validations": [
            _ports_need_tcp_or_udp("sourcePortRange"),
            _ports_need_tcp_or_udp("destinationPortRange"),
            {
                "rule": "isCIDR(self.sourceCidrBlock) && isCIDR(self.destinationCidrBlock) ? "
                "cidr(self.sourceCidrBlock).ip().family() == cidr(self.destinationCidrBlock).ip().family() : true",
                "message": "sourceCidrBlock and destinationCidrBlock must be of the same IP family",
                "fieldPath": ".destinationCidrBlock",
            },
        ]
    },
):
    rule_number: int = Field(ge=1, le=32766, description="Evaluation order within a direction, lowest first.")
    action: Literal["accept", "reject"] = "accept"
    protocol: int | None = Field(default=None, ge=0, le=255, description="IANA protocol number; all when omitted.")
    source_cidr_block: CidrBlock = "0.0.0.0/0"
    destination_cidr_block: CidrBlock = "0.0.0.0/0"
    source_port_range: PortRange | None = None
    destination_port_range: PortRange | None = None
    description: Annotated[str, Field(max_length=255)] | None = None

    @field_validator("source_cidr_block", "destination_cidr_block")
    @classmethod
    def _cidr(cls, value: str) -> str:
        if not is_cidr(value):
            raise ValueError(f"{value!r} must be a CIDR block such as 10.0.0.0/16 or ::/0")
        network = ipaddress.ip_network(value, strict=False)
        if network.network_address != ipaddress.ip_interface(value).ip:
            raise ValueError(f"{value!r} has host bits set: write {network} (AWS keeps only the network address)")
        return value

    @model_validator(mode="after")
    def _ports_only_with_tcp_or_udp(self) -> FilterRule:
        has_ports = self.source_port_range is not None or self.destination_port_range is not None
        if has_ports and self.protocol not in PORT_PROTOCOLS:
            raise ValueError("port ranges are only allowed with protocol 6 (TCP) or 17 (UDP)")
        return self


Rules = Annotated[
    list[FilterRule],
    Field(
        max_length=MAX_RULES_PER_FILTER,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["ruleNumber"]},
    ),
]


class MirrorFilterSpec(
    CommonSpec,
    json_schema_extra={
        "x-kubernetes-validations": [
            {
                "rule": "(has(self.ingressRules) ? size(self.ingressRules) : 0)"
                " + (has(self.egressRules) ? size(self.egressRules) : 0) <= 10",
                "message": "a filter holds at most 10 rules (ingressRules and egressRules together): AWS quota",
            },
            {
                "rule": "(has(self.ingressRules) && size(self.ingressRules) > 0)"
                " || (has(self.egressRules) && size(self.egressRules) > 0)"
                " || (has(self.networkServices) && size(self.networkServices) > 0)",
                "message": NO_RULES_MESSAGE,
            },
            immutable_once_set("region"),
            immutable_once_set("adoptId"),
        ]
    },
):
    ingress_rules: Rules | None = Field(
        default=None,
        description="Rules for traffic into the source ENI. A filter needs at least one rule here or in "
        "egressRules (or a networkServices entry): one with none mirrors nothing, so it is rejected at "
        "admission, also when a misspelt field name (ingresRules) was pruned by the apiserver.",
    )
    egress_rules: Rules | None = Field(
        default=None, description="Rules for traffic out of the source ENI; see ingressRules."
    )
    network_services: (
        Annotated[
            list[Literal["amazon-dns"]],
            Field(max_length=1, json_schema_extra={"x-kubernetes-list-type": "set"}),
        ]
        | None
    ) = Field(default=None, description="Network services to mirror; AWS offers only amazon-dns.")
    adopt_id: TrafficMirrorFilterId | None = Field(
        default=None, description="An existing TrafficMirrorFilter (tmf-…) to manage instead of creating one."
    )

    @model_validator(mode="after")
    def _rule_limits(self) -> MirrorFilterSpec:
        ingress, egress = self.ingress_rules or [], self.egress_rules or []
        if not (ingress or egress or self.network_services):
            raise ValueError(NO_RULES_MESSAGE)
        if len(ingress) + len(egress) > MAX_RULES_PER_FILTER:
            raise ValueError("a filter holds at most 10 rules")
        for rules in (ingress, egress):
            numbers = [r.rule_number for r in rules]
            if len(numbers) != len(set(numbers)):
                raise ValueError("rule numbers must be unique per direction")
        return self


class MirrorFilterStatus(CommonStatus):
    traffic_mirror_filter_id: str | None = None
    rule_ids: dict[str, str] | None = Field(
        default=None, description="AWS rule ID (tmfr-…) by direction/ruleNumber, e.g. ingress/100."
    )
