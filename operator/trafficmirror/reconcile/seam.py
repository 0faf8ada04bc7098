"""The seam between the kopf handlers and the reconcilers: one typed Protocol that each kind's
reconciler implements, and the request it is given. The handlers know nothing of a kind beyond it.

Per kind: `observed_id` names the AWS resource in the shared Describe (`reconcile.observed.observe`
makes it, one batched look per kind and region), `in_sync(request, observed)` says whether that
observation still matches the spec and status (no AWS call; it takes the request, not only spec and
status, because the tags AWS should hold name the owner), `reconcile` observes, creates and updates,
`delete` deletes. A stored spec that no longer validates becomes a Failed outcome, not a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import ValidationError

from trafficmirror.api import CommonSpec, CommonStatus
from trafficmirror.reconcile.common import INVALID_SPEC, Outcome, Owner, failed
from trafficmirror.reconcile.context import ReconcileContext

SpecT = TypeVar("SpecT", bound=CommonSpec)
StatusT = TypeVar("StatusT", bound=CommonStatus)
ObservedT = TypeVar("ObservedT", contravariant=True)


@dataclass(frozen=True)
class Dependency:
    """What a session needs to know of its MirrorTarget or MirrorFilter (from the operator's index)."""

    name: str
    phase: str | None
    aws_id: str | None
    reason: str | None = None
    network_interface_id: str | None = None
    endpoint_type: str | None = None  # targets: NetworkInterface | NetworkLoadBalancer | GatewayLoadBalancerEndpoint
    instance_type: str | None = None  # targets: the instance type behind the ENI
    availability_zone: str | None = None  # targets: the ENI's Availability Zone
    labels: tuple[tuple[str, str], ...] = ()  # targets: the labels a session's targetSelector matches


@dataclass(frozen=True)
class ClusterFacts:
    """What the cluster (kopf's in-memory indexes) says about the object's neighbours."""

    target: Dependency | None = None  # a session's MirrorTarget
    mirror_filter: Dependency | None = None  # a session's MirrorFilter
    users: tuple[str, ...] = ()  # the sessions that reference a target or filter
    # A session with targetSelector: the MirrorTargets its labels select, and the source ENIs the
    # cluster's sessions (other than this one) mirror to each target ID.
    pool: tuple[Dependency, ...] | None = None
    pool_sources: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Request(Generic[SpecT, StatusT]):
    owner: Owner
    spec: SpecT
    status: StatusT
    annotations: Mapping[str, str] = field(default_factory=dict)
    facts: ClusterFacts = ClusterFacts()


class Reconciler(Protocol[SpecT, StatusT, ObservedT]):
    """One kind's decisions. `ObservedT` is what the shared Describe returns for one resource."""

    @property
    def kind(self) -> str: ...  # MirrorTarget | MirrorFilter | MirrorSession

    @property
    def snapshot_kind(self) -> str: ...  # targets | filters | sessions: the shared Describe that observes it

    @property
    def spec_model(self) -> type[SpecT]: ...

    @property
    def status_model(self) -> type[StatusT]: ...

    def observed_id(self, status: StatusT) -> str | None: ...

    def in_sync(self, request: Request[SpecT, StatusT], observed: ObservedT | None) -> bool: ...

    def reconcile(self, request: Request[SpecT, StatusT], ctx: ReconcileContext) -> Outcome: ...

    def delete(self, request: Request[SpecT, StatusT], ctx: ReconcileContext) -> Outcome | None: ...


def parse_request(
    reconciler: Reconciler[SpecT, StatusT, Any],
    owner: Owner,
    spec: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    annotations: Mapping[str, str] | None = None,
    facts: ClusterFacts | None = None,
) -> Request[SpecT, StatusT] | Outcome:
    """The typed request, or a Failed outcome naming the fields when the stored spec is invalid
    (a CRD older than the operator, an object written with validation off)."""
    try:
        typed_spec = reconciler.spec_model.model_validate(dict(spec))
    except ValidationError as error:
        return failed(INVALID_SPEC, f"the stored spec is invalid: {validation_message(error)}")
    try:
        typed_status = reconciler.status_model.model_validate(dict(status or {}))
    except ValidationError:
        typed_status = reconciler.status_model()  # our own writing, from an older version: start afresh
    return Request(owner, typed_spec, typed_status, dict(annotations or {}), facts or ClusterFacts())


def validation_message(error: ValidationError) -> str:
    """pydantic's errors as "spec.a.b[0].c: message; …", in the spec's own (camelCase) names."""
    parts = []
    for item in error.errors():
        path = "spec"
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        parts.append(f"{path}: {item['msg']}")
    return "; ".join(parts)
