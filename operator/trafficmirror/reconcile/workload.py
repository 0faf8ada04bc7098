"""Pod and node selector sessions: which ENIs to mirror, and the child MirrorSession of each.

A selector session (`spec.source.podSelector` or `nodeSelector`) is not mirrored itself. Its
selector is turned into the set of ENIs that carry the selected pods' or nodes' traffic, and each
ENI gets one child MirrorSession (an ordinary one, with `source.networkInterfaceId`), which the
session reconciler brings to AWS like any other. This module decides that set, the children's
specs, the narrowed MirrorFilter of each child, and the parent's status; the handlers apply it.

Decisions, in order:
- a pod AWS cannot mirror is listed in `skippedPods` with its reason, never dropped silently:
  its pod ENI annotation or its ENI type says a branch ENI (security groups for pods), its node is
  a Fargate node, it has no IP yet, or no ENI holds its IP;
- a hostNetwork pod is on its node's primary ENI;
- an ENI that already carries AWS's three sessions (ours and others') gets no child: the source is
  `Conflict`, the others' session IDs named;
- narrowing: the parent's filter rules, each repeated per pod with the pod's address as the
  destination (ingress) or source (egress) CIDR, when that fits AWS's 10 rules per filter; a
  MirrorFilter generated for the child holds them. Otherwise the child uses the parent's filter and
  the source says `narrowed: false` and why (the capture agent still keeps only the pods' packets).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from trafficmirror.api.common import Phase
from trafficmirror.api.filter import MAX_RULES_PER_FILTER, FilterRule, MirrorFilterSpec
from trafficmirror.api.session import LabelSelector, MirrorSessionSpec
from trafficmirror.aws.ec2 import NetworkInterface
from trafficmirror.aws.target_quotas import Price, TargetQuotas
from trafficmirror.reconcile import timebox
from trafficmirror.reconcile.common import OWNER_TAG
from trafficmirror.reconcile.ports import WorkloadAws

PARENT_LABEL = "trafficmirror.io/parent-session"
GENERATED_FOR_LABEL = "trafficmirror.io/generated-for"
POD_ENI_ANNOTATION = "vpc.amazonaws.com/pod-eni"  # security groups for pods: the pod has a branch ENI
COMPUTE_TYPE_LABEL = "eks.amazonaws.com/compute-type"
SESSIONS_PER_INTERFACE = 3  # AWS quota, not adjustable
RULES_PER_FILTER = MAX_RULES_PER_FILTER  # AWS quota, not adjustable: ingress and egress rules together
MAX_LABEL_VALUE = 63
SOURCES_FOUND = "SourcesFound"
NOTHING_RULE = FilterRule(
    rule_number=1, action="reject", description="no rule of the session's filter can match the pods' addresses"
)
COMPLETED = "Completed"


@dataclass(frozen=True)
class PodFact:
    namespace: str
    name: str
    labels: tuple[tuple[str, str], ...] = ()
    ip: str | None = None
    node_name: str | None = None
    host_network: bool = False
    branch_interface: bool = False  # the pod ENI annotation is set
    phase: str | None = None  # Pending | Running | Succeeded | Failed | Unknown
    deleting: bool = False


@dataclass(frozen=True)
class NodeFact:
    name: str
    labels: tuple[tuple[str, str], ...] = ()
    provider_id: str = ""

    @property
    def fargate(self) -> bool:
        return dict(self.labels).get(COMPUTE_TYPE_LABEL) == "fargate"

    @property
    def instance_id(self) -> str | None:
        """aws:///<az>/<instance-id> → the instance; None for other providers (or none)."""
        if not self.provider_id.startswith("aws://"):
            return None
        last = self.provider_id.rstrip("/").rsplit("/", 1)[-1]
        return last if last.startswith("i-") else None


@dataclass(frozen=True)
class ChildFact:
    """A child MirrorSession as the cluster holds it."""

    name: str
    uid: str
    network_interface_id: str
    filter_name: str
    phase: str | None = None
    reason: str | None = None
    message: str | None = None
    traffic_mirror_session_id: str | None = None
    virtual_network_id: int | None = None
    source_addresses: tuple[str, ...] | None = None
    target_name: str | None = None
    mirroring_since: str | None = None  # when its AWS session was created: where its ENI-hours start


@dataclass(frozen=True)
class Parent:
    namespace: str
    name: str
    uid: str
    spec: MirrorSessionSpec
    phase: str | None = None
    generation: int = 1
    created_at: datetime | None = None  # where a spec.duration starts

    @property
    def stop(self) -> datetime | None:
        """When the capture ends (spec.duration from creation, or spec.stopAt); None for no end."""
        return timebox.stop_time(self.spec.duration, self.spec.stop_at, self.created_at)


