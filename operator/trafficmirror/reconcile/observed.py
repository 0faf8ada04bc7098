"""What the shared Describe saw of one AWS resource, with the instance type behind its ENI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from trafficmirror.aws.ec2 import AwsFilter, AwsSession, AwsTarget

Resource = TypeVar("Resource")


class Observer(Protocol):
    def describe_targets(self, target_ids: list[str] | None = None) -> list[AwsTarget]: ...

    def describe_filters(self, filter_ids: list[str] | None = None) -> list[AwsFilter]: ...

    def describe_sessions(
        self,
        session_ids: list[str] | None = None,
        network_interface_id: str | None = None,
        target_id: str | None = None,
    ) -> list[AwsSession]: ...

    def instance_types_behind(self, network_interface_ids: list[str]) -> dict[str, str | None]: ...


@dataclass(frozen=True)
class Observed(Generic[Resource]):
    resource: Resource
    # The type of the instance behind the target ENI or the session's source ENI; only compared
    # when `instance_type_known` (the observer looked it up), None for an ENI without an instance.
    instance_type: str | None = None
    instance_type_known: bool = False


def observe(aws: Observer, snapshot_kind: str) -> dict[str, Observed[Any]]:
    """One batched look at a kind in one region: every resource by ID, with the instance type behind
    each target ENI or session source ENI (two more batched calls, not one per object)."""
    if snapshot_kind == "filters":
        return {f.filter_id: Observed(f) for f in aws.describe_filters()}
    if snapshot_kind == "targets":
        targets = aws.describe_targets()
        types = aws.instance_types_behind([t.network_interface_id for t in targets if t.network_interface_id])
        return {
            t.target_id: Observed(t, types.get(t.network_interface_id or ""), t.network_interface_id in types)
            for t in targets
        }
    sessions = aws.describe_sessions()
    types = aws.instance_types_behind([s.network_interface_id for s in sessions])
    return {
        s.session_id: Observed(s, types.get(s.network_interface_id), s.network_interface_id in types) for s in sessions
    }
