"""MirrorSession → TrafficMirrorSession.

A source on an instance type AWS cannot mirror fails here, before AWS is asked, and never loops:
it recovers when the spec or the instance type changes. Target and filter changes follow with
ModifyTrafficMirrorSession; only a new source ENI (not modifiable in AWS) re-creates the session.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from trafficmirror.api import MirrorSessionSpec
from trafficmirror.aws.ec2 import AwsSession, Ec2Mirror, SessionParams
from trafficmirror.aws.errors import AwsError, ErrorClass
from trafficmirror.aws.instance_support import unsupported_message
from trafficmirror.reconcile.common import (
    AWS_ID_ANNOTATION,
    CREATE_INTENT_ANNOTATION,
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
from trafficmirror.reconcile.endpoints import (
    SupportCheck,
    Unresolvable,
    check_support,
    resolve_network_interface,
)

AWS_KIND = "TrafficMirrorSession"
UNSUPPORTED = "UnsupportedInstanceType"
DEPENDENCY_RETRY_SECONDS = 3.0
_ENI_IN_MESSAGE = re.compile(r"(eni-[0-9a-f]+)")


@dataclass(frozen=True)
class Dependency:
    """What a session needs to know of its MirrorTarget or MirrorFilter (from the operator's index)."""

    name: str
    phase: str | None
    aws_id: str | None
    reason: str | None = None
    network_interface_id: str | None = None


def session_modifications(actual: AwsSession, desired: SessionParams) -> tuple[dict[str, Any], list[str]]:
    """The ModifyTrafficMirrorSession arguments that bring `actual` to `desired`, and the fields to remove."""
    changes: dict[str, Any] = {}
    remove: list[str] = []
    if actual.target_id != desired.target_id:
        changes["TrafficMirrorTargetId"] = desired.target_id
    if actual.filter_id != desired.filter_id:
        changes["TrafficMirrorFilterId"] = desired.filter_id
    if actual.session_number != desired.session_number:
        changes["SessionNumber"] = desired.session_number
    # An omitted VNI is AWS's choice: keep whatever it assigned.
    if desired.virtual_network_id is not None and actual.virtual_network_id != desired.virtual_network_id:
        changes["VirtualNetworkId"] = desired.virtual_network_id
    if actual.packet_length != desired.packet_length:
        if desired.packet_length is None:
            remove.append("packet-length")
        else:
            changes["PacketLength"] = desired.packet_length
    if actual.description != desired.description:
        changes["Description"] = desired.description
    return changes, remove


def _waiting_for(kind: str, dependency: Dependency | None, ref_name: str) -> Outcome | None:
    if dependency is not None and dependency.phase == "Ready" and dependency.aws_id:
        return None
    reason = f"WaitingFor{kind}"
    if dependency is None:
        return pending(reason, f"Mirror{kind} {ref_name} does not exist", retry_after=DEPENDENCY_RETRY_SECONDS)
    detail = f" ({dependency.phase}: {dependency.reason})" if dependency.phase else ""
    return pending(reason, f"Mirror{kind} {ref_name} is not ready{detail}", retry_after=DEPENDENCY_RETRY_SECONDS)


def reconcile_session(
    owner: Owner,
    spec: MirrorSessionSpec,
    status: dict[str, Any],
    annotations: dict[str, str],
    ctx: ReconcileContext,
    target: Dependency | None,
    mirror_filter: Dependency | None,
) -> Outcome:
    aws = ctx.aws_for_region(spec.region)
    try:
        source_eni = resolve_network_interface(
            aws,
            network_interface_id=spec.source.network_interface_id,
            instance_id=spec.source.instance_id,
            node_name=spec.source.node_name,
            node_provider_ids=ctx.node_provider_ids,
        )
        support = check_support(aws, source_eni, ctx.support_table, frozenset(ctx.remembered_rejections))
    except Unresolvable as problem:
        return (
            failed(problem.reason, problem.message)
            if problem.terminal
            else pending(problem.reason, problem.message, 10)
        )
    except AwsError as error:
        return outcome_for_aws_error(error)
    source_fields = {"sourceNetworkInterfaceId": source_eni, "sourceInstanceType": support.instance_type}
    if support.unsupported:
        assert support.decision is not None
        message = unsupported_message(
            source_eni, support.instance_id or "", support.instance_type or "", support.decision
        )
        return failed(UNSUPPORTED, message, **source_fields)
    waiting = _waiting_for("Target", target, spec.target_ref.name) or _waiting_for(
        "Filter", mirror_filter, spec.filter_ref.name
    )
    if waiting is not None:
        waiting.status_fields.update(source_fields)
        return waiting
    assert target is not None and target.aws_id and mirror_filter is not None and mirror_filter.aws_id
    desired = SessionParams(
        network_interface_id=source_eni,
        target_id=target.aws_id,
        filter_id=mirror_filter.aws_id,
        session_number=spec.session_number,
        virtual_network_id=spec.virtual_network_id,
        packet_length=spec.packet_length,
        description=owner_description(owner, spec.description),
    )
    current_id: str | None = status.get("trafficMirrorSessionId") or annotations.get(AWS_ID_ANNOTATION) or spec.adopt_id
    events: list[Event] = []
    try:
        actual = recorded_resource(current_id, spec.adopt_id, AWS_KIND, aws.describe_sessions, events)
        if actual is not None and actual.network_interface_id != source_eni:
            # AWS cannot move a session to another source ENI: delete and create anew.
            _delete_quietly(aws, actual.session_id)
            events.append(Event("Normal", "Recreating", f"source changed to {source_eni}; replacing {current_id}"))
            actual = None
        if actual is None:
            if _still_refused(aws, ctx, status, target.network_interface_id):
                return failed(UNSUPPORTED, status_message(status), **_refusal_fields(status), **source_fields)
            actual = create_once(
                aws_kind=AWS_KIND,
                token=client_token(owner.uid, {"params": asdict(desired), "replaces": current_id}),
                annotations=annotations,
                find_orphan=lambda: _find_orphan(aws, owner, source_eni),
                create=lambda token: aws.create_session(desired, client_token=token, tags=owner_tags(owner, spec.tags)),
                id_of=lambda session: session.session_id,
                events=events,
                **source_fields,
            )
        changes, remove = session_modifications(actual, desired)
        if changes or remove:
            actual = aws.modify_session(actual.session_id, changes, remove)
            events.append(Event("Normal", "Updated", f"modified {', '.join([*changes, *remove])}"))
    except AwsError as error:
        if error.error_class is ErrorClass.UNSUPPORTED_INSTANCE:
            return _rejected_instance(aws, ctx, error, support, source_fields)
        return outcome_for_aws_error(error, **source_fields)
    except Decided as decided:
        return decided.outcome

    # An ENI target receives the datagrams from the source ENI's primary address; behind a load
    # balancer the outer source may be the balancer's, so the capture agent cannot check it.
    addresses = [support.private_ip_address] if target.network_interface_id and support.private_ip_address else None
    outcome = ready(
        f"mirroring {source_eni} to {target.aws_id} with VNI {actual.virtual_network_id}",
        sourceAddresses=addresses,
        trafficMirrorSessionId=actual.session_id,
        virtualNetworkId=actual.virtual_network_id,
        trafficMirrorTargetId=actual.target_id,
        trafficMirrorFilterId=actual.filter_id,
        rejectedNetworkInterfaceId=None,
        rejectedInstanceType=None,
        **source_fields,
    )
    outcome.events += events
    outcome.annotations.update({AWS_ID_ANNOTATION: actual.session_id, CREATE_INTENT_ANNOTATION: None})
    return outcome


def _rejected_instance(
    aws: Ec2Mirror,
    ctx: ReconcileContext,
    error: AwsError,
    source: SupportCheck,
    status_fields: dict[str, Any],
) -> Outcome:
    """AWS's NetworkInterfaceNotSupported is authoritative: name the ENI it refused and remember its type."""
    match = _ENI_IN_MESSAGE.search(error.message)
    refused = match.group(1) if match else source.network_interface_id
    side = "source" if refused == source.network_interface_id else "target"
    refused_type = source.instance_type if side == "source" else _current_type(aws, ctx, refused)
    if side == "source" and refused_type:
        ctx.remembered_rejections.add(refused_type)
    return failed(
        UNSUPPORTED,
        f"AWS refused the session: {error.message} ({error.code}); the {side} {refused}"
        + (f" is a {refused_type}, which" if refused_type else "")
        + " must be an instance type that supports VPC Traffic Mirroring (Nitro-based, e.g. t3, m5, c5)",
        rejectedNetworkInterfaceId=refused,
        rejectedInstanceType=refused_type,
        **status_fields,
    )


def _current_type(aws: Ec2Mirror, ctx: ReconcileContext, network_interface_id: str) -> str | None:
    return check_support(aws, network_interface_id, ctx.support_table, frozenset()).instance_type


def _still_refused(aws: Ec2Mirror, ctx: ReconcileContext, status: dict[str, Any], target_eni: str | None) -> bool:
    """A target AWS refused stays refused until its instance type changes: do not ask AWS again before."""
    refused, refused_type = status.get("rejectedNetworkInterfaceId"), status.get("rejectedInstanceType")
    if not refused or refused != target_eni or not refused_type:
        return False
    return bool(_current_type(aws, ctx, refused) == refused_type)


def _find_orphan(aws: Ec2Mirror, owner: Owner, source_eni: str) -> AwsSession | None:
    # At most three sessions per source ENI: the ENI filter finds ours in one small call.
    sessions = aws.describe_sessions(network_interface_id=source_eni)
    return next((s for s in sessions if is_owned_by(s.tags, s.description, owner)), None)


def _delete_quietly(aws: Ec2Mirror, session_id: str) -> None:
    try:
        aws.delete_session(session_id)
    except AwsError as error:
        if error.error_class is not ErrorClass.NOT_FOUND:
            raise


def delete_session(spec: MirrorSessionSpec, status: dict[str, Any], ctx: ReconcileContext) -> Outcome | None:
    session_id = status.get("trafficMirrorSessionId")
    if spec.deletion_policy == "Orphan" or not session_id:
        return None
    try:
        _delete_quietly(ctx.aws_for_region(spec.region), session_id)
    except AwsError as error:
        return outcome_for_aws_error(error)
    return None


def status_message(status: dict[str, Any]) -> str:
    ready_condition: dict[str, Any] = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), {})
    return str(ready_condition.get("message", "AWS refused the session for the instance type"))


def _refusal_fields(status: dict[str, Any]) -> dict[str, Any]:
    return {k: status.get(k) for k in ("rejectedNetworkInterfaceId", "rejectedInstanceType")}