@dataclass(frozen=True)
class Source:
    """One ENI to mirror, and why."""

    network_interface_id: str
    node_name: str | None
    pods: tuple[PodFact, ...] = ()
    host_network: bool = False


@dataclass
class WorkloadPlan:
    """What the cluster should hold for one selector session, and the session's status."""

    children: dict[str, dict[str, Any]] = field(default_factory=dict)  # child name → MirrorSession spec
    filters: dict[str, dict[str, Any]] = field(default_factory=dict)  # child name → generated MirrorFilter spec
    status: dict[str, Any] = field(default_factory=dict)


def matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes' label selector semantics; an empty selector matches everything."""
    if selector is None:
        return True
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in selector.match_expressions or ():
        present, value = requirement.key in labels, labels.get(requirement.key, "")
        values = requirement.values or []
        if requirement.operator == "In" and not (present and value in values):
            return False
        if requirement.operator == "NotIn" and present and value in values:
            return False
        if requirement.operator == "Exists" and not present:
            return False
        if requirement.operator == "DoesNotExist" and present:
            return False
    return True


def _short(name: str, limit: int) -> str:
    """`name` if it fits, else cut with 8 hex of its hash, so that distinct names stay distinct."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-.')}-{digest}"


def parent_label_value(parent_name: str) -> str:
    """The parent's name as a label value (at most 63 characters)."""
    return _short(parent_name, MAX_LABEL_VALUE)


def child_name(parent_name: str, network_interface_id: str) -> str:
    """`<parent, truncated>-<8 hex of sha256(ENI)>`, at most 63 characters (it is a label value too)."""
    digest = hashlib.sha256(network_interface_id.encode()).hexdigest()[:8]
    return f"{_short(parent_name, MAX_LABEL_VALUE - 9).rstrip('-.')}-{digest}"


def _pod_field(direction: str) -> str:
    # Ingress: traffic into the ENI, the pod is the destination; egress: the pod is the source.
    return "destination_cidr_block" if direction == "ingress" else "source_cidr_block"


RANK_STRIDE = 1000  # rule numbers of the filter's n-th rule: n*1000+1 ... n*1000+999


def _stable_number(rank: int, host: ipaddress.IPv4Address | ipaddress.IPv6Address, used: set[int]) -> int:
    """A rule number that depends on the pod's address, not on the other pods: a pod coming or going
    creates or deletes its own rules and renumbers no other (AWS rules are changed one by one). The
    filter's order is kept: all numbers of its n-th rule come before those of the next."""
    slot = int(host) % (RANK_STRIDE - 3)
    number = rank * RANK_STRIDE + 1 + slot
    while number in used:  # two addresses on one slot: the next free number (at most 10 rules per filter)
        number += 1
    return number


def narrow_rules(mirror_filter: MirrorFilterSpec, addresses: Iterable[str]) -> dict[str, list[FilterRule]] | None:
    """The filter's rules per direction, each repeated for every address it can match with the address's
    /32 (/128) on the pod's side, in the filter's order; None when they would exceed AWS's 10 rules per filter
    (both directions together: a generated filter with more is refused at admission, like any other)."""
    hosts = sorted({ipaddress.ip_address(a) for a in addresses}, key=lambda a: (a.version, a))
    narrowed: dict[str, list[FilterRule]] = {}
    for direction, rules in (("ingress", mirror_filter.ingress_rules), ("egress", mirror_filter.egress_rules)):
        out: list[FilterRule] = []
        for rank, rule in enumerate(sorted(rules or [], key=lambda r: r.rule_number)):
            block = ipaddress.ip_network(getattr(rule, _pod_field(direction)))
            for host in hosts:
                if host.version != block.version or host not in block:
                    continue  # this rule cannot match this pod's packets
                other = ipaddress.ip_network(
                    getattr(rule, "source_cidr_block" if direction == "ingress" else "destination_cidr_block")
                )
                if other.version != host.version:
                    continue  # AWS refuses a rule mixing address families
                cidr = f"{host}/{host.max_prefixlen}"
                number = _stable_number(rank, host, {r.rule_number for r in out})
                out.append(rule.model_copy(update={"rule_number": number, _pod_field(direction): cidr}))
        narrowed[direction] = out
    if sum(len(out) for out in narrowed.values()) > RULES_PER_FILTER:
        return None
    return narrowed


