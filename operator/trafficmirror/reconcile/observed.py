"""What the shared Describe saw of one AWS resource, with the instance type behind its ENI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

Resource = TypeVar("Resource")


@dataclass(frozen=True)
class Observed(Generic[Resource]):
    resource: Resource
    # The type of the instance behind the target ENI or the session's source ENI; only compared
    # when `instance_type_known` (the observer looked it up), None for an ENI without an instance.
    instance_type: str | None = None
    instance_type_known: bool = False
