"""MirrorSession: mirror one source ENI's traffic through a filter to a target."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, field_validator, model_validator

from trafficmirror.api.common import (
    CamelModel,
    CommonSpec,
    CommonStatus,
    Condition,
    InstanceId,
    NetworkInterfaceId,
    NodeName,
    exactly_one_of,
    immutable_once_set,
)
from trafficmirror.api.duration import GO_DURATION_PATTERN, MAX_DURATION, MAX_DURATION_TEXT, parse_go_duration

MAX_VIRTUAL_NETWORK_ID = 2**24 - 1  # VXLAN's VNI is 24 bits
TrafficMirrorSessionId = Annotated[str, Field(pattern=r"^tms-[0-9a-f]{8,17}$")]
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]


class LocalObjectReference(CamelModel):
    name: ObjectName = Field(description="Name of the object in the session's namespace.")


_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_LABEL_NAME}$"
MatchLabels = Annotated[
    dict[str, Annotated[str, Field(max_length=63)]],
    Field(
        min_length=1,
        description="Labels every MirrorTarget of the pool carries (in the session's namespace).",
        json_schema_extra={
            "maxProperties": 20,
            "x-kubernetes-validations": [
                {
                    "rule": f"self.all(k, size(k) <= 317 && k.matches('{_LABEL_KEY}'))",
                    "message": "label keys are [prefix/]name: a DNS subdomain prefix and a name of at most 63 "
                    "characters (A-Z, a-z, 0-9, -, _, .)",
                },
                {
                    "rule": f"self.all(k, self[k] == '' || self[k].matches('^{_LABEL_NAME}$'))",
                    "message": "label values are at most 63 characters (A-Z, a-z, 0-9, -, _, .), "
                    "beginning and ending with a letter or digit",
                },
            ],
        },
    ),
]


class TargetSelector(CamelModel):
    match_labels: MatchLabels


_LABEL_KEY_RULES = {
    "rule": f"size(self) <= 317 && self.matches('{_LABEL_KEY}')",
    "message": "label keys are [prefix/]name: a DNS subdomain prefix and a name of at most 63 characters "
    "(A-Z, a-z, 0-9, -, _, .)",
}
LabelKey = Annotated[
    str, Field(min_length=1, max_length=317, json_schema_extra={"x-kubernetes-validations": [_LABEL_KEY_RULES]})
]
LabelValue = Annotated[
    str,
    Field(
        max_length=63,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self == '' || self.matches('^{_LABEL_NAME}$')",
                    "message": "label values are at most 63 characters (A-Z, a-z, 0-9, -, _, .), "
                    "beginning and ending with a letter or digit",
                }
            ]
        },
    ),
]


GoDuration = Annotated[
    str,
    Field(
        max_length=32,
        pattern=GO_DURATION_PATTERN,
        description="How long to mirror, from the session's creation: a Go-style duration such as 30s, 5m or "
        "1h30m (units h, m, s, ms, us, ns). Then the operator deletes the AWS session (mirroring is billed per "
        "ENI-hour) and the phase becomes Completed; status.stopAt is the computed end. Editing it while the "
        "session runs moves the end (still counted from creation); a Completed session is never restarted.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "duration(self) > duration('0s')",
                    "message": "duration must be more than zero, e.g. 30s, 5m or 1h30m",
                },
                {
                    "rule": f"duration(self) <= duration('{MAX_DURATION_TEXT}')",
                    "message": f"duration must be at most {MAX_DURATION_TEXT} (366 days)",
                },
            ]
        },
    ),
]


class LabelSelectorRequirement(
    CamelModel,
    json_schema_extra={
        "x-kubernetes-validations": [
            {
                "rule": "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
                "message": "values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist",
                "fieldPath": ".values",
            }
        ]
    },
):
    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[LabelValue] | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if (self.operator in ("In", "NotIn")) != bool(self.values):
            raise ValueError("values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist")
        return self


class LabelSelector(CamelModel):
    """A Kubernetes label selector: every matchLabels pair and every matchExpressions requirement must
    hold. An empty selector selects everything (of its namespace, for pods)."""

    match_labels: (
        Annotated[
            dict[str, LabelValue],
            Field(
                json_schema_extra={
                    "maxProperties": 20,
                    "x-kubernetes-validations": [
                        {
                            "rule": f"self.all(k, size(k) <= 317 && k.matches('{_LABEL_KEY}'))",
                            "message": _LABEL_KEY_RULES["message"],
                        }
                    ],
                }
            ),
        ]
        | None
    ) = None
    match_expressions: list[LabelSelectorRequirement] | None = Field(default=None, max_length=20)


PodName = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
SELECTOR_SOURCES = ("nodeSelector", "podSelector")


def _only_with(field: str, partner: str) -> dict[str, str]:
    return {
        "rule": f"!has(self.{field}) || has(self.{partner})",
        "message": f"source.{field} applies to a {partner} source only",
        "fieldPath": f".{field}",
    }


class MirrorSource(
    CamelModel,
    json_schema_extra={
        "x-kubernetes-validations": [
            exactly_one_of(
                "networkInterfaceId", "instanceId", "nodeName", "nodeSelector", "podSelector", what="source"
            ),
            _only_with("interfaces", "nodeSelector"),
            _only_with("namespaceSelector", "podSelector"),
            _only_with("podNames", "podSelector"),
        ]
    },
):
    network_interface_id: NetworkInterfaceId | None = None
    instance_id: InstanceId | None = Field(default=None, description="An EC2 instance; its primary ENI is used.")
    node_name: NodeName | None = None
    node_selector: LabelSelector | None = Field(
        default=None,
        description="The Nodes with these labels: one AWS session per ENI of theirs (see interfaces), following "
        "nodes as they come and go. Fargate nodes are left out (AWS cannot mirror them).",
    )
    interfaces: Literal["primary", "all"] | None = Field(
        default=None,
        description="With nodeSelector: each node's primary ENI (the default), or all its ENIs.",
    )
    pod_selector: LabelSelector | None = Field(
        default=None,
        description="The Pods with these labels (in the session's namespace unless namespaceSelector is set): one "
        "AWS session per ENI holding their IPs, following pods as they come, go and move; status.sources lists "
        "them, status.skippedPods the pods AWS cannot mirror and why.",
    )
    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="With podSelector: the pods of the namespaces with these labels instead of the session's own.",
    )
    pod_names: list[PodName] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="With podSelector: only the selected pods of these names.",
    )

    @property
    def is_selector(self) -> bool:
        return self.node_selector is not None or self.pod_selector is not None

    @model_validator(mode="after")
    def _exactly_one(self) -> MirrorSource:
        kinds = (self.network_interface_id, self.instance_id, self.node_name, self.node_selector, self.pod_selector)
        if sum(v is not None for v in kinds) != 1:
            raise ValueError(
                "source: set exactly one of networkInterfaceId, instanceId, nodeName, nodeSelector, podSelector"
            )
        for field, partner, value, needs in (
            ("interfaces", self.node_selector, self.interfaces, "nodeSelector"),
            ("namespaceSelector", self.pod_selector, self.namespace_selector, "podSelector"),
            ("podNames", self.pod_selector, self.pod_names, "podSelector"),
        ):
            if value is not None and partner is None:
                raise ValueError(f"source.{field} applies to a {needs} source only")
        return self


class CaptureOptions(CamelModel):
    files: Literal["perPod", "perSession"] | None = Field(
        default=None,
        description="With podSelector: one capture file per pod (perPod, the default), or one per session holding "
        "only the selected pods' packets (perSession). A perSession file holds each source ENI's packets in time "
        "order; packets of different ENIs in it are out of order by less than one receive batch of the agent "
        "(256 datagrams; a few milliseconds while the agent keeps up).",
    )


_NO_SELECTOR = "(!has(self.source.nodeSelector) && !has(self.source.podSelector))"


class MirrorSessionSpec(
    CommonSpec,
    json_schema_extra={
        "x-kubernetes-validations": [
            exactly_one_of("targetRef", "targetSelector", what="a MirrorSession"),
            immutable_once_set("region"),
            immutable_once_set("adoptId"),
            {
                "rule": f"!has(self.virtualNetworkId) || {_NO_SELECTOR}",
                "message": "virtualNetworkId cannot be set with a nodeSelector or podSelector source: each ENI gets "
                "its own AWS session and VNI",
                "fieldPath": ".virtualNetworkId",
            },
            {
                "rule": f"!has(self.adoptId) || {_NO_SELECTOR}",
                "message": "adoptId cannot be set with a nodeSelector or podSelector source: it names one AWS session",
                "fieldPath": ".adoptId",
            },
            {
                "rule": "!has(self.capture) || !has(self.capture.files) || has(self.source.podSelector)",
                "message": "capture.files applies to a podSelector source only",
                "fieldPath": ".capture.files",
            },
            {
                "rule": "!(has(self.duration) && has(self.stopAt))",
                "message": "set at most one of duration, stopAt",
                "fieldPath": ".stopAt",
            },
        ]
    },
):
    source: MirrorSource
    target_ref: LocalObjectReference | None = Field(default=None, description="The MirrorTarget to send to.")
    target_selector: TargetSelector | None = Field(
        default=None,
        description="A pool: the MirrorTargets with these labels (a label selector, not a pool kind: members "
        "are MirrorTargets already and join or leave by label). Per source the operator picks a Ready ENI "
        "target in the source's Availability Zone first, the least loaded, never above AWS's sources-per-target "
        "quota of its instance type; then a load-balancer target; then another zone. status.targetName says "
        "which, the TargetChosen condition why.",
    )
    filter_ref: LocalObjectReference = Field(description="The MirrorFilter that selects packets.")
    session_number: int = Field(
        default=1, ge=1, le=32766, description="Order among the sessions of one source ENI, lowest first."
    )
    virtual_network_id: int | None = Field(
        default=None,
        ge=0,
        le=MAX_VIRTUAL_NETWORK_ID,
        description="VXLAN VNI of the mirrored packets; AWS picks an account-unique one when omitted.",
    )
    packet_length: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Bytes of each packet to mirror; the whole packet when omitted.",
    )
    adopt_id: TrafficMirrorSessionId | None = Field(
        default=None,
        description="An existing TrafficMirrorSession (tms-…) to manage instead of creating one.",
    )

    capture: CaptureOptions | None = Field(default=None, description="Options for the capture agent.")
    duration: GoDuration | None = None
    stop_at: AwareDatetime | None = Field(
        default=None,
        description="When to stop mirroring (RFC 3339, e.g. 2026-11-30T18:00:00Z); instead of duration. A time "
        "already past at creation completes the session without creating anything in AWS.",
    )

    @field_validator("duration")
    @classmethod
    def _positive_duration(cls, value: str | None) -> str | None:
        if value is not None:
            length = parse_go_duration(value)
            if length.total_seconds() <= 0:
                raise ValueError("duration must be more than zero, e.g. 30s, 5m or 1h30m")
            if length > MAX_DURATION:
                raise ValueError(f"duration must be at most {MAX_DURATION_TEXT} (366 days)")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> MirrorSessionSpec:
        if (self.target_ref is None) == (self.target_selector is None):
            raise ValueError("set exactly one of targetRef, targetSelector")
        if self.source.is_selector and self.virtual_network_id is not None:
            raise ValueError("virtualNetworkId cannot be set with a nodeSelector or podSelector source")
        if self.source.is_selector and self.adopt_id is not None:
            raise ValueError("adoptId cannot be set with a nodeSelector or podSelector source")
        if self.capture is not None and self.capture.files is not None and self.source.pod_selector is None:
            raise ValueError("capture.files applies to a podSelector source only")
        if self.duration is not None and self.stop_at is not None:
            raise ValueError("set at most one of duration, stopAt")
        return self


class CaptureDrops(CamelModel):
    """Drops by layer since the agent started: only disk is this session's own; the rest are shared and overlap."""

    disk: int = Field(default=0, ge=0, description="This session's packets lost to write errors (disk full).")
    socket: int = Field(
        default=0, ge=0, description="Drops of the agent's capture sockets (SO_RXQ_OVFL), shared by all its sessions."
    )
    softnet: int = Field(default=0, ge=0, description="Input backlog drops: node-wide, every datagram on the node.")
    nic: int = Field(default=0, ge=0, description="rx_dropped + rx_missed_errors of the node's interfaces: node-wide.")
    udp_rcvbuf_errors: int = Field(default=0, ge=0, description="UDP RcvbufErrors: node-wide.")
    udp_in_errors: int = Field(default=0, ge=0, description="UDP InErrors: node-wide.")