def _skipped(pod: PodFact, reason: str, message: str) -> dict[str, Any]:
    return {"namespace": pod.namespace, "name": pod.name, "reason": reason, "message": message}


def selected_pods(
    parent: Parent, pods: Iterable[PodFact], namespace_labels: Mapping[str, Mapping[str, str]]
) -> list[PodFact]:
    source = parent.spec.source
    if source.pod_selector is None:
        return []
    names = set(source.pod_names) if source.pod_names else None
    chosen = []
    for pod in pods:
        if pod.deleting or pod.phase in ("Succeeded", "Failed"):
            continue  # a finished pod holds no address
        if source.namespace_selector is None:
            if pod.namespace != parent.namespace:
                continue
        elif not matches(source.namespace_selector, namespace_labels.get(pod.namespace, {})):
            continue
        if names is not None and pod.name not in names:
            continue
        if matches(source.pod_selector, dict(pod.labels)):
            chosen.append(pod)
    return sorted(chosen, key=lambda p: (p.namespace, p.name))


def pod_sources(
    pods: list[PodFact], nodes: Mapping[str, NodeFact], aws: WorkloadAws
) -> tuple[list[Source], list[dict[str, Any]]]:
    """The ENIs holding the pods' addresses, and the pods AWS cannot mirror (with the reason)."""
    skipped: list[dict[str, Any]] = []
    placed: dict[str, tuple[str | None, list[PodFact], bool]] = {}
    looked_up: list[PodFact] = []

    def place(pod: PodFact, interface: NetworkInterface) -> None:
        node_name, members, host = placed.setdefault(interface.network_interface_id, (pod.node_name, [], False))
        members.append(pod)
        placed[interface.network_interface_id] = (node_name, members, host or pod.host_network)

    for pod in pods:
        node = nodes.get(pod.node_name or "")
        if pod.branch_interface:
            skipped.append(
                _skipped(
                    pod,
                    "BranchNetworkInterface",
                    f"the pod has its own branch ENI ({POD_ENI_ANNOTATION}: security groups for pods); "
                    "AWS cannot mirror branch ENIs",
                )
            )
        elif node is not None and node.fargate:
            skipped.append(_skipped(pod, "Fargate", f"node {node.name} is a Fargate node; AWS cannot mirror Fargate"))
        elif not pod.ip:
            skipped.append(_skipped(pod, "NoAddress", "the pod has no IP address yet"))
        elif pod.host_network:
            instance = node.instance_id if node is not None else None
            interfaces = aws.instance_network_interfaces(instance) if instance else ()
            if not interfaces:
                skipped.append(
                    _skipped(
                        pod,
                        "AddressNotFound",
                        f"hostNetwork pod on node {pod.node_name}, whose providerID names no EC2 instance with an ENI",
                    )
                )
            else:
                place(pod, interfaces[0])
        else:
            looked_up.append(pod)
    found = aws.interfaces_by_address([p.ip for p in looked_up if p.ip])
    # An address that moved to another node since it was cached (pods come and go, addresses are reused).
    stale = frozenset(
        p.ip
        for p in looked_up
        if p.ip in found and (node := nodes.get(p.node_name or "")) is not None and node.instance_id
        if found[p.ip].instance_id != node.instance_id
    )
    if stale:
        found.update(aws.interfaces_by_address(sorted(stale), refresh=stale))
    for pod in looked_up:
        interface = found.get(pod.ip or "")
        if interface is None:
            skipped.append(_skipped(pod, "AddressNotFound", f"no ENI in the region holds the pod's address {pod.ip}"))
        elif interface.is_branch:
            skipped.append(
                _skipped(
                    pod,
                    "BranchNetworkInterface",
                    f"{pod.ip} is on {interface.network_interface_id}, a {interface.interface_type} ENI (security "
                    "groups for pods); AWS cannot mirror it",
                )
            )
        else:
            place(pod, interface)
    sources = [
        Source(eni, node_name, tuple(members), host) for eni, (node_name, members, host) in sorted(placed.items())
    ]
    return sources, skipped


def node_sources(parent: Parent, nodes: Iterable[NodeFact], aws: WorkloadAws) -> list[Source]:
    source = parent.spec.source
    sources: dict[str, Source] = {}
    for node in sorted(nodes, key=lambda n: n.name):
        if node.fargate or not matches(source.node_selector, dict(node.labels)) or node.instance_id is None:
            continue
        interfaces = [i for i in aws.instance_network_interfaces(node.instance_id) if not i.is_branch]
        for interface in interfaces if source.interfaces == "all" else interfaces[:1]:
            sources.setdefault(interface.network_interface_id, Source(interface.network_interface_id, node.name))
    return list(sources.values())


