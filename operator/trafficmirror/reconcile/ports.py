"""What each reconciler needs of AWS, as Protocols: the `aws` adapter's `Ec2Mirror` is one
implementation, the unit tests' in-memory fakes another. AWS's own vocabulary stays in the adapter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

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
from trafficmirror.aws.instance_support import InstanceTypeFacts


class Tagging(Protocol):
    def set_tags(self, resource_id: str, add: dict[str, str], remove: list[str]) -> None: ...


class InstanceLookups(Protocol):
    """What sits behind an ENI, and the facts of its instance type."""

    def network_interface(self, network_interface_id: str) -> NetworkInterface: ...

    def instance_types(self, instance_ids: list[str]) -> dict[str, str]: ...

    def primary_network_interface(self, instance_id: str) -> str: ...

    def instance_type_facts(self, instance_type: str) -> InstanceTypeFacts: ...


class TargetAws(Tagging, InstanceLookups, Protocol):
    def create_target(
        self, endpoint: Endpoint, *, client_token: str, description: str, tags: dict[str, str]
    ) -> AwsTarget: ...

    def describe_targets(self, target_ids: list[str] | None = None) -> list[AwsTarget]: ...

    def delete_target(self, target_id: str) -> None: ...

    def describe_sessions(
        self,
        session_ids: list[str] | None = None,
        network_interface_id: str | None = None,
        target_id: str | None = None,
    ) -> list[AwsSession]: ...


class FilterAws(Tagging, Protocol):
    def create_filter(self, *, client_token: str, description: str, tags: dict[str, str]) -> AwsFilter: ...

    def describe_filters(self, filter_ids: list[str] | None = None) -> list[AwsFilter]: ...

    def delete_filter(self, filter_id: str) -> None: ...

    def create_filter_rule(self, filter_id: str, params: RuleParams, client_token: str) -> AwsFilterRule: ...

    def modify_filter_rule(self, rule_id: str, params: RuleParams) -> AwsFilterRule: ...

    def delete_filter_rule(self, rule_id: str) -> None: ...

    def set_network_services(self, filter_id: str, add: list[str], remove: list[str]) -> None: ...


class SessionAws(Tagging, InstanceLookups, Protocol):
    def create_session(self, params: SessionParams, *, client_token: str, tags: dict[str, str]) -> AwsSession: ...

    def describe_sessions(
        self,
        session_ids: list[str] | None = None,
        network_interface_id: str | None = None,
        target_id: str | None = None,
    ) -> list[AwsSession]: ...

    def modify_session(self, session_id: str, changes: SessionChanges) -> AwsSession: ...

    def delete_session(self, session_id: str) -> None: ...


class MirrorAws(TargetAws, FilterAws, SessionAws, Protocol):
    """Everything of one region: what `ReconcileContext.aws_for_region` hands out (and `observe` uses)."""

    def instance_types_behind(self, network_interface_ids: list[str]) -> dict[str, str | None]: ...


class WorkloadAws(Protocol):
    """What a pod or node selector session asks AWS: which ENIs hold the pods' addresses, a node's
    ENIs, and the sessions already on an ENI."""

    def interfaces_by_address(
        self,
        addresses: list[str],
        refresh: frozenset[str] = frozenset(),
        on_instance: Mapping[str, str] | None = None,
    ) -> dict[str, NetworkInterface]: ...

    def instance_network_interfaces(self, instance_id: str) -> tuple[NetworkInterface, ...]: ...

    def sessions_on(self, network_interface_ids: list[str]) -> dict[str, list[AwsSession]]: ...