class CaptureNodeStatus(CamelModel):
    """What one capture node's agent saw of this session; written by that agent only."""

    packets: int = Field(default=0, ge=0, description="Packets of this session written by this node.")
    bytes: int = Field(default=0, ge=0, description="Their bytes on the wire.")
    drops: CaptureDrops = Field(default_factory=CaptureDrops)
    filtered_out: int = Field(
        default=0,
        ge=0,
        description="A podSelector session's packets that matched none of its pods' addresses: counted, not written.",
    )
    files: list[str] | None = Field(
        default=None,
        description="Once the session is Completed: where this node's files of it are, a path or an s3:// URI "
        "each (a file whose upload has not succeeded yet is listed in the node's spool).",
    )
    since: str | None = Field(default=None, description="When this node's agent started counting (RFC 3339).")
    last_update_time: str | None = None
    conditions: list[Condition] = Field(
        default_factory=list, description="Lossy: whether any layer dropped in the agent's last report interval."
    )


SourceState = Literal["Mirroring", "Pending", "Failed", "Conflict"]
SkipReason = Literal["BranchNetworkInterface", "Fargate", "NoAddress", "AddressNotFound"]


class SourcePod(CamelModel):
    namespace: str
    name: str
    ip: str | None = None


class WorkloadSource(CamelModel):
    """One ENI a selector session mirrors, through its own child MirrorSession."""

    network_interface_id: str
    node_name: str | None = None
    pods: list[SourcePod] = Field(default_factory=list, description="The selected pods whose IPs this ENI holds.")
    host_network: bool = Field(default=False, description="Whether the pods use the node's network (its primary ENI).")
    session_name: str | None = Field(default=None, description="The child MirrorSession of this ENI.")
    traffic_mirror_session_id: str | None = None
    virtual_network_id: int | None = None
    source_addresses: list[str] | None = None
    target_name: str | None = None
    narrowed: bool = Field(
        default=False, description="Whether AWS mirrors only the pods' addresses (a generated MirrorFilter)."
    )
    state: SourceState = "Pending"
    reason: str | None = None
    message: str | None = None


