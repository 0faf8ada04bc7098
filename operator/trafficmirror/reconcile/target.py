"""MirrorTarget → TrafficMirrorTarget. AWS cannot modify a target: a changed endpoint means a new
target, the sessions re-pointed to it, and only then the old one deleted."""

from __future__ import annotations

from typing import Any

from trafficmirror.api import MirrorTargetSpec
from trafficmirror.aws.ec2 import AwsTarget, Ec2Mirror
from trafficmirror.aws.errors import AwsError, ErrorClass
from trafficmirror.reconcile.common import (
    AWS_ID_ANNOTATION,
    CREATE_INTENT_ANNOTATION,
    ConditionUpdate,
    Event,
    Outcome,
    Owner,
    client_token,
    failed,
    is_owned_by,
    owner_description,
    owner_tags,
    pending,
    ready,
)
from trafficmirror.reconcile.context import (
    Decided,
    ReconcileContext,
    create_once,
    outcome_for_aws_error,
    recorded_resource,
)
from trafficmirror.reconcile.datapath import check_service, condition_of
from trafficmirror.reconcile.endpoints import Unresolvable, check_support, resolve_network_interface

AWS_KIND = "TrafficMirrorTarget"
INSTANCE_TYPE_CONDITION = "InstanceTypeSupported"
REPLACEMENT_RETRY_SECONDS = 3.0
DATA_PATH_RETRY_SECONDS = 15.0


def endpoint_of(target: AwsTarget) -> dict[str, str]:
    values = {
        "NetworkInterfaceId": target.network_interface_id,
        "NetworkLoadBalancerArn": target.network_load_balancer_arn,
        "GatewayLoadBalancerEndpointId": target.gateway_load_balancer_endpoint_id,
    }
    return {k: v for k, v in values.items() if v}


def desired_endpoint(spec: MirrorTargetSpec, network_interface_id: str | None) -> dict[str, str]:
    if spec.network_load_balancer_arn:
        return {"NetworkLoadBalancerArn": spec.network_load_balancer_arn}
    if spec.gateway_load_balancer_endpoint_id:
        return {"GatewayLoadBalancerEndpointId": spec.gateway_load_balancer_endpoint_id}
    assert network_interface_id is not None
    return {"NetworkInterfaceId": network_interface_id}


def reconcile_target(
    owner: Owner,
    spec: MirrorTargetSpec,
    status: dict[str, Any],
    annotations: dict[str, str],
    ctx: ReconcileContext,
) -> Outcome:
    aws = ctx.aws_for_region(spec.region)
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
    extra_conditions, events, instance_type = _instance_type_warning(network_interface_id, status, ctx)

    current_id: str | None = status.get("trafficMirrorTargetId") or annotations.get(AWS_ID_ANNOTATION) or spec.adopt_id
    previous_ids: list[str] = list(status.get("previousTargetIds") or [])
    try:
        found = recorded_resource(current_id, spec.adopt_id, AWS_KIND, aws.describe_targets, events)
        if found is not None and endpoint_of(found) != endpoint:
            events.append(
                Event("Normal", "Replacing", f"{found.target_id} points at {endpoint_of(found)}; replacing it")
            )
            previous_ids.append(found.target_id)
            found = None
        if found is None:
            found = create_once(
                aws_kind=AWS_KIND,
                token=client_token(owner.uid, {"endpoint": endpoint, "replaces": previous_ids}),
                annotations=annotations,
                find_orphan=lambda: _find_orphan(aws, owner, endpoint, exclude=previous_ids),
                create=lambda token: aws.create_target(
                    client_token=token,
                    description=owner_description(owner, spec.description),
                    tags=owner_tags(owner, spec.tags),
                    network_interface_id=endpoint.get("NetworkInterfaceId"),
                    network_load_balancer_arn=endpoint.get("NetworkLoadBalancerArn"),
                    gateway_load_balancer_endpoint_id=endpoint.get("GatewayLoadBalancerEndpointId"),
                ),
                id_of=lambda target: target.target_id,
                events=events,
            )
        current_id = found.target_id
        remaining = _delete_unused(aws, previous_ids)
    except AwsError as error:
        return outcome_for_aws_error(error, previousTargetIds=previous_ids)
    except Decided as decided:
        return decided.outcome

    outcome = ready(f"TrafficMirrorTarget {current_id} is ready")
    if remaining:
        outcome.conditions.append(
            ConditionUpdate("Replaced", "False", "WaitingForSessions", f"{', '.join(remaining)} still used by sessions")
        )
        outcome.retry_after = REPLACEMENT_RETRY_SECONDS
    outcome.conditions += extra_conditions
    if data_path is not None:
        outcome.conditions.append(condition_of(data_path))
        if not data_path.ready:
            retry = outcome.retry_after
            outcome.retry_after = min(retry, DATA_PATH_RETRY_SECONDS) if retry is not None else DATA_PATH_RETRY_SECONDS
    outcome.events += events
    outcome.status_fields.update(
        trafficMirrorTargetId=current_id,
        networkInterfaceId=network_interface_id,
        instanceType=instance_type,
        previousTargetIds=remaining or None,
    )
    outcome.annotations.update({AWS_ID_ANNOTATION: current_id, CREATE_INTENT_ANNOTATION: None})
    return outcome


