"""The EC2 adapter: every Traffic Mirroring call the operator makes, and nothing else.

It speaks in small frozen dataclasses, translates botocore errors into `AwsError` with a class
(terminal, retryable, …), and counts every call for the metrics. No decisions are made here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import boto3
import botocore.config
import botocore.exceptions

from trafficmirror.aws.errors import AwsError, classify
from trafficmirror.aws.instance_support import InstanceTypeFacts
from trafficmirror.aws.pacing import Pacer

CallObserver = Callable[[str, str], None]  # (operation, result code or "ok")
Key = TypeVar("Key")
Value = TypeVar("Value")
INGRESS, EGRESS = "ingress", "egress"


@dataclass(frozen=True)
class PortRange:
    from_port: int
    to_port: int


@dataclass(frozen=True)
class RuleParams:
    """One filter rule as AWS holds it; (direction, rule_number) identifies it within a filter."""

    direction: str
    rule_number: int
    action: str
    source_cidr_block: str
    destination_cidr_block: str
    protocol: int | None = None
    source_port_range: PortRange | None = None
    destination_port_range: PortRange | None = None
    description: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.direction, self.rule_number)


@dataclass(frozen=True)
class AwsFilterRule:
    rule_id: str
    params: RuleParams


@dataclass(frozen=True)
class Endpoint:
    """Where a target sends mirrored traffic: exactly one of the three is set."""

    network_interface_id: str | None = None
    network_load_balancer_arn: str | None = None
    gateway_load_balancer_endpoint_id: str | None = None

    @property
    def is_load_balancer(self) -> bool:
        return self.network_interface_id is None

    def __str__(self) -> str:
        return next(
            v
            for v in (
                self.network_interface_id,
                self.network_load_balancer_arn,
                self.gateway_load_balancer_endpoint_id,
                "nothing",
            )
            if v
        )


@dataclass(frozen=True)
class AwsTarget:
    target_id: str
    network_interface_id: str | None
    network_load_balancer_arn: str | None
    gateway_load_balancer_endpoint_id: str | None
    description: str
    tags: dict[str, str]

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(
            self.network_interface_id, self.network_load_balancer_arn, self.gateway_load_balancer_endpoint_id
        )


@dataclass(frozen=True)
class AwsFilter:
    filter_id: str
    description: str
    tags: dict[str, str]
    rules: tuple[AwsFilterRule, ...]
    network_services: tuple[str, ...]


@dataclass(frozen=True)
class AwsSession:
    session_id: str
    network_interface_id: str
    target_id: str
    filter_id: str
    session_number: int
    virtual_network_id: int
    packet_length: int | None
    description: str
    tags: dict[str, str]


@dataclass(frozen=True)
class NetworkInterface:
    network_interface_id: str
    instance_id: str | None  # None for ENIs of ALB, RDS, Fargate, …: their type is unknown until tried
    private_ip_address: str | None
    interface_type: str
    availability_zone: str | None = None
    private_ip_addresses: tuple[str, ...] = ()  # every private address, the primary first
    device_index: int | None = None  # its attachment's device index: 0 is the instance's primary ENI

    @property
    def is_branch(self) -> bool:
        """A branch or trunk ENI (security groups for pods): AWS cannot mirror it."""
        return self.interface_type in ("branch", "trunk")


@dataclass(frozen=True)
class SessionChanges:
    """What ModifyTrafficMirrorSession changes; None leaves a field as it is."""

    target_id: str | None = None
    filter_id: str | None = None
    session_number: int | None = None
    virtual_network_id: int | None = None
    packet_length: int | None = None
    description: str | None = None
    remove_packet_length: bool = False  # back to the whole packet

    @property
    def empty(self) -> bool:
        return not self.names

    @property
    def names(self) -> list[str]:
        """The spec's names of the changed fields, for events."""
        values = {
            "targetRef": self.target_id,
            "filterRef": self.filter_id,
            "sessionNumber": self.session_number,
            "virtualNetworkId": self.virtual_network_id,
            "packetLength": self.packet_length,
            "description": self.description,
        }
        named = [name for name, value in values.items() if value is not None]
        return [*named, "packetLength"] if self.remove_packet_length and "packetLength" not in named else named


@dataclass(frozen=True)
class SessionParams:
    network_interface_id: str
    target_id: str
    filter_id: str
    session_number: int
    virtual_network_id: int | None
    packet_length: int | None
    description: str


