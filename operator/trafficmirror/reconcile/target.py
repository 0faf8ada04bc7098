"""MirrorTarget → TrafficMirrorTarget. AWS cannot modify a target: a changed endpoint means a new
target, the sessions re-pointed to it, and only then the old one deleted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from trafficmirror.api import MirrorTargetSpec, MirrorTargetStatus
from trafficmirror.aws.ec2 import AwsTarget, Endpoint
from trafficmirror.aws.errors import AwsError, ErrorClass
from trafficmirror.reconcile.common import (
    AWS_ID_ANNOTATION,
    CREATE_INTENT_ANNOTATION,
    ConditionUpdate,
    Event,
    Outcome,
    Owner,
    client_token,
    deleting,
    failed,
    is_owned_by,
    owner_description,
    owner_tags,
    pending,
    ready,
    tag_changes,
)
from trafficmirror.reconcile.context import (
    Decided,
    ReconcileContext,
    create_once,
    deleting_outcome_for_aws_error,
    outcome_for_aws_error,
    recorded_resource,
    refuse_foreign,
    sync_tags,
)
from trafficmirror.reconcile.datapath import check_service, condition_of
from trafficmirror.reconcile.endpoints import SupportCheck, Unresolvable, check_support, resolve_network_interface
from trafficmirror.reconcile.observed import Observed
from trafficmirror.reconcile.ports import TargetAws
from trafficmirror.reconcile.seam import Request

AWS_KIND = "TrafficMirrorTarget"
INSTANCE_TYPE_CONDITION = "InstanceTypeSupported"
REPLACED_CONDITION = "Replaced"
REPLACEMENT_RETRY_SECONDS = 3.0
DATA_PATH_RETRY_SECONDS = 15.0
# A replaced target still used after this long waits for sessions that cannot move (e.g. AWS refuses
# the new target): it is looked at once a resync period, not every few seconds.
REPLACEMENT_PATIENCE_SECONDS = 30.0
TargetRequest = Request[MirrorTargetSpec, MirrorTargetStatus]


def desired_endpoint(spec: MirrorTargetSpec, network_interface_id: str | None) -> Endpoint:
    if spec.network_load_balancer_arn:
        return Endpoint(network_load_balancer_arn=spec.network_load_balancer_arn)
    if spec.gateway_load_balancer_endpoint_id:
        return Endpoint(gateway_load_balancer_endpoint_id=spec.gateway_load_balancer_endpoint_id)
    return Endpoint(network_interface_id=network_interface_id)


def endpoint_type(endpoint: Endpoint) -> str:
    if endpoint.network_load_balancer_arn:
        return "NetworkLoadBalancer"
    if endpoint.gateway_load_balancer_endpoint_id:
        return "GatewayLoadBalancerEndpoint"
    return "NetworkInterface"


@dataclass(frozen=True)
class TargetReconciler:
    kind: str = "MirrorTarget"
    snapshot_kind: str = "targets"

    @property
    def spec_model(self) -> type[MirrorTargetSpec]:
        return MirrorTargetSpec

    @property
    def status_model(self) -> type[MirrorTargetStatus]:
        return MirrorTargetStatus

    def observed_id(self, status: MirrorTargetStatus) -> str | None:
        return status.traffic_mirror_target_id

    def in_sync(self, request: TargetRequest, observed: Observed[AwsTarget] | None) -> bool:
        """AWS still holds the recorded target, on the recorded endpoint, with the spec's tags, and
        nothing (a replaced target, a resized instance) is left to settle."""
        spec, status = request.spec, request.status
        # No endpointType yet: written by an older version; one reconcile records it for the sessions.
        if observed is None or status.previous_target_ids or status.endpoint_type is None:
            return False
        # A target on a Service's NLB is looked at every period: listeners and target health change
        # outside Kubernetes, and DataPathReady must follow them.
        if spec.service_ref is not None:
            return False
        target = observed.resource
        network_interface_id = spec.network_interface_id or status.network_interface_id
        if status.endpoint_type == "NetworkInterface" and status.availability_zone is None:
            return False  # recorded by an older version: one reconcile records the zone for pools
        if target.endpoint != desired_endpoint(spec, network_interface_id):
            return False
        if observed.instance_type_known and observed.instance_type != status.instance_type:
            return False
        return tag_changes(owner_tags(request.owner, spec.tags), target.tags).empty

    def reconcile(self, request: TargetRequest, ctx: ReconcileContext) -> Outcome:
        return reconcile_target(request, ctx)

    def delete(self, request: TargetRequest, ctx: ReconcileContext) -> Outcome | None:
        return delete_target(request, ctx)


def reconcile_target(request: TargetRequest, ctx: ReconcileContext) -> Outcome:
    owner, spec, status, annotations = request.owner, request.spec, request.status, dict(request.annotations)
    aws: TargetAws = ctx.aws_for_region(spec.region)
    current_id = status.traffic_mirror_target_id or annotations.get(AWS_ID_ANNOTATION) or spec.adopt_id
    previous_ids: list[str] = list(status.previous_target_ids or [])
    events: list[Event] = []
    data_path = None
    if spec.service_ref is not None:
        try:
            data_path = check_service(owner.namespace, spec.service_ref.name, spec.region, ctx)
        except AwsError as error:
            return outcome_for_aws_error(error)
        if data_path.load_balancer_arn is None:
            waiting = pending(data_path.reason, data_path.message, retry_after=DATA_PATH_RETRY_SECONDS)
            waiting.conditions.append(condition_of(data_path))
            return waiting
        # From here on the target is the Service's NLB.
        spec = spec.model_copy(update={"network_load_balancer_arn": data_path.load_balancer_arn})
    network_interface_id: str | None = None
    try:
        if not (spec.network_load_balancer_arn or spec.gateway_load_balancer_endpoint_id):
            try:
                network_interface_id = resolve_network_interface(
                    aws,
                    network_interface_id=spec.network_interface_id,
                    instance_id=spec.instance_id,
                    node_name=spec.node_name,
                    node_provider_ids=ctx.node_provider_ids,
                )
            except Unresolvable as problem:
                if problem.terminal:
                    return failed(problem.reason, problem.message)
                return pending(problem.reason, problem.message, retry_after=10)
        endpoint = desired_endpoint(spec, network_interface_id)
        type_conditions, type_events, support = _instance_type_check(aws, network_interface_id, status, ctx)
        instance_type = support.instance_type if support is not None else None
        availability_zone = support.availability_zone if support is not None else None
        events += type_events
        recorded = recorded_resource(current_id, spec.adopt_id, AWS_KIND, aws.describe_targets, events)
        found, gone_id = recorded.resource, recorded.gone_id
        if found is not None:
            refuse_foreign(AWS_KIND, found.target_id, found.tags, owner, ctx.live_owners)
        if found is not None and found.endpoint != endpoint:
            events.append(Event("Normal", "Replacing", f"{found.target_id} points at {found.endpoint}; replacing it"))
            previous_ids.append(found.target_id)
            found = None
        if found is None:
            found = create_once(
                aws_kind=AWS_KIND,
                token=client_token(owner.uid, {"endpoint": str(endpoint), "replaces": previous_ids, "gone": gone_id}),
                annotations=annotations,
                find_orphan=lambda: _find_orphan(aws, owner, endpoint, exclude=[*previous_ids, gone_id]),
                create=lambda token: aws.create_target(
                    endpoint,
                    client_token=token,
                    description=owner_description(owner, spec.description),
                    tags=owner_tags(owner, spec.tags),
                ),
                id_of=lambda target: target.target_id,
                events=events,
            )
        current_id = found.target_id
        sync_tags(aws, current_id, owner_tags(owner, spec.tags), found.tags, events)
        remaining = _delete_unused(aws, previous_ids)
    except AwsError as error:
        return outcome_for_aws_error(error, previousTargetIds=previous_ids or None)
    except Decided as decided:
        return decided.outcome

    outcome = ready(f"TrafficMirrorTarget {current_id} is ready")
    if remaining:
        outcome.conditions.append(
            ConditionUpdate(
                REPLACED_CONDITION, "False", "WaitingForSessions", f"{', '.join(remaining)} still used by sessions"
            )
        )
        outcome.retry_after = None if _waited_long(status) else REPLACEMENT_RETRY_SECONDS
    else:
        outcome.clear_conditions.append(REPLACED_CONDITION)
    if type_conditions:
        outcome.conditions += type_conditions
    else:
        outcome.clear_conditions.append(INSTANCE_TYPE_CONDITION)
    if data_path is not None:
        outcome.conditions.append(condition_of(data_path))
        if not data_path.ready:
            retry = outcome.retry_after
            outcome.retry_after = min(retry, DATA_PATH_RETRY_SECONDS) if retry is not None else DATA_PATH_RETRY_SECONDS
    outcome.events += events
    outcome.status_fields.update(
        trafficMirrorTargetId=current_id,
        endpointType=endpoint_type(endpoint),
        networkInterfaceId=network_interface_id,
        instanceType=instance_type,
        availabilityZone=availability_zone,
        previousTargetIds=remaining or None,
    )
    outcome.annotations.update({AWS_ID_ANNOTATION: current_id, CREATE_INTENT_ANNOTATION: None})
    return outcome


def _waited_long(status: MirrorTargetStatus, now: datetime | None = None) -> bool:
    replaced = status.condition(REPLACED_CONDITION)
    if replaced is None or replaced.status != "False" or not replaced.last_transition_time:
        return False
    since = datetime.strptime(replaced.last_transition_time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return ((now or datetime.now(UTC)) - since).total_seconds() >= REPLACEMENT_PATIENCE_SECONDS


def _instance_type_check(
    aws: TargetAws, network_interface_id: str | None, status: MirrorTargetStatus, ctx: ReconcileContext
) -> tuple[list[ConditionUpdate], list[Event], SupportCheck | None]:
    """AWS accepts a target on any instance, but the field report saw sessions to a t2 target refused."""
    if network_interface_id is None:
        return [], [], None
    check = check_support(aws, network_interface_id, ctx.support_table, frozenset(ctx.remembered_rejections))
    if check.decision is None:
        condition = ConditionUpdate(
            INSTANCE_TYPE_CONDITION,
            "Unknown",
            "NotAnInstance",
            f"{network_interface_id} is not attached to an instance",
        )
        return [condition], [], check
    if not check.unsupported:
        return (
            [ConditionUpdate(INSTANCE_TYPE_CONDITION, "True", "Supported", f"{check.instance_type} is supported")],
            [],
            check,
        )
    message = (
        f"target {network_interface_id} is on instance {check.instance_id} of type {check.instance_type}: "
        f"{check.decision.reason}; AWS accepts the target but may refuse sessions to it"
        + (f" (use e.g. {check.decision.alternative})" if check.decision.alternative else "")
    )
    events = []
    if status.instance_type != check.instance_type:
        events.append(Event("Warning", "DoubtfulInstanceType", message))
    return (
        [ConditionUpdate(INSTANCE_TYPE_CONDITION, "False", "DoubtfulInstanceType", message)],
        events,
        check,
    )


def _find_orphan(aws: TargetAws, owner: Owner, endpoint: Endpoint, exclude: list[str | None]) -> AwsTarget | None:
    for target in aws.describe_targets():
        owned = target.target_id not in exclude and is_owned_by(target.tags, target.description, owner)
        if owned and target.endpoint == endpoint:
            return target
    return None


def _delete_unused(aws: TargetAws, target_ids: list[str]) -> list[str]:
    """Delete replaced targets that no session uses; a read first, so a wait costs no failed delete."""
    remaining = []
    for target_id in target_ids:
        if aws.describe_sessions(target_id=target_id):
            remaining.append(target_id)
            continue
        try:
            aws.delete_target(target_id)
        except AwsError as error:
            if error.error_class is ErrorClass.IN_USE:
                remaining.append(target_id)
            elif error.error_class is not ErrorClass.NOT_FOUND:
                raise
    return remaining


def delete_target(request: TargetRequest, ctx: ReconcileContext) -> Outcome | None:
    """None when the AWS side is gone (or orphaned by policy); a Deleting outcome to wait otherwise."""
    spec, status = request.spec, request.status
    if spec.deletion_policy == "Orphan":
        return None
    if request.facts.users:
        return deleting(
            "WaitingForSessions",
            f"still used by MirrorSession {', '.join(sorted(request.facts.users))}",
            retry_after=5,
        )
    aws: TargetAws = ctx.aws_for_region(spec.region)
    ids = [i for i in [status.traffic_mirror_target_id, *(status.previous_target_ids or [])] if i]
    try:
        remaining = _delete_unused(aws, ids)
    except AwsError as error:
        return deleting_outcome_for_aws_error(error)
    if remaining:
        return deleting(
            "WaitingForSessions",
            f"{', '.join(remaining)} still used by mirror sessions in AWS",
            retry_after=5,
        )
    return None
