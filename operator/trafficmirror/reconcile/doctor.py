"""What `trafficmirror doctor` says about each node, each mirror target and the bill: pure decisions.

Inputs are what the glue gathered (Kubernetes nodes and capture agent pods, an EC2 inventory, the
agents' metrics text); the output is a report that prints as a table or as JSON. Nothing here
talks to Kubernetes or AWS, so every rule is a table test.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from trafficmirror.aws.instance_support import InstanceTypeFacts, SupportTable, decide_support
from trafficmirror.aws.inventory import Inventory, TargetRecord
from trafficmirror.aws.target_quotas import Price, TargetKind, TargetQuotas
from trafficmirror.reconcile.endpoints import instance_id_from_provider_id

VXLAN_PORT = 4789
PORT_USE_MARKERS = ("already in use", "address in use", "eaddrinuse")
"""Words of the agent's exit message (and the kernel's) when something else holds the port."""


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class NodeInput:
    name: str
    provider_id: str | None
    capture: bool
    """Labelled as a capture node (trafficmirror.io/capture=true)."""


@dataclass(frozen=True)
class AgentPod:
    """The capture agent pod on a node, as the API server shows it, plus its metrics if they were read."""

    name: str
    namespace: str
    node_name: str
    phase: str
    ready: bool
    udp_port: int = VXLAN_PORT
    termination_message: str | None = None
    """The last exit message of the agent container (state or lastState.terminated.message)."""
    metrics_text: str | None = None
    metrics_error: str | None = None


@dataclass(frozen=True)
class AgentMetrics:
    receive_buffer_granted: int | None
    rmem_max: int | None
    datagrams: int | None


def parse_agent_metrics(text: str) -> AgentMetrics:
    """The facts doctor needs from the agent's Prometheus text (trafficmirror_capture_*)."""
    granted = rmem_max = datagrams = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "trafficmirror_capture_receive_buffer_bytes":
                kind = sample.labels.get("kind")
                if kind == "granted":
                    granted = int(sample.value)
                elif kind == "rmem_max":
                    rmem_max = int(sample.value)
            elif sample.name in ("trafficmirror_capture_datagrams_total", "trafficmirror_capture_datagrams"):
                datagrams = int(sample.value)
    return AgentMetrics(receive_buffer_granted=granted, rmem_max=rmem_max, datagrams=datagrams)


# --------------------------------------------------------------------------- outputs


class PortState(enum.StrEnum):
    HELD_BY_AGENT = "HeldByAgent"
    IN_USE = "InUseByOther"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class PortVerdict:
    state: PortState
    how: str
    """How doctor knows: which report of the agent (or the lack of one) it rests on."""


@dataclass(frozen=True)
class EniReport:
    network_interface_id: str
    sessions: int
    sessions_limit: int


@dataclass(frozen=True)
class CaptureReport:
    agent_pod: str | None
    udp_port: int
    port: PortVerdict
    rmem_max: int | None
    receive_buffer_granted: int | None


@dataclass(frozen=True)
class NodeReport:
    name: str
    instance_id: str | None
    instance_type: str | None
    availability_zone: str | None
    source: str
    """Supported / Unsupported / Unknown: can this node's ENIs be mirror sources."""
    reason: str
    alternative: str | None
    network_interfaces: tuple[EniReport, ...]
    capture: CaptureReport | None


@dataclass(frozen=True)
class TargetReport:
    target_id: str
    kind: TargetKind
    resource: str
    node: str | None
    instance_type: str | None
    sources: int
    sources_limit: int | None
    headroom: int | None
    reason: str


@dataclass(frozen=True)
class CostReport:
    mirrored_network_interfaces: int
    usd_per_eni_hour: float
    usd_per_hour: float
    price_source: str


@dataclass(frozen=True)
class DoctorReport:
    nodes: tuple[NodeReport, ...]
    targets: tuple[TargetReport, ...]
    cost: CostReport
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- decisions