def _tags(items: Iterable[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or ()}


def _tag_spec(resource_type: str, tags: dict[str, str]) -> list[dict[str, Any]]:
    return [{"ResourceType": resource_type, "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]}]


def _port_range(raw: dict[str, Any] | None) -> PortRange | None:
    if not raw or raw.get("FromPort") is None:
        return None
    return PortRange(int(raw["FromPort"]), int(raw["ToPort"]))


def _rule_from_aws(raw: dict[str, Any]) -> AwsFilterRule:
    return AwsFilterRule(
        rule_id=raw["TrafficMirrorFilterRuleId"],
        params=RuleParams(
            direction=raw["TrafficDirection"],
            rule_number=int(raw["RuleNumber"]),
            action=raw["RuleAction"],
            source_cidr_block=raw.get("SourceCidrBlock", "0.0.0.0/0"),
            destination_cidr_block=raw.get("DestinationCidrBlock", "0.0.0.0/0"),
            protocol=int(raw["Protocol"]) if raw.get("Protocol") not in (None, "") else None,
            source_port_range=_port_range(raw.get("SourcePortRange")),
            destination_port_range=_port_range(raw.get("DestinationPortRange")),
            description=raw.get("Description") or None,
        ),
    )


def _target_from_aws(raw: dict[str, Any]) -> AwsTarget:
    return AwsTarget(
        target_id=raw["TrafficMirrorTargetId"],
        network_interface_id=raw.get("NetworkInterfaceId"),
        network_load_balancer_arn=raw.get("NetworkLoadBalancerArn"),
        gateway_load_balancer_endpoint_id=raw.get("GatewayLoadBalancerEndpointId"),
        description=raw.get("Description", ""),
        tags=_tags(raw.get("Tags")),
    )


def _filter_from_aws(raw: dict[str, Any]) -> AwsFilter:
    rules = [*raw.get("IngressFilterRules", []), *raw.get("EgressFilterRules", [])]
    return AwsFilter(
        filter_id=raw["TrafficMirrorFilterId"],
        description=raw.get("Description", ""),
        tags=_tags(raw.get("Tags")),
        rules=tuple(_rule_from_aws(r) for r in rules),
        network_services=tuple(raw.get("NetworkServices", [])),
    )


def _session_from_aws(raw: dict[str, Any]) -> AwsSession:
    return AwsSession(
        session_id=raw["TrafficMirrorSessionId"],
        network_interface_id=raw["NetworkInterfaceId"],
        target_id=raw["TrafficMirrorTargetId"],
        filter_id=raw["TrafficMirrorFilterId"],
        session_number=int(raw["SessionNumber"]),
        virtual_network_id=int(raw["VirtualNetworkId"]),
        packet_length=int(raw["PacketLength"]) if raw.get("PacketLength") else None,
        description=raw.get("Description", ""),
        tags=_tags(raw.get("Tags")),
    )


def _rule_args(params: RuleParams) -> dict[str, Any]:
    args: dict[str, Any] = {
        "TrafficDirection": params.direction,
        "RuleNumber": params.rule_number,
        "RuleAction": params.action,
        "SourceCidrBlock": params.source_cidr_block,
        "DestinationCidrBlock": params.destination_cidr_block,
    }
    # The protocol is always sent: AWS drops port ranges that arrive without it.
    if params.protocol is not None:
        args["Protocol"] = params.protocol
    for key, ports in (
        ("SourcePortRange", params.source_port_range),
        ("DestinationPortRange", params.destination_port_range),
    ):
        if ports is not None:
            args[key] = {"FromPort": ports.from_port, "ToPort": ports.to_port}
    if params.description:
        args["Description"] = params.description
    return args


def removed_rule_fields(params: RuleParams) -> list[str]:
    """Optional fields the rule no longer has, which ModifyTrafficMirrorFilterRule must be told to drop."""
    removed = []
    if params.protocol is None:
        removed.append("protocol")
    if params.source_port_range is None:
        removed.append("source-port-range")
    if params.destination_port_range is None:
        removed.append("destination-port-range")
    if not params.description:
        removed.append("description")
    return removed


PRUNE_MIN_ENTRIES = 256


class TtlCache(Generic[Key, Value]):
    """A thread-safe map whose entries expire: lookups that many reconciles repeat within seconds."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._items: dict[Key, tuple[float, Value]] = {}
        self._loading: dict[Key, threading.Lock] = {}
        self._lock = threading.Lock()
        self._prune_at = PRUNE_MIN_ENTRIES

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get(self, key: Key) -> Value | None:
        with self._lock:
            entry = self._items.get(key)
        if entry is None or self._clock() - entry[0] > self._ttl:
            return None
        return entry[1]

    def put(self, key: Key, value: Value) -> Value:
        now = self._clock()
        with self._lock:
            self._items[key] = (now, value)
            if len(self._items) >= self._prune_at:
                # Expired entries go once the map has doubled since the last pruning: keys that are
                # never asked again (gone ENIs, pods' old addresses) do not pile up, at a cost
                # spread over the puts.
                self._items = {k: e for k, e in self._items.items() if now - e[0] <= self._ttl}
                self._prune_at = max(PRUNE_MIN_ENTRIES, 2 * len(self._items))
        return value

    def get_or_load(self, key: Key, load: Callable[[], Value]) -> Value:
        """The cached value, or `load()`'s; concurrent misses of one key wait for a single load
        (the three sessions of one source ENI, reconciled at once, ask AWS once)."""
        cached = self.get(key)
        if cached is not None:
            return cached
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        try:
            with loading:
                cached = self.get(key)
                return cached if cached is not None else self.put(key, load())
        finally:
            with self._lock:
                self._loading.pop(key, None)


# An ENI's attachment outlives its instance's changes of type; a type changes only through a stop and
# start, which takes minutes: both can be reused briefly across the reconciles of many objects.
NETWORK_INTERFACE_TTL_SECONDS = 300.0
INSTANCE_TYPE_TTL_SECONDS = 15.0
FILTER_VALUES_PER_CALL = 200  # values of one Describe filter, kept well under EC2's limits


def _interface_from_aws(raw: dict[str, Any]) -> NetworkInterface:
    attachment = raw.get("Attachment") or {}
    addresses = [a["PrivateIpAddress"] for a in raw.get("PrivateIpAddresses") or [] if a.get("PrivateIpAddress")]
    primary = raw.get("PrivateIpAddress")
    return NetworkInterface(
        network_interface_id=raw["NetworkInterfaceId"],
        instance_id=attachment.get("InstanceId"),
        private_ip_address=primary,
        interface_type=raw.get("InterfaceType", "interface"),
        availability_zone=raw.get("AvailabilityZone"),
        private_ip_addresses=tuple(dict.fromkeys([a for a in [primary, *addresses] if a])),
        device_index=attachment.get("DeviceIndex"),
    )


@dataclass
class Ec2Mirror:
    """Traffic Mirroring, ENI and instance lookups in one region."""

    client: Any
    instance_type_cache: dict[str, InstanceTypeFacts] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _interfaces: TtlCache[str, NetworkInterface] = field(
        default_factory=lambda: TtlCache(NETWORK_INTERFACE_TTL_SECONDS)
    )
    _instance_types: TtlCache[str, str] = field(default_factory=lambda: TtlCache(INSTANCE_TYPE_TTL_SECONDS))
    pacer: Pacer | None = None
    # Pod IP → the ENI holding it; a stale entry (the IP now on another node) is noticed by the caller
    # comparing the ENI's instance with the pod's node, and looked up again.
    _by_address: TtlCache[str, NetworkInterface] = field(
        default_factory=lambda: TtlCache(NETWORK_INTERFACE_TTL_SECONDS)
    )
    _instance_interfaces: TtlCache[str, tuple[NetworkInterface, ...]] = field(
        default_factory=lambda: TtlCache(NETWORK_INTERFACE_TTL_SECONDS)
    )

    @classmethod
    def connect(
        cls,
        region: str,
        observe: CallObserver | None = None,
        max_attempts: int = 8,
        max_connections: int = 32,
        pacing_scale: float = 1.0,
        instance_type_ttl_seconds: float = INSTANCE_TYPE_TTL_SECONDS,
    ) -> Ec2Mirror:
        config = botocore.config.Config(
            region_name=region,
            retries={"mode": "standard", "max_attempts": max_attempts},
            user_agent_extra="trafficmirror",
            connect_timeout=5,
            read_timeout=30,
            max_pool_connections=max_connections,  # one per reconcile thread
        )
        client = boto3.session.Session().client("ec2", config=config)
        if observe is not None:
            _observe_calls(client, observe)
        # One pacer per regional client: every reconcile of the process shares AWS's buckets of the region.
        pacer = Pacer(scale=pacing_scale)
        pacer.install(client)
        return cls(client=client, pacer=pacer, _instance_types=TtlCache(instance_type_ttl_seconds))

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = getattr(self.client, operation)(**kwargs)
            return response
        except botocore.exceptions.ClientError as error:
            raise _translate(error) from error
        except (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectionClosedError,
        ) as error:
            raise AwsError(operation, "EndpointUnreachable", str(error), classify("ServiceUnavailable")) from error

    def _pages(self, operation: str, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        token: str | None = None
        # EC2 refuses MaxResults next to a list of IDs; pages only matter for "describe everything".
        by_id = any(key.endswith("Ids") for key in kwargs)
        while True:
            paging = {} if by_id else {"MaxResults": 1000}
            page = self._call(operation, **paging, **({"NextToken": token} if token else {}), **kwargs)
            yield from page.get(key, [])
            token = page.get("NextToken")
            if not token:
                return

    # --- targets ------------------------------------------------------------------------------
    def create_target(
        self, endpoint: Endpoint, *, client_token: str, description: str, tags: dict[str, str]
    ) -> AwsTarget:
        kind = {
            "NetworkInterfaceId": endpoint.network_interface_id,
            "NetworkLoadBalancerArn": endpoint.network_load_balancer_arn,
            "GatewayLoadBalancerEndpointId": endpoint.gateway_load_balancer_endpoint_id,
        }
        response = self._call(
            "create_traffic_mirror_target",
            ClientToken=client_token,
            Description=description,
            TagSpecifications=_tag_spec("traffic-mirror-target", tags),
            **{k: v for k, v in kind.items() if v},
        )
        return _target_from_aws(response["TrafficMirrorTarget"])

    def describe_targets(self, target_ids: list[str] | None = None) -> list[AwsTarget]:
        args = {"TrafficMirrorTargetIds": target_ids} if target_ids else {}
        return [
            _target_from_aws(t) for t in self._pages("describe_traffic_mirror_targets", "TrafficMirrorTargets", **args)
        ]

    def delete_target(self, target_id: str) -> None:
        self._call("delete_traffic_mirror_target", TrafficMirrorTargetId=target_id)

    # --- filters ------------------------------------------------------------------------------
    def create_filter(self, *, client_token: str, description: str, tags: dict[str, str]) -> AwsFilter:
        response = self._call(
            "create_traffic_mirror_filter",
            ClientToken=client_token,
            Description=description,
            TagSpecifications=_tag_spec("traffic-mirror-filter", tags),
        )
        return _filter_from_aws(response["TrafficMirrorFilter"])

    def describe_filters(self, filter_ids: list[str] | None = None) -> list[AwsFilter]:
        args = {"TrafficMirrorFilterIds": filter_ids} if filter_ids else {}
        return [
            _filter_from_aws(f) for f in self._pages("describe_traffic_mirror_filters", "TrafficMirrorFilters", **args)
        ]

    def delete_filter(self, filter_id: str) -> None:
        self._call("delete_traffic_mirror_filter", TrafficMirrorFilterId=filter_id)

    def create_filter_rule(self, filter_id: str, params: RuleParams, client_token: str) -> AwsFilterRule:
        response = self._call(
            "create_traffic_mirror_filter_rule",
            TrafficMirrorFilterId=filter_id,
            ClientToken=client_token,
            **_rule_args(params),
        )
        return _rule_from_aws(response["TrafficMirrorFilterRule"])

    def modify_filter_rule(self, rule_id: str, params: RuleParams) -> AwsFilterRule:
        args = _rule_args(params)
        removed = removed_rule_fields(params)
        response = self._call(
            "modify_traffic_mirror_filter_rule",
            TrafficMirrorFilterRuleId=rule_id,
            **args,
            **({"RemoveFields": removed} if removed else {}),
        )
        return _rule_from_aws(response["TrafficMirrorFilterRule"])

    def delete_filter_rule(self, rule_id: str) -> None:
        self._call("delete_traffic_mirror_filter_rule", TrafficMirrorFilterRuleId=rule_id)

    def set_network_services(self, filter_id: str, add: list[str], remove: list[str]) -> None:
        self._call(
            "modify_traffic_mirror_filter_network_services",
            TrafficMirrorFilterId=filter_id,
            **({"AddNetworkServices": add} if add else {}),
            **({"RemoveNetworkServices": remove} if remove else {}),
        )

    # --- sessions -----------------------------------------------------------------------------
    def create_session(self, params: SessionParams, *, client_token: str, tags: dict[str, str]) -> AwsSession:
        optional = {"VirtualNetworkId": params.virtual_network_id, "PacketLength": params.packet_length}
        response = self._call(
            "create_traffic_mirror_session",
            ClientToken=client_token,
            NetworkInterfaceId=params.network_interface_id,
            TrafficMirrorTargetId=params.target_id,
            TrafficMirrorFilterId=params.filter_id,
            SessionNumber=params.session_number,
            Description=params.description,
            TagSpecifications=_tag_spec("traffic-mirror-session", tags),
            **{k: v for k, v in optional.items() if v is not None},
        )
        return _session_from_aws(response["TrafficMirrorSession"])

    def describe_sessions(
        self,
        session_ids: list[str] | None = None,
        network_interface_id: str | None = None,
        target_id: str | None = None,
    ) -> list[AwsSession]:
        args: dict[str, Any] = {"TrafficMirrorSessionIds": session_ids} if session_ids else {}
        filters = {"network-interface-id": network_interface_id, "traffic-mirror-target-id": target_id}
        if any(filters.values()):
            args["Filters"] = [{"Name": name, "Values": [value]} for name, value in filters.items() if value]
        return [
            _session_from_aws(s)
            for s in self._pages("describe_traffic_mirror_sessions", "TrafficMirrorSessions", **args)
        ]

    def modify_session(self, session_id: str, changes: SessionChanges) -> AwsSession:
        values = {
            "TrafficMirrorTargetId": changes.target_id,
            "TrafficMirrorFilterId": changes.filter_id,
            "SessionNumber": changes.session_number,
            "VirtualNetworkId": changes.virtual_network_id,
            "PacketLength": changes.packet_length,
            "Description": changes.description,
        }
        response = self._call(
            "modify_traffic_mirror_session",
            TrafficMirrorSessionId=session_id,
            **{k: v for k, v in values.items() if v is not None},
            **({"RemoveFields": ["packet-length"]} if changes.remove_packet_length else {}),
        )
        return _session_from_aws(response["TrafficMirrorSession"])

    def delete_session(self, session_id: str) -> None:
        self._call("delete_traffic_mirror_session", TrafficMirrorSessionId=session_id)

    # --- tags on targets, filters and sessions ---------------------------------------------------
    def set_tags(self, resource_id: str, add: dict[str, str], remove: list[str]) -> None:
        """CreateTags for new or changed values, DeleteTags for keys no longer wanted."""
        if add:
            self._call(
                "create_tags",
                Resources=[resource_id],
                Tags=[{"Key": k, "Value": v} for k, v in sorted(add.items())],
            )
        if remove:
            self._call("delete_tags", Resources=[resource_id], Tags=[{"Key": k} for k in sorted(remove)])

    # --- what sits behind an ENI --------------------------------------------------------------
    def network_interface(self, network_interface_id: str) -> NetworkInterface:
        def load() -> NetworkInterface:
            response = self._call("describe_network_interfaces", NetworkInterfaceIds=[network_interface_id])
            raw = response["NetworkInterfaces"][0]
            return NetworkInterface(
                network_interface_id=raw["NetworkInterfaceId"],
                instance_id=(raw.get("Attachment") or {}).get("InstanceId"),
                private_ip_address=raw.get("PrivateIpAddress"),
                interface_type=raw.get("InterfaceType", "interface"),
                availability_zone=raw.get("AvailabilityZone"),
            )

        return self._interfaces.get_or_load(network_interface_id, load)

    def instance_types(self, instance_ids: list[str]) -> dict[str, str]:
        """Current type of each instance, at most INSTANCE_TYPE_TTL_SECONDS old (a stop/modify/start changes it)."""
        if len(instance_ids) == 1:  # one reconcile's lookup: shared with the others asking at the same time
            (instance_id,) = instance_ids
            return {
                instance_id: self._instance_types.get_or_load(instance_id, lambda: self._instance_type(instance_id))
            }
        types = {i: t for i in instance_ids if (t := self._instance_types.get(i)) is not None}
        missing = [i for i in instance_ids if i not in types]
        if missing:
            for reservation in self._pages("describe_instances", "Reservations", InstanceIds=missing):
                for instance in reservation["Instances"]:
                    types[instance["InstanceId"]] = self._instance_types.put(
                        instance["InstanceId"], instance["InstanceType"]
                    )
        return types

    def _instance_type(self, instance_id: str) -> str:
        response = self._call("describe_instances", InstanceIds=[instance_id])
        return str(response["Reservations"][0]["Instances"][0]["InstanceType"])

    def instance_types_behind(self, network_interface_ids: list[str]) -> dict[str, str | None]:
        """The type of the instance behind each ENI (None: not attached to an instance), in batches.

        Filters, not ID lists: an ENI or instance deleted meanwhile is left out instead of failing
        the whole call. Attachments come from the ENI cache; types are read anew.
        """
        # What this call reads is answered from what it read, not from the caches: with thousands of
        # ENIs the batches take longer than a type may be reused, and a type that expired while the
        # later batches were read would read as unknown (a drift for every object, every period).
        known = {e: i for e in dict.fromkeys(network_interface_ids) if (i := self._interfaces.get(e)) is not None}
        unknown = [e for e in dict.fromkeys(network_interface_ids) if e not in known]
        for start in range(0, len(unknown), FILTER_VALUES_PER_CALL):
            chunk = unknown[start : start + FILTER_VALUES_PER_CALL]
            for raw in self._pages(
                "describe_network_interfaces",
                "NetworkInterfaces",
                Filters=[{"Name": "network-interface-id", "Values": chunk}],
            ):
                known[raw["NetworkInterfaceId"]] = self._interfaces.put(
                    raw["NetworkInterfaceId"],
                    NetworkInterface(
                        network_interface_id=raw["NetworkInterfaceId"],
                        instance_id=(raw.get("Attachment") or {}).get("InstanceId"),
                        private_ip_address=raw.get("PrivateIpAddress"),
                        interface_type=raw.get("InterfaceType", "interface"),
                    ),
                )
        attached = {e: known[e].instance_id for e in network_interface_ids if e in known}
        # Every type afresh: this is the once-a-period observation, and a resize must show within a period
        # however short (the cache then serves the reconciles of the period with what was just seen).
        instances = [i for i in dict.fromkeys(attached.values()) if i]
        types: dict[str, str] = {}
        for start in range(0, len(instances), FILTER_VALUES_PER_CALL):
            chunk = instances[start : start + FILTER_VALUES_PER_CALL]
            for reservation in self._pages(
                "describe_instances", "Reservations", Filters=[{"Name": "instance-id", "Values": chunk}]
            ):
                for instance in reservation["Instances"]:
                    types[instance["InstanceId"]] = self._instance_types.put(
                        instance["InstanceId"], instance["InstanceType"]
                    )
        return {eni: (types.get(instance_id) if instance_id else None) for eni, instance_id in attached.items()}

    def interfaces_by_address(
        self,
        addresses: list[str],
        refresh: frozenset[str] = frozenset(),
        on_instance: Mapping[str, str] | None = None,
    ) -> dict[str, NetworkInterface]:
        """The ENI holding each private address (primary or secondary), from the cache or by
        DescribeNetworkInterfaces filtered by `addresses.private-ip-address`, many addresses per call.
        Addresses in `refresh` are looked up again; an address no ENI holds is left out.

        A private address is unique within a VPC only: another VPC of the account (or a peered one
        with overlapping CIDRs) may hold it too. `on_instance` names, per address, the instance it
        should be on (the pod's node): an ENI attached to it wins over the others."""
        preferred = on_instance or {}
        found: dict[str, NetworkInterface] = {}
        missing = []
        for address in dict.fromkeys(addresses):
            cached = None if address in refresh else self._by_address.get(address)
            if cached is not None:
                found[address] = cached
            else:
                missing.append(address)
        for start in range(0, len(missing), FILTER_VALUES_PER_CALL):
            chunk = missing[start : start + FILTER_VALUES_PER_CALL]
            wanted = set(chunk)
            holders: dict[str, list[NetworkInterface]] = {}
            for raw in self._pages(
                "describe_network_interfaces",
                "NetworkInterfaces",
                Filters=[{"Name": "addresses.private-ip-address", "Values": chunk}],
            ):
                interface = self._interfaces.put(raw["NetworkInterfaceId"], _interface_from_aws(raw))
                for address in interface.private_ip_addresses:
                    if address in wanted:
                        holders.setdefault(address, []).append(interface)
            for address, candidates in holders.items():
                chosen = next((i for i in candidates if i.instance_id == preferred.get(address)), candidates[0])
                found[address] = self._by_address.put(address, chosen)
        return found

    def instance_network_interfaces(self, instance_id: str) -> tuple[NetworkInterface, ...]:
        """The ENIs attached to an instance, the primary (device index 0) first; cached."""

        def load() -> tuple[NetworkInterface, ...]:
            interfaces = [
                _interface_from_aws(raw)
                for raw in self._pages(
                    "describe_network_interfaces",
                    "NetworkInterfaces",
                    Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}],
                )
            ]
            return tuple(sorted(interfaces, key=lambda i: (i.device_index is None, i.device_index or 0)))

        return self._instance_interfaces.get_or_load(instance_id, load)

    def sessions_on(self, network_interface_ids: list[str]) -> dict[str, list[AwsSession]]:
        """Every traffic mirror session of each source ENI, ours and others' (AWS allows 3 per ENI), in batches."""
        wanted = list(dict.fromkeys(network_interface_ids))
        result: dict[str, list[AwsSession]] = {eni: [] for eni in wanted}
        for start in range(0, len(wanted), FILTER_VALUES_PER_CALL):
            chunk = wanted[start : start + FILTER_VALUES_PER_CALL]
            for raw in self._pages(
                "describe_traffic_mirror_sessions",
                "TrafficMirrorSessions",
                Filters=[{"Name": "network-interface-id", "Values": chunk}],
            ):
                session = _session_from_aws(raw)
                result.setdefault(session.network_interface_id, []).append(session)
        return result

    def primary_network_interface(self, instance_id: str) -> str:
        response = self._call("describe_instances", InstanceIds=[instance_id])
        instance = response["Reservations"][0]["Instances"][0]
        interfaces = sorted(instance["NetworkInterfaces"], key=lambda n: n["Attachment"]["DeviceIndex"])
        return str(interfaces[0]["NetworkInterfaceId"])

    def instance_type_facts(self, instance_type: str) -> InstanceTypeFacts:
        """DescribeInstanceTypes, once per type for the life of the process: a type's facts never change."""
        with self._lock:
            cached = self.instance_type_cache.get(instance_type)
        if cached is not None:
            return cached
        try:
            response = self._call("describe_instance_types", InstanceTypes=[instance_type])
            raw = response["InstanceTypes"][0] if response.get("InstanceTypes") else {}
        except AwsError:
            raw = {}
        facts = InstanceTypeFacts(
            instance_type=instance_type,
            hypervisor=raw.get("Hypervisor"),
            bare_metal=raw.get("BareMetal"),
            current_generation=raw.get("CurrentGeneration"),
        )
        with self._lock:
            self.instance_type_cache[instance_type] = facts
        return facts


def _translate(error: botocore.exceptions.ClientError) -> AwsError:
    details = error.response.get("Error", {})
    code = str(details.get("Code", "Unknown"))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return AwsError(
        operation=error.operation_name,
        code=code,
        message=str(details.get("Message", "")),
        error_class=classify(code, status, str(details.get("Message", ""))),
    )


def _observe_calls(client: Any, observe: CallObserver) -> None:
    """Count every HTTP attempt, retries included, so that a retry storm inside botocore shows too."""

    def after_attempt(response: Any, operation: Any, caught_exception: Any = None, **_: Any) -> None:
        if response is None:
            observe(operation.name, type(caught_exception).__name__ if caught_exception else "NoResponse")
            return
        _, parsed = response
        code = parsed.get("Error", {}).get("Code") if isinstance(parsed, dict) else None
        observe(operation.name, code or "ok")

    # needs-retry fires once per attempt, before botocore decides whether to retry.
    client.meta.events.register("needs-retry.ec2", after_attempt)
