"""An in-memory AWS for the reconcilers' unit tables: implements `trafficmirror.reconcile.ports.MirrorAws`.

It keeps the AWS behaviours that matter to the decisions: idempotency by ClientToken (a token
already used answers with what it made, even if that was deleted since, as EC2 does), the values
AWS normalises (CIDR network addresses, 8500 bytes to an NLB), InUse on deleting what sessions
use, three sessions per source ENI, the sources-per-target quota of an ENI target's instance type
(the packaged quota table, as AWS applies it). Every call is counted, by region, so tables can assert that a
loop makes no mutating call.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from trafficmirror.aws.ec2 import (
    AwsFilter,
    AwsFilterRule,
    AwsSession,
    AwsTarget,
    Endpoint,
    NetworkInterface,
    RuleParams,
    SessionChanges,
    SessionParams,
)
from trafficmirror.aws.errors import AwsError, classify
from trafficmirror.aws.instance_support import InstanceTypeFacts
from trafficmirror.aws.target_quotas import TargetQuotas

MUTATING_PREFIXES = ("create", "modify", "delete", "set_")
_ids = itertools.count(0x1000)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids):017x}"


def error(operation: str, code: str, message: str = "") -> AwsError:
    return AwsError(operation, code, message or code, classify(code, None, message))


@dataclass
class FakeRegion:
    """One region of one account."""

    name: str
    calls: Counter[str] = field(default_factory=Counter)
    interfaces: dict[str, NetworkInterface] = field(default_factory=dict)
    instances: dict[str, str] = field(default_factory=dict)  # instance → type
    primary: dict[str, str] = field(default_factory=dict)  # instance → ENI
    targets: dict[str, AwsTarget] = field(default_factory=dict)
    filters: dict[str, AwsFilter] = field(default_factory=dict)
    sessions: dict[str, AwsSession] = field(default_factory=dict)
    tokens: dict[tuple[str, str], tuple[str, object]] = field(default_factory=dict)  # → (ID, as made)
    fail: dict[str, AwsError] = field(default_factory=dict)  # operation → error it raises once armed

    # --- the world -------------------------------------------------------------------------------
    def add_instance(self, instance_type: str, availability_zone: str = "us-east-1a") -> tuple[str, str]:
        instance_id, eni = _new_id("i"), _new_id("eni")
        self.instances[instance_id] = instance_type
        self.primary[instance_id] = eni
        self.interfaces[eni] = NetworkInterface(eni, instance_id, "10.0.0.1", "interface", availability_zone)
        return instance_id, eni

    def _check_sources_per_target(self, target_id: str, source_eni: str, ignore: str | None = None) -> None:
        target = self.targets[target_id]
        if target.network_interface_id is None:
            return  # NLB and GWLB endpoint targets: no per-target quota
        interface = self.interfaces.get(target.network_interface_id)
        instance_type = self.instances.get(interface.instance_id or "") if interface else None
        limit = TargetQuotas.packaged().sources_per_target("network-interface", instance_type).limit
        sources = {
            s.network_interface_id
            for s in self.sessions.values()
            if s.target_id == target_id and s.session_id != ignore
        }
        if limit is not None and source_eni not in sources and len(sources) >= limit:
            raise error(
                "CreateTrafficMirrorSession",
                "TrafficMirrorSourcesPerTargetLimitExceeded",
                f"The maximum number of traffic mirror sources ({limit}) for traffic mirror target "
                f"'{target_id}' has been exceeded.",
            )

    def mutating_calls(self) -> int:
        return sum(n for op, n in self.calls.items() if op.startswith(MUTATING_PREFIXES))

    def _count(self, operation: str) -> None:
        self.calls[operation] += 1
        if operation in self.fail:
            raise self.fail[operation]

    def _replay(self, operation: str, token: str, store: Mapping[str, object]) -> Any:
        """EC2's idempotency: a used token answers with what it made, even when that is deleted since."""
        made = self.tokens.get((operation, token))
        if made is None:
            return None
        resource_id, as_made = made
        return store.get(resource_id, as_made)

    # --- lookups -----------------------------------------------------------------------------------
    def network_interface(self, network_interface_id: str) -> NetworkInterface:
        self._count("describe_network_interfaces")
        if network_interface_id not in self.interfaces:
            raise error(
                "DescribeNetworkInterfaces",
                "InvalidNetworkInterfaceID.NotFound",
                f"The networkInterface ID '{network_interface_id}' does not exist",
            )
        return self.interfaces[network_interface_id]

    def instance_types(self, instance_ids: list[str]) -> dict[str, str]:
        self._count("describe_instances")
        missing = [i for i in instance_ids if i not in self.instances]
        if missing:
            raise error("DescribeInstances", "InvalidInstanceID.NotFound")
        return {i: self.instances[i] for i in instance_ids}

    def instance_types_behind(self, network_interface_ids: list[str]) -> dict[str, str | None]:
        self._count("describe_network_interfaces")
        self._count("describe_instances")
        found = {e: self.interfaces[e].instance_id for e in network_interface_ids if e in self.interfaces}
        return {e: self.instances.get(i) if i else None for e, i in found.items()}

    def primary_network_interface(self, instance_id: str) -> str:
        self._count("describe_instances")
        if instance_id not in self.primary:
            raise error("DescribeInstances", "InvalidInstanceID.NotFound")
        return self.primary[instance_id]

    def instance_type_facts(self, instance_type: str) -> InstanceTypeFacts:
        self._count("describe_instance_types")
        xen = instance_type.startswith(("t2.", "c4.", "m4.", "r4.", "i3."))
        return InstanceTypeFacts(instance_type, "xen" if xen else "nitro", False, not instance_type.startswith("c4."))

    def set_tags(self, resource_id: str, add: dict[str, str], remove: list[str]) -> None:
        self._count("set_tags")
        stores: list[dict[str, Any]] = [self.targets, self.filters, self.sessions]
        for store in stores:
            if resource_id in store:
                found = store[resource_id]
                store[resource_id] = replace(
                    found, tags={k: v for k, v in {**found.tags, **add}.items() if k not in remove}
                )
                return
        raise error("CreateTags", "InvalidID", f"{resource_id} does not exist")

    # --- targets -----------------------------------------------------------------------------------
    def create_target(
        self, endpoint: Endpoint, *, client_token: str, description: str, tags: dict[str, str]
    ) -> AwsTarget:
        self._count("create_target")
        replayed: AwsTarget | None = self._replay("create_target", client_token, self.targets)
        if replayed is not None:
            return replayed
        if endpoint.network_interface_id and endpoint.network_interface_id not in self.interfaces:
            raise error("CreateTrafficMirrorTarget", "InvalidNetworkInterfaceID.NotFound")
        target = AwsTarget(
            _new_id("tmt"),
            endpoint.network_interface_id,
            endpoint.network_load_balancer_arn,
            endpoint.gateway_load_balancer_endpoint_id,
            description,
            dict(tags),
        )
        self.targets[target.target_id] = target
        self.tokens[("create_target", client_token)] = (target.target_id, target)
        return target

    def describe_targets(self, target_ids: list[str] | None = None) -> list[AwsTarget]:
        self._count("describe_targets")
        return self._by_ids(self.targets, target_ids, "InvalidTrafficMirrorTargetId.NotFound")

    def delete_target(self, target_id: str) -> None:
        self._count("delete_target")
        if target_id not in self.targets:
            raise error("DeleteTrafficMirrorTarget", "InvalidTrafficMirrorTargetId.NotFound")
        if any(s.target_id == target_id for s in self.sessions.values()):
            raise error("DeleteTrafficMirrorTarget", "TrafficMirrorTargetInUseException")
        del self.targets[target_id]

    # --- filters -----------------------------------------------------------------------------------
    def create_filter(self, *, client_token: str, description: str, tags: dict[str, str]) -> AwsFilter:
        self._count("create_filter")
        replayed: AwsFilter | None = self._replay("create_filter", client_token, self.filters)
        if replayed is not None:
            return replayed
        made = AwsFilter(_new_id("tmf"), description, dict(tags), (), ())
        self.filters[made.filter_id] = made
        self.tokens[("create_filter", client_token)] = (made.filter_id, made)
        return made

    def describe_filters(self, filter_ids: list[str] | None = None) -> list[AwsFilter]:
        self._count("describe_filters")
        return self._by_ids(self.filters, filter_ids, "InvalidTrafficMirrorFilterId.NotFound")

    def delete_filter(self, filter_id: str) -> None:
        self._count("delete_filter")
        if filter_id not in self.filters:
            raise error("DeleteTrafficMirrorFilter", "InvalidTrafficMirrorFilterId.NotFound")
        if any(s.filter_id == filter_id for s in self.sessions.values()):
            raise error("DeleteTrafficMirrorFilter", "TrafficMirrorFilterInUse")
        del self.filters[filter_id]

    @staticmethod
    def stored(params: RuleParams) -> RuleParams:
        """What AWS keeps of a rule: network addresses, IPv6 compressed."""
        return replace(
            params,
            source_cidr_block=str(ipaddress.ip_network(params.source_cidr_block, strict=False)),
            destination_cidr_block=str(ipaddress.ip_network(params.destination_cidr_block, strict=False)),
            description=params.description or None,
        )

    def create_filter_rule(self, filter_id: str, params: RuleParams, client_token: str) -> AwsFilterRule:
        self._count("create_filter_rule")
        found = self.filters[filter_id]
        if any(r.params.key == params.key for r in found.rules):
            raise error("CreateTrafficMirrorFilterRule", "TrafficMirrorFilterRuleAlreadyExists")
        rule = AwsFilterRule(_new_id("tmfr"), self.stored(params))
        self.filters[filter_id] = replace(found, rules=(*found.rules, rule))
        return rule

    def modify_filter_rule(self, rule_id: str, params: RuleParams) -> AwsFilterRule:
        self._count("modify_filter_rule")
        for filter_id, found in self.filters.items():
            if any(r.rule_id == rule_id for r in found.rules):
                rule = AwsFilterRule(rule_id, self.stored(params))
                rules = tuple(rule if r.rule_id == rule_id else r for r in found.rules)
                self.filters[filter_id] = replace(found, rules=rules)
                return rule
        raise error("ModifyTrafficMirrorFilterRule", "InvalidTrafficMirrorFilterRuleId.NotFound")

    def delete_filter_rule(self, rule_id: str) -> None:
        self._count("delete_filter_rule")
        for filter_id, found in self.filters.items():
            self.filters[filter_id] = replace(found, rules=tuple(r for r in found.rules if r.rule_id != rule_id))

    def set_network_services(self, filter_id: str, add: list[str], remove: list[str]) -> None:
        self._count("set_network_services")
        found = self.filters[filter_id]
        services = tuple(sorted((set(found.network_services) | set(add)) - set(remove)))
        self.filters[filter_id] = replace(found, network_services=services)

    # --- sessions ----------------------------------------------------------------------------------
    def create_session(self, params: SessionParams, *, client_token: str, tags: dict[str, str]) -> AwsSession:
        self._count("create_session")
        replayed: AwsSession | None = self._replay("create_session", client_token, self.sessions)
        if replayed is not None:
            return replayed
        self._check_target_type("CreateTrafficMirrorSession", params.target_id)
        if sum(s.network_interface_id == params.network_interface_id for s in self.sessions.values()) >= 3:
            raise error("CreateTrafficMirrorSession", "TrafficMirrorSessionsPerInterfaceLimitExceeded")
        target = self.targets[params.target_id]
        self._check_sources_per_target(params.target_id, params.network_interface_id)
        session = AwsSession(
            _new_id("tms"),
            params.network_interface_id,
            params.target_id,
            params.filter_id,
            params.session_number,
            params.virtual_network_id if params.virtual_network_id is not None else 4242,
            self._length(params.packet_length, target),
            params.description,
            dict(tags),
        )
        self.sessions[session.session_id] = session
        self.tokens[("create_session", client_token)] = (session.session_id, session)
        return session

    @staticmethod
    def _length(length: int | None, target: AwsTarget) -> int | None:
        return 8500 if length is None and target.network_load_balancer_arn else length

    def describe_sessions(
        self,
        session_ids: list[str] | None = None,
        network_interface_id: str | None = None,
        target_id: str | None = None,
    ) -> list[AwsSession]:
        self._count("describe_sessions")
        found = self._by_ids(self.sessions, session_ids, "InvalidTrafficMirrorSessionId.NotFound")
        if network_interface_id:
            found = [s for s in found if s.network_interface_id == network_interface_id]
        if target_id:
            found = [s for s in found if s.target_id == target_id]
        return found

    def _check_target_type(self, operation: str, target_id: str) -> None:
        """The field report: a session to a target on a t2 instance is refused, naming the target ENI."""
        eni = self.targets[target_id].network_interface_id
        interface = self.interfaces.get(eni or "")
        if interface and interface.instance_id and self.instances[interface.instance_id].startswith("t2."):
            raise error(operation, "NetworkInterfaceNotSupported", f"{eni} must be attached to a supported instance")

    def modify_session(self, session_id: str, changes: SessionChanges) -> AwsSession:
        self._count("modify_session")
        if changes.target_id:
            self._check_target_type("ModifyTrafficMirrorSession", changes.target_id)
        session = self.sessions[session_id]
        if changes.target_id is not None:
            self._check_sources_per_target(changes.target_id, session.network_interface_id, ignore=session_id)
        values: dict[str, Any] = {
            "target_id": changes.target_id,
            "filter_id": changes.filter_id,
            "session_number": changes.session_number,
            "virtual_network_id": changes.virtual_network_id,
            "packet_length": changes.packet_length,
            "description": changes.description,
        }
        session = replace(session, **{k: v for k, v in values.items() if v is not None})
        if changes.remove_packet_length:
            session = replace(session, packet_length=self._length(None, self.targets[session.target_id]))
        self.sessions[session_id] = session
        return session

    def delete_session(self, session_id: str) -> None:
        self._count("delete_session")
        if session_id not in self.sessions:
            raise error("DeleteTrafficMirrorSession", "InvalidTrafficMirrorSessionId.NotFound")
        del self.sessions[session_id]

    @staticmethod
    def _by_ids(store: Mapping[str, Any], ids: list[str] | None, not_found: str) -> list[Any]:
        if not ids:
            return list(store.values())
        missing = [i for i in ids if i not in store]
        if missing:
            raise error("Describe", not_found, f"'{missing[0]}' does not exist")
        return [store[i] for i in ids]


@dataclass
class FakeAws:
    """Regions by name; None is the operator's own region."""

    default_region: str = "us-east-1"
    regions: dict[str, FakeRegion] = field(default_factory=dict)

    def region(self, name: str | None = None) -> FakeRegion:
        key = name or self.default_region
        return self.regions.setdefault(key, FakeRegion(key))

    def __call__(self, name: str | None) -> FakeRegion:
        return self.region(name)

    def mutating_calls(self) -> int:
        return sum(r.mutating_calls() for r in self.regions.values())