class SkippedPod(CamelModel):
    """A selected pod AWS cannot mirror, and why."""

    namespace: str
    name: str
    reason: SkipReason
    message: str = ""


class EstimatedCost(CamelModel):
    """What the mirroring costs, estimated: ENI-hours times the price per ENI-hour."""

    eni_hours: float = Field(
        ge=0,
        description="Hours of mirroring summed over the mirrored ENIs, from each AWS session's creation to now "
        "(while running) or to its deletion.",
    )
    usd_per_eni_hour: float = Field(ge=0, description="The price used.")
    usd: float = Field(ge=0, description="eniHours times usdPerEniHour (data transfer across zones not included).")
    price_source: str = Field(description="Where the price comes from: AWS's published page, or configured.")
    as_of: str | None = Field(default=None, description="When this was computed (RFC 3339).")


class MirrorSessionStatus(CommonStatus):
    traffic_mirror_session_id: str | None = None
    virtual_network_id: int | None = Field(default=None, description="The VNI in use; capture files are named by it.")
    source_network_interface_id: str | None = None
    source_instance_type: str | None = None
    source_addresses: list[str] | None = Field(
        default=None,
        description="Outer source addresses of the mirrored VXLAN datagrams (the source ENI's primary private "
        "address) when the target receives them as sent: an ENI target. The capture agent accepts the session's "
        "VNI only from these. Unset for a load balancer target, whose datagrams may come from the load balancer.",
    )
    traffic_mirror_target_id: str | None = None
    target_name: str | None = Field(
        default=None, description="The MirrorTarget the session sends to (with targetSelector: the one chosen)."
    )
    traffic_mirror_filter_id: str | None = None
    packet_length: int | None = Field(
        default=None,
        description="The packet length AWS applies (8500 for a Network Load Balancer target when the spec has none).",
    )
    rejected_network_interface_id: str | None = Field(
        default=None, description="The ENI AWS refused with NetworkInterfaceNotSupported, source or target."
    )
    rejected_instance_type: str | None = None
    sources: list[WorkloadSource] | None = Field(
        default=None,
        description="A nodeSelector or podSelector session: one entry per ENI mirrored, with its pods and node, "
        "its child MirrorSession, AWS session ID, VNI and state.",
    )
    skipped_pods: list[SkippedPod] | None = Field(
        default=None, description="A podSelector session: the selected pods AWS cannot mirror, and why."
    )
    capture_nodes: dict[str, CaptureNodeStatus] | None = Field(
        default=None,
        description="Per capture node (by node name), the packets written and drops by layer; each node's "
        "agent patches only its own entry.",
    )
    mirroring_since: str | None = Field(
        default=None, description="When the AWS session was created (RFC 3339): where the ENI-hours start."
    )
    stop_at: str | None = Field(
        default=None,
        description="With spec.duration or spec.stopAt: when mirroring ends (RFC 3339), the creation time plus "
        "the duration, or stopAt.",
    )
    completed_at: str | None = Field(
        default=None, description="When the operator ended the capture and deleted its AWS session (RFC 3339)."
    )
    estimated_cost: EstimatedCost | None = None