def port_verdict(pod: AgentPod | None, metrics: AgentMetrics | None) -> PortVerdict:
    """Whether UDP 4789 is free for the agent on a capture node, and how that is known.

    The agent binds the port before it serves metrics and exits naming the holder when the port is
    taken (a CNI's VXLAN device, typically), so its pod is the witness: metrics with a granted
    receive buffer mean it holds the port; an exit message about the address in use means
    something else does.
    """
    if pod is None:
        return PortVerdict(
            PortState.UNKNOWN,
            "no capture agent pod on this node: nothing has tried the port there (deploy the agent's "
            "DaemonSet to this node to find out)",
        )
    port = pod.udp_port
    message = (pod.termination_message or "").strip()
    if message and any(marker in message.lower() for marker in PORT_USE_MARKERS):
        return PortVerdict(
            PortState.IN_USE,
            f"agent pod {pod.namespace}/{pod.name} exited because UDP {port} is taken: {_one_line(message)}",
        )
    if metrics is not None and metrics.receive_buffer_granted:
        return PortVerdict(
            PortState.HELD_BY_AGENT,
            f"agent pod {pod.namespace}/{pod.name} bound UDP {port} (its metrics report a receive buffer of "
            f"{metrics.receive_buffer_granted} bytes granted)",
        )
    why = pod.metrics_error or "its metrics name no bound socket"
    return PortVerdict(
        PortState.UNKNOWN,
        f"agent pod {pod.namespace}/{pod.name} is {pod.phase}{'' if pod.ready else ', not ready'}; {why}",
    )


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def target_kind(target: TargetRecord) -> tuple[TargetKind, str]:
    if target.network_load_balancer_arn:
        return "network-load-balancer", target.network_load_balancer_arn
    if target.gateway_load_balancer_endpoint_id:
        return "gateway-load-balancer-endpoint", target.gateway_load_balancer_endpoint_id
    return "network-interface", target.network_interface_id or ""


def _support(
    instance_type: str, facts: Mapping[str, InstanceTypeFacts], table: SupportTable
) -> tuple[str, str, str | None]:
    decision = decide_support(facts.get(instance_type) or InstanceTypeFacts.name_only(instance_type), table)
    return decision.verdict.value, decision.reason, decision.alternative


def diagnose(
    nodes: Sequence[NodeInput],
    inventory: Inventory,
    agent_pods: Sequence[AgentPod],
    *,
    support: SupportTable,
    quotas: TargetQuotas,
    price: Price,
) -> DoctorReport:
    """The whole report: nodes in the order given, targets by ID, and the hourly cost."""
    sessions_per_eni: dict[str, int] = defaultdict(int)
    sources_per_target: dict[str, set[str]] = defaultdict(set)
    for session in inventory.sessions:
        sessions_per_eni[session.network_interface_id] += 1
        sources_per_target[session.target_id].add(session.network_interface_id)

    eni_node: dict[str, str] = {}
    instance_node: dict[str, str] = {}
    for node in nodes:
        instance_id = instance_id_from_provider_id(node.provider_id)
        record = inventory.instances.get(instance_id) if instance_id else None
        if instance_id:
            instance_node[instance_id] = node.name
        for eni in record.network_interface_ids if record else ():
            eni_node[eni] = node.name

    targets: list[TargetReport] = []
    target_node_names: set[str] = set()
    for target in sorted(inventory.targets, key=lambda t: t.target_id):
        kind, resource = target_kind(target)
        node_name = eni_node.get(resource) if kind == "network-interface" else None
        instance_id = inventory.interface_instances.get(resource) if kind == "network-interface" else None
        if kind == "network-interface" and instance_id is None:
            instance_id = next(
                (i for i, r in inventory.instances.items() if resource in r.network_interface_ids),
                None,
            )
        node_name = node_name or (instance_node.get(instance_id) if instance_id else None)
        record = inventory.instances.get(instance_id) if instance_id else None
        instance_type = record.instance_type if record else None
        quota = quotas.sources_per_target(kind, instance_type)
        used = len(sources_per_target.get(target.target_id, ()))
        targets.append(
            TargetReport(
                target_id=target.target_id,
                kind=kind,
                resource=resource,
                node=node_name,
                instance_type=instance_type,
                sources=used,
                sources_limit=quota.limit,
                headroom=None if quota.limit is None else quota.limit - used,
                reason=quota.reason,
            )
        )
        if node_name:
            target_node_names.add(node_name)

    pods_by_node: dict[str, AgentPod] = {}
    for agent_pod in sorted(agent_pods, key=lambda p: (not p.ready, p.name)):
        pods_by_node.setdefault(agent_pod.node_name, agent_pod)

    reports: list[NodeReport] = []
    for node in nodes:
        instance_id = instance_id_from_provider_id(node.provider_id)
        record = inventory.instances.get(instance_id) if instance_id else None
        if record is None:
            source, reason, alternative = (
                "Unknown",
                (
                    f"providerID {node.provider_id!r} names no EC2 instance (aws:///<zone>/<instance-id>)"
                    if instance_id is None
                    else f"EC2 does not know instance {instance_id}"
                ),
                None,
            )
        else:
            source, reason, alternative = _support(record.instance_type, inventory.type_facts, support)
        capture = None
        pod = pods_by_node.get(node.name)
        if node.capture or node.name in target_node_names or pod is not None:
            metrics = parse_agent_metrics(pod.metrics_text) if pod and pod.metrics_text else None
            capture = CaptureReport(
                agent_pod=f"{pod.namespace}/{pod.name}" if pod else None,
                udp_port=pod.udp_port if pod else VXLAN_PORT,
                port=port_verdict(pod, metrics),
                rmem_max=metrics.rmem_max if metrics else None,
                receive_buffer_granted=metrics.receive_buffer_granted if metrics else None,
            )
        reports.append(
            NodeReport(
                name=node.name,
                instance_id=instance_id,
                instance_type=record.instance_type if record else None,
                availability_zone=record.availability_zone if record else None,
                source=source,
                reason=reason,
                alternative=alternative,
                network_interfaces=tuple(
                    EniReport(eni, sessions_per_eni.get(eni, 0), quotas.sessions_per_source_eni)
                    for eni in (record.network_interface_ids if record else ())
                ),
                capture=capture,
            )
        )

    mirrored = len(sessions_per_eni)
    cost = CostReport(
        mirrored_network_interfaces=mirrored,
        usd_per_eni_hour=price.usd_per_eni_hour,
        usd_per_hour=round(mirrored * price.usd_per_eni_hour, 6),
        price_source=price.source,
    )
    notes = (
        "cost: every ENI with at least one mirror session is billed per hour, sessions on it "
        "are not billed again; cross-AZ data transfer is extra",
    )
    return DoctorReport(nodes=tuple(reports), targets=tuple(targets), cost=cost, notes=notes)