def _child_spec(parent: Parent, network_interface_id: str, filter_name: str) -> dict[str, Any]:
    spec = parent.spec
    child: dict[str, Any] = {
        "source": {"networkInterfaceId": network_interface_id},
        "filterRef": {"name": filter_name},
        "sessionNumber": spec.session_number,
        "deletionPolicy": spec.deletion_policy,
    }
    if spec.target_ref is not None:
        child["targetRef"] = spec.target_ref.to_k8s()
    if spec.target_selector is not None:
        child["targetSelector"] = spec.target_selector.to_k8s()
    optional = {
        "packetLength": spec.packet_length,
        "region": spec.region,
        "description": spec.description,
        "tags": spec.tags,
    }
    child.update({k: v for k, v in optional.items() if v is not None})
    return child


def _source_state(child: ChildFact | None) -> tuple[str, str | None, str | None]:
    if child is None:
        return "Pending", "Creating", "the child MirrorSession is being created"
    if child.phase == Phase.READY.value:
        return "Mirroring", child.reason, child.message
    if child.phase == Phase.FAILED.value:
        return "Failed", child.reason, child.message
    return "Pending", child.reason, child.message


def plan(
    parent: Parent,
    *,
    pods: Iterable[PodFact],
    nodes: Mapping[str, NodeFact],
    namespace_labels: Mapping[str, Mapping[str, str]],
    children: Mapping[str, ChildFact],
    parent_filter: MirrorFilterSpec | None,
    aws: WorkloadAws,
    now: datetime | None = None,
    price: Price | None = None,
) -> WorkloadPlan:
    """The children, generated filters and status of one selector session.

    A time-boxed one (spec.duration, spec.stopAt) whose time is over at `now` ends: no children (each
    child's finalizer deletes its AWS session), phase Completed with the cost of all its ENIs
    (`timebox.end_parent`). A Completed one stays so and never gets a child again."""
    result = WorkloadPlan()
    source_spec = parent.spec.source
    skipped: list[dict[str, Any]] = []
    stop = parent.stop
    ending = parent.phase != COMPLETED and now is not None and timebox.is_over(stop, now)
    if parent.phase == COMPLETED or ending:
        sources: list[Source] = []  # a finished capture mirrors nothing more
    elif source_spec.pod_selector is not None:
        sources, skipped = pod_sources(selected_pods(parent, pods, namespace_labels), nodes, aws)
    else:
        sources = node_sources(parent, nodes.values(), aws)

    by_eni = {child.network_interface_id: child for child in children.values()}
    new = [s.network_interface_id for s in sources if s.network_interface_id not in by_eni]
    occupied = aws.sessions_on(new) if new else {}
    parent_filter_name = parent.spec.filter_ref.name
    entries = []
    for source in sources:
        eni = source.network_interface_id
        name = child_name(parent.name, eni)
        child = by_eni.get(eni)
        entry: dict[str, Any] = {
            "networkInterfaceId": eni,
            "nodeName": source.node_name,
            "pods": [{"namespace": p.namespace, "name": p.name, "ip": p.ip} for p in source.pods],
            "hostNetwork": source.host_network,
            "sessionName": name,
            "narrowed": False,
        }
        others = [
            s for s in occupied.get(eni, []) if s.tags.get(OWNER_TAG) != f"MirrorSession/{parent.namespace}/{name}"
        ]
        if child is None and len(others) >= SESSIONS_PER_INTERFACE:
            listed = ", ".join(sorted(s.session_id for s in others))
            entry.update(
                state="Conflict",
                reason="SessionsPerInterfaceLimit",
                message=f"{eni} already has {len(others)} traffic mirror sessions ({listed}); AWS allows "
                f"{SESSIONS_PER_INTERFACE} per ENI",
                sessionName=None,
            )
            entries.append(entry)
            continue
        filter_name, note = parent_filter_name, None
        if source_spec.pod_selector is not None:
            if parent_filter is None:
                note = f"MirrorFilter {parent_filter_name} is not known yet: the ENI is mirrored through it as it is"
            else:
                narrowed = narrow_rules(parent_filter, [p.ip for p in source.pods if p.ip])
                if narrowed is None:
                    note = (
                        f"the filter's rules for these {len(source.pods)} pods exceed AWS's {RULES_PER_FILTER} "
                        "rules per filter: the whole ENI is mirrored, the capture agent keeps the pods' packets"
                    )
                else:
                    filter_name = name
                    entry["narrowed"] = True
                    result.filters[name] = _generated_filter(parent_filter, narrowed)
                    if not (narrowed["ingress"] or narrowed["egress"]):
                        note = (
                            f"no rule of MirrorFilter {parent_filter_name} can match these pods' addresses: "
                            "nothing of theirs is mirrored"
                        )
        result.children[name] = _child_spec(parent, eni, filter_name)
        state, reason, message = _source_state(child)
        if note is not None:
            message = f"{message}; {note}" if message else note
        entry.update(state=state, reason=reason, message=message)
        if child is not None:
            entry.update(
                trafficMirrorSessionId=child.traffic_mirror_session_id,
                virtualNetworkId=child.virtual_network_id,
                sourceAddresses=list(child.source_addresses) if child.source_addresses is not None else None,
                targetName=child.target_name,
            )
        entries.append({k: v for k, v in entry.items() if v is not None})
    result.status = _status(parent, entries, skipped)
    if ending:
        assert now is not None
        ended = timebox.end_parent(
            stop,
            now,
            [timebox.ChildMirror(c.name, timebox.parse_time(c.mirroring_since)) for c in children.values()],
            price or TargetQuotas.packaged().price(),
        )
        assert ended is not None
        message = ended.completion.message
        result.status.update(ended.completion.status_fields, phase=COMPLETED)
        result.status["conditions"] = [
            {"type": "Ready", "status": "False", "reason": COMPLETED, "message": message},
            {"type": COMPLETED, "status": "True", "reason": timebox.TIME_UP, "message": message},
        ]
    elif stop is not None and parent.phase != COMPLETED:
        result.status["stopAt"] = timebox.format_time(stop)  # the time left: the time-box daemon's
    return result


