"""Pieces every custom resource shares: the base model, conditions, status, AWS tags."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "trafficmirror.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class CamelModel(BaseModel):
    """Python names in snake_case, Kubernetes names in camelCase; unknown keys ignored on read."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_k8s(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Phase(enum.StrEnum):
    PENDING = "Pending"
    READY = "Ready"
    FAILED = "Failed"
    DELETING = "Deleting"
    COMPLETED = "Completed"  # MirrorSession only: its time (spec.duration, spec.stopAt) is over


DeletionPolicy = Literal["Delete", "Orphan"]

Region = Annotated[
    str,
    Field(
        pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]$",
        description="AWS region of the resource; the operator's region when omitted. Immutable.",
    ),
]

Tags = Annotated[
    dict[str, str],
    Field(
        description="AWS tags, the whole set besides the ownership tags: tags changed or added outside are put "
        "back or removed (keys starting with aws: are left alone). Keys under trafficmirror.io/ are reserved.",
        json_schema_extra={
            "maxProperties": 40,
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(k, !k.startsWith('trafficmirror.io/') && !k.startsWith('aws:'))",
                    "message": "tag keys starting with trafficmirror.io/ or aws: are reserved",
                },
                {
                    "rule": "self.all(k, size(k) <= 128 && size(self[k]) <= 256)",
                    "message": "tag keys are at most 128 characters and values at most 256",
                },
            ],
        },
    ),
]

Description = Annotated[
    str, Field(max_length=200, description="Free text shown in the AWS console, before the owner marker.")
]

NetworkInterfaceId = Annotated[str, Field(pattern=r"^eni-[0-9a-f]{8,17}$", description="An ENI ID, eni-….")]
InstanceId = Annotated[str, Field(pattern=r"^i-[0-9a-f]{8,17}$", description="An EC2 instance ID, i-….")]
NodeName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        description="A Kubernetes Node whose providerID (aws:///<az>/<instance-id>) names the instance; "
        "its primary ENI is used.",
    ),
]


class Condition(CamelModel):
    """A Kubernetes-convention condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    observed_generation: int | None = None
    last_transition_time: str | None = None


class CommonSpec(CamelModel):
    deletion_policy: DeletionPolicy = Field(
        default="Delete",
        description="Delete removes the AWS resource with the custom resource; Orphan leaves it in AWS.",
    )
    region: Region | None = None
    description: Description | None = None
    tags: Tags | None = None


class CommonStatus(CamelModel):
    phase: Phase | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)

    def condition(self, condition_type: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == condition_type), None)


def ready_condition(status: CommonStatus | Mapping[str, Any]) -> Condition | None:
    """The Ready condition of a typed status or of a raw status mapping (as kopf hands it over)."""
    if isinstance(status, CommonStatus):
        return status.condition("Ready")
    raw = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if raw is None:
        return None
    # As written, without validation: a half-written condition must not stop the reader.
    return Condition.model_construct(
        type="Ready",
        status=raw.get("status", "Unknown"),
        reason=raw.get("reason", ""),
        message=raw.get("message", ""),
        observed_generation=raw.get("observedGeneration"),
        last_transition_time=raw.get("lastTransitionTime"),
    )


def immutable_once_set(field: str) -> dict[str, str]:
    """A CEL transition rule: the optional field may be neither added, removed nor changed."""
    return {
        "rule": f"has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})",
        "message": f"{field} is immutable: create a new resource instead",
        "fieldPath": f".{field}",
        "reason": "FieldValueForbidden",
    }


def exactly_one_of(*fields: str, what: str) -> dict[str, str]:
    """A CEL rule: exactly one of the optional fields is set."""
    count = " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields)
    return {"rule": f"{count} == 1", "message": f"{what}: set exactly one of {', '.join(fields)}"}