def _instance_type_warning(
    network_interface_id: str | None, status: dict[str, Any], ctx: ReconcileContext
) -> tuple[list[ConditionUpdate], list[Event], str | None]:
    """AWS accepts a target on any instance, but the field report saw sessions to a t2 target refused."""
    if network_interface_id is None:
        return [], [], None
    aws = ctx.aws_for_region(None)
    check = check_support(aws, network_interface_id, ctx.support_table, frozenset(ctx.remembered_rejections))
    if check.decision is None:
        condition = ConditionUpdate(
            INSTANCE_TYPE_CONDITION,
            "Unknown",
            "NotAnInstance",
            f"{network_interface_id} is not attached to an instance",
        )
        return [condition], [], None
    if not check.unsupported:
        return (
            [ConditionUpdate(INSTANCE_TYPE_CONDITION, "True", "Supported", f"{check.instance_type} is supported")],
            [],
            check.instance_type,
        )
    message = (
        f"target {network_interface_id} is on instance {check.instance_id} of type {check.instance_type}: "
        f"{check.decision.reason}; AWS accepts the target but may refuse sessions to it"
        + (f" (use e.g. {check.decision.alternative})" if check.decision.alternative else "")
    )
    events = []
    if status.get("instanceType") != check.instance_type:
        events.append(Event("Warning", "DoubtfulInstanceType", message))
    return (
        [ConditionUpdate(INSTANCE_TYPE_CONDITION, "False", "DoubtfulInstanceType", message)],
        events,
        check.instance_type,
    )


def _find_orphan(aws: Ec2Mirror, owner: Owner, endpoint: dict[str, str], exclude: list[str]) -> AwsTarget | None:
    for target in aws.describe_targets():
        owned = target.target_id not in exclude and is_owned_by(target.tags, target.description, owner)
        if owned and endpoint_of(target) == endpoint:
            return target
    return None


def _delete_unused(aws: Ec2Mirror, target_ids: list[str]) -> list[str]:
    """Delete replaced targets; the ones sessions still use stay until they have moved."""
    remaining = []
    for target_id in target_ids:
        try:
            aws.delete_target(target_id)
        except AwsError as error:
            if error.error_class is ErrorClass.IN_USE:
                remaining.append(target_id)
            elif error.error_class is not ErrorClass.NOT_FOUND:
                raise
    return remaining


def delete_target(
    spec: MirrorTargetSpec, status: dict[str, Any], ctx: ReconcileContext, sessions_using: list[str]
) -> Outcome | None:
    """None when the AWS side is gone (or orphaned by policy); an Outcome to wait otherwise."""
    if spec.deletion_policy == "Orphan":
        return None
    if sessions_using:
        return pending(
            "WaitingForSessions",
            f"still used by MirrorSession {', '.join(sorted(sessions_using))}",
            retry_after=5,
        )
    aws = ctx.aws_for_region(spec.region)
    ids = [i for i in [status.get("trafficMirrorTargetId"), *(status.get("previousTargetIds") or [])] if i]
    try:
        remaining = _delete_unused(aws, ids)
    except AwsError as error:
        return outcome_for_aws_error(error)
    if remaining:
        return pending(
            "WaitingForSessions",
            f"{', '.join(remaining)} still used by mirror sessions in AWS",
            retry_after=5,
        )
    return None