# --------------------------------------------------------------------------- rendering


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def render_table(report: DoctorReport) -> str:
    lines = ["NODES"]
    node_rows = []
    for node in report.nodes:
        enis = ", ".join(f"{e.network_interface_id} {e.sessions}/{e.sessions_limit}" for e in node.network_interfaces)
        node_rows.append(
            [
                node.name,
                node.instance_type or "-",
                node.availability_zone or "-",
                node.source,
                enis or "-",
                node.reason + (f"; use {node.alternative}" if node.alternative else ""),
            ]
        )
    lines += _table(["NAME", "TYPE", "ZONE", "SOURCE", "ENIS (SESSIONS/LIMIT)", "WHY"], node_rows)
    capture_rows = [
        [
            node.name,
            f"UDP {node.capture.udp_port}",
            node.capture.port.state.value,
            str(node.capture.rmem_max) if node.capture.rmem_max is not None else "-",
            node.capture.port.how,
        ]
        for node in report.nodes
        if node.capture is not None
    ]
    lines += ["", "CAPTURE NODES"]
    lines += _table(["NAME", "PORT", "STATE", "RMEM_MAX", "HOW KNOWN"], capture_rows) if capture_rows else ["(none)"]
    target_rows = [
        [
            t.target_id,
            t.kind,
            t.node or t.resource,
            t.instance_type or "-",
            f"{t.sources}/{t.sources_limit}" if t.sources_limit is not None else f"{t.sources}/unlimited",
            str(t.headroom) if t.headroom is not None else "-",
            t.reason,
        ]
        for t in report.targets
    ]
    lines += ["", "TARGETS"]
    lines += (
        _table(["ID", "KIND", "NODE/RESOURCE", "TYPE", "SOURCES", "HEADROOM", "QUOTA"], target_rows)
        if target_rows
        else ["(none)"]
    )
    c = report.cost
    lines += [
        "",
        f"COST  {c.mirrored_network_interfaces} mirrored ENI(s) x {c.usd_per_eni_hour} USD/ENI-hour = "
        f"{c.usd_per_hour:.4f} USD/hour (price: {c.price_source})",
        *(f"note: {n}" for n in report.notes),
    ]
    return "\n".join(lines) + "\n"
