"""The custom resources' API: pydantic models of spec and status, and their CRD metadata."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from trafficmirror.api.common import (
    API_VERSION,
    GROUP,
    VERSION,
    CommonSpec,
    CommonStatus,
    Condition,
    Phase,
    ready_condition,
)
from trafficmirror.api.filter import FilterRule, MirrorFilterSpec, MirrorFilterStatus, PortRange
from trafficmirror.api.session import EstimatedCost, MirrorSessionSpec, MirrorSessionStatus, MirrorSource
from trafficmirror.api.target import MirrorTargetSpec, MirrorTargetStatus


@dataclass(frozen=True)
class Kind:
    """Everything that names one custom resource kind, in Kubernetes and in AWS."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    aws_id_field: str  # camelCase key in status that holds the AWS ID

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


MIRROR_TARGET = Kind(
    "MirrorTarget",
    "mirrortargets",
    ("mtarget", "mtt"),
    MirrorTargetSpec,
    MirrorTargetStatus,
    "trafficMirrorTargetId",
)
MIRROR_FILTER = Kind(
    "MirrorFilter",
    "mirrorfilters",
    ("mfilter", "mtf"),
    MirrorFilterSpec,
    MirrorFilterStatus,
    "trafficMirrorFilterId",
)
MIRROR_SESSION = Kind(
    "MirrorSession",
    "mirrorsessions",
    ("msession", "mts"),
    MirrorSessionSpec,
    MirrorSessionStatus,
    "trafficMirrorSessionId",
)
KINDS = (MIRROR_TARGET, MIRROR_FILTER, MIRROR_SESSION)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "MIRROR_FILTER",
    "MIRROR_SESSION",
    "MIRROR_TARGET",
    "VERSION",
    "CommonSpec",
    "CommonStatus",
    "Condition",
    "EstimatedCost",
    "FilterRule",
    "Kind",
    "MirrorFilterSpec",
    "MirrorFilterStatus",
    "MirrorSessionSpec",
    "MirrorSessionStatus",
    "MirrorSource",
    "MirrorTargetSpec",
    "MirrorTargetStatus",
    "Phase",
    "PortRange",
    "ready_condition",
]