def _generated_filter(parent_filter: MirrorFilterSpec, narrowed: dict[str, list[FilterRule]]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "ingressRules": [r.to_k8s() for r in narrowed["ingress"]],
        "egressRules": [r.to_k8s() for r in narrowed["egress"]],
        "deletionPolicy": "Delete",
    }
    if parent_filter.network_services:
        spec["networkServices"] = list(parent_filter.network_services)
    elif not (narrowed["ingress"] or narrowed["egress"]):
        # No rule of the parent's filter can match the pods' packets (its CIDRs name other addresses): the
        # narrowed filter mirrors nothing. A filter with no rule is refused at admission (it usually means a
        # misspelt field), so it says "nothing" with one rule that rejects everything.
        spec["ingressRules"] = [NOTHING_RULE.to_k8s()]
    if parent_filter.region is not None:
        spec["region"] = parent_filter.region
    return spec


def _status(parent: Parent, entries: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> dict[str, Any]:
    """Phase and conditions of the selector session: Ready when nothing matches or some ENI is mirrored."""
    states = [e["state"] for e in entries]
    mirroring = states.count("Mirroring")
    kind = "pods" if parent.spec.source.pod_selector is not None else "nodes"
    if parent.phase == COMPLETED:
        # The phase and its conditions belong to whoever completed the capture; only the sources go.
        return {"sources": entries, "skippedPods": skipped}
    if not entries:
        phase, reason, message = Phase.READY.value, "NoMatch", f"the selector matches no {kind} AWS can mirror"
    elif mirroring:
        phase, reason = Phase.READY.value, "Mirroring"
        message = f"{mirroring} of {len(entries)} ENIs mirrored"
    elif "Pending" in states:
        phase, reason, message = Phase.PENDING.value, "SourcesPending", f"0 of {len(entries)} ENIs mirrored yet"
    else:
        phase, reason = Phase.FAILED.value, "NoSourceMirrored"
        message = f"none of {len(entries)} ENIs can be mirrored: " + "; ".join(
            f"{e['networkInterfaceId']}: {e.get('reason')}" for e in entries
        )
    found = (
        ("True", "Found", f"{len(entries)} ENIs, {len(skipped)} pods skipped")
        if entries
        else ("False", "NoMatch", f"the selector matches no {kind} AWS can mirror ({len(skipped)} pods skipped)")
    )
    return {
        "phase": phase,
        "sources": entries,
        "skippedPods": skipped,
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if phase == Phase.READY.value else "False",
                "reason": reason,
                "message": message,
            },
            {"type": SOURCES_FOUND, "status": found[0], "reason": found[1], "message": found[2]},
        ],
    }
