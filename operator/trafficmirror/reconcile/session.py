"""MirrorSession → TrafficMirrorSession.

A source on an instance type AWS cannot mirror fails here, before AWS is asked, and never loops:
it recovers when the spec or the instance type changes. Target and filter changes follow with
ModifyTrafficMirrorSession; only a new source ENI (not modifiable in AWS) re-creates the session.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from trafficmirror.api import MirrorSessionSpec, MirrorSessionStatus, Phase, ready_condition
from trafficmirror.aws.ec2 import AwsSession, SessionChanges, SessionParams
from trafficmirror.aws.errors import AwsError, ErrorClass
from trafficmirror.aws.instance_support import unsupported_message
from trafficmirror.reconcile import timebox
from trafficmirror.reconcile.common import (
    AWS_ID_ANNOTATION,
    CREATE_INTENT_ANNOTATION,
    QUOTA_EXCEEDED,
    READY,
    SYNCED,
    UNSUPPORTED_INSTANCE_TYPE,
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
    tag_changes,
)
from trafficmirror.reconcile.context import (
    AWS_RETRY_SECONDS,
    Decided,
    ReconcileContext,
    RetryLater,
    create_once,
    deleting_outcome_for_aws_error,
    outcome_for_aws_error,
    recorded_resource,
    refuse_foreign,
    sync_tags,
)
from trafficmirror.reconcile.endpoints import (
    SupportCheck,
    Unresolvable,
    check_support,
    resolve_network_interface,
)
from trafficmirror.reconcile.observed import Observed
from trafficmirror.reconcile.placement import NETWORK_INTERFACE, Candidate, Choice
from trafficmirror.reconcile.ports import SessionAws
from trafficmirror.reconcile.seam import Dependency, Request

AWS_KIND = "TrafficMirrorSession"
TARGET_CHOSEN = "TargetChosen"  # sessions with targetSelector: which target of the pool, and why
WAITING_FOR_TARGET = "WaitingForTarget"
SOURCES_PER_TARGET_EXCEEDED = "TrafficMirrorSourcesPerTargetLimitExceeded"
POOL_RETRY_SECONDS = 15.0
UNSUPPORTED = UNSUPPORTED_INSTANCE_TYPE
DEPENDENCY_RETRY_SECONDS = 3.0
SESSIONS_PER_INTERFACE = 3  # AWS quota, not adjustable
# "For sessions with Network Load Balancer targets the default PacketLength will be set to 8500"
# (EC2 API reference, CreateTrafficMirrorSession).
NLB_DEFAULT_PACKET_LENGTH = 8500
_ENI_IN_MESSAGE = re.compile(r"(eni-[0-9a-f]+)")
SessionRequest = Request[MirrorSessionSpec, MirrorSessionStatus]
__all__ = ["Dependency", "SessionReconciler", "delete_session", "reconcile_session", "session_modifications"]


def effective_packet_length(packet_length: int | None, target_endpoint_type: str | None) -> int | None:
    """The packet length AWS applies: an omitted one is the whole packet, or 8500 to an NLB."""
    if packet_length is None and target_endpoint_type == "NetworkLoadBalancer":
        return NLB_DEFAULT_PACKET_LENGTH
    return packet_length


def session_modifications(
    actual: AwsSession, desired: SessionParams, target_endpoint_type: str | None = None
) -> SessionChanges:
    """What ModifyTrafficMirrorSession must change to bring `actual` to `desired`, effective values compared."""
    wanted_length = effective_packet_length(desired.packet_length, target_endpoint_type)
    length_differs = actual.packet_length != wanted_length
    return SessionChanges(
        target_id=desired.target_id if actual.target_id != desired.target_id else None,
        filter_id=desired.filter_id if actual.filter_id != desired.filter_id else None,
        session_number=desired.session_number if actual.session_number != desired.session_number else None,
        # An omitted VNI is AWS's choice: keep whatever it assigned.
        virtual_network_id=(
            desired.virtual_network_id
            if desired.virtual_network_id is not None and actual.virtual_network_id != desired.virtual_network_id
            else None
        ),
        packet_length=desired.packet_length if length_differs and desired.packet_length is not None else None,
        remove_packet_length=length_differs and desired.packet_length is None,
        description=desired.description if actual.description != desired.description else None,
    )


@dataclass(frozen=True)
class SessionReconciler:
    kind: str = "MirrorSession"
    snapshot_kind: str = "sessions"

    @property
    def spec_model(self) -> type[MirrorSessionSpec]:
        return MirrorSessionSpec

    @property
    def status_model(self) -> type[MirrorSessionStatus]:
        return MirrorSessionStatus

    def observed_id(self, status: MirrorSessionStatus) -> str | None:
        return status.traffic_mirror_session_id

    def in_sync(self, request: SessionRequest, observed: Observed[AwsSession] | None) -> bool:
        """AWS holds the recorded session, pointed at the current target and filter, with the spec's
        effective values and tags, from a source whose instance type is the recorded one. The same
        delta as the reconcile's (`session_modifications`), so the two cannot disagree."""
        if observed is None:
            return False
        spec, status, facts, found = request.spec, request.status, request.facts, observed.resource
        if observed.instance_type_known and observed.instance_type != status.source_instance_type:
            return False
        target, mirror_filter = facts.target, facts.mirror_filter
        desired = SessionParams(
            network_interface_id=found.network_interface_id,
            target_id=(target.aws_id if target and target.aws_id else status.traffic_mirror_target_id) or "",
            filter_id=(
                mirror_filter.aws_id if mirror_filter and mirror_filter.aws_id else status.traffic_mirror_filter_id
            )
            or "",
            session_number=spec.session_number,
            virtual_network_id=spec.virtual_network_id,
            packet_length=spec.packet_length,
            description=owner_description(request.owner, spec.description),
        )
        changes = session_modifications(found, desired, target.endpoint_type if target else None)
        if target is None:  # the target's kind is not known here: AWS's length is the one recorded
            recorded_length = spec.packet_length if spec.packet_length is not None else status.packet_length
            if found.packet_length != recorded_length:
                return False
            changes = replace(changes, packet_length=None, remove_packet_length=False)
        # A VNI AWS chose is recorded in status (capture files are named by it): a change is drift too.
        if spec.virtual_network_id is None and found.virtual_network_id != status.virtual_network_id:
            return False
        return changes.empty and tag_changes(owner_tags(request.owner, spec.tags), found.tags).empty

    def reconcile(self, request: SessionRequest, ctx: ReconcileContext) -> Outcome:
        return reconcile_session(request, ctx)

    def delete(self, request: SessionRequest, ctx: ReconcileContext) -> Outcome | None:
        return delete_session(request, ctx)


def _waiting_for(kind: str, dependency: Dependency | None, ref_name: str) -> Outcome | None:
    if dependency is not None and dependency.phase == "Ready" and dependency.aws_id:
        return None
    reason = f"WaitingFor{kind}"
    if dependency is None:
        return pending(reason, f"Mirror{kind} {ref_name} does not exist", retry_after=DEPENDENCY_RETRY_SECONDS)
    detail = f" ({dependency.phase}: {dependency.reason})" if dependency.phase else ""
    return pending(reason, f"Mirror{kind} {ref_name} is not ready{detail}", retry_after=DEPENDENCY_RETRY_SECONDS)


def _dependency_gone(error: AwsError, target_name: str, filter_name: str) -> Outcome | None:
    """The target or filter the session names was deleted in AWS: it is being re-created, and the session
    follows it as soon as it has its new ID. A dependency's wait, not an AWS failure to back off from."""
    if error.error_class is not ErrorClass.NOT_FOUND:
        return None
    for kind, name in (("Target", target_name), ("Filter", filter_name)):
        if error.code.lower().startswith(f"invalidtrafficmirror{kind.lower()}id."):
            message = f"the TrafficMirror{kind} of Mirror{kind} {name} is gone from AWS: {error.message}"
            return pending(f"WaitingFor{kind}", message, retry_after=DEPENDENCY_RETRY_SECONDS)
    return None


def reconcile_session(request: SessionRequest, ctx: ReconcileContext) -> Outcome:
    """Time first: a Completed session stays so without a call, and one whose time is over ends
    before anything is created. Then the session is brought to the spec."""
    stop = session_stop_time(request)
    now = ctx.clock()
    if request.status.phase == Phase.COMPLETED:
        return _still_completed(request, stop)
    if timebox.is_over(stop, now):
        return end_session(request, ctx, stop, now)
    outcome = _reconcile_running(request, ctx)
    if outcome.phase is Phase.READY:
        outcome.status_fields["mirroringSince"] = request.status.mirroring_since or timebox.format_time(now)
    if stop is not None:
        _running(outcome, request.status, stop, now, ctx)
    else:  # no end, or an end removed from the spec
        outcome.clear_conditions.append(timebox.COMPLETED)
        outcome.status_fields.update(stopAt=None, estimatedCost=None)
    return outcome


def session_stop_time(request: SessionRequest) -> datetime | None:
    """When the session ends (spec.duration from the creation time, or spec.stopAt); None for no end."""
    return timebox.stop_time(request.spec.duration, request.spec.stop_at, request.owner.created_at)


def _running(
    outcome: Outcome, status: MirrorSessionStatus, stop: datetime, now: datetime, ctx: ReconcileContext
) -> None:
    """A time-boxed session before its end: the end, the cost so far, and the time left."""
    outcome.status_fields["stopAt"] = timebox.format_time(stop)
    since = timebox.parse_time(outcome.status_fields.get("mirroringSince") or status.mirroring_since)
    intervals = [timebox.Interval(since)] if since is not None else []
    outcome.status_fields["estimatedCost"] = timebox.estimated_cost(timebox.eni_hours(intervals, now), ctx.price, now)
    message = timebox.running_message(stop, now)
    if outcome.phase is not Phase.READY:
        message = f"not mirroring yet ({outcome.ready_reason}); {message}"
    outcome.conditions.append(ConditionUpdate(timebox.COMPLETED, "False", timebox.RUNNING, message))


def _mirrored_intervals(status: MirrorSessionStatus) -> list[timebox.Interval]:
    """The interval the AWS session mirrored: from mirroringSince (or, written by an older operator,
    the time the session became Ready) to now."""
    since = timebox.parse_time(status.mirroring_since)
    if since is None:
        ready_now = ready_condition(status)
        if ready_now is not None and ready_now.status == "True":
            since = timebox.parse_time(ready_now.last_transition_time)
    return [timebox.Interval(since)] if since is not None else []


def end_session(request: SessionRequest, ctx: ReconcileContext, stop: datetime | None, now: datetime) -> Outcome:
    """The time is over: the AWS session is deleted (mirroring is billed per ENI-hour) and the phase
    becomes Completed with the cost. Nothing is created, whatever the state: a session whose time
    was over at creation ends without a call."""
    owner, spec, status, annotations = request.owner, request.spec, request.status, request.annotations
    aws: SessionAws = ctx.aws_for_region(spec.region)
    session_id = status.traffic_mirror_session_id or annotations.get(AWS_ID_ANNOTATION)
    try:
        if session_id is None and annotations.get(CREATE_INTENT_ANNOTATION) and status.source_network_interface_id:
            # A create was about to be sent when the time ran out: it may have reached AWS.
            orphan = _find_orphan(aws, owner, status.source_network_interface_id)
            session_id = orphan.session_id if orphan is not None else None
        if session_id is not None:
            _delete_quietly(aws, session_id)
    except AwsError as error:
        message = f"the time is over; deleting {session_id or 'the AWS session'} failed: {error}; retrying"
        outcome = pending("Completing", message, retry_after=AWS_RETRY_SECONDS)
        raise RetryLater(message, delay=AWS_RETRY_SECONDS, outcome=outcome) from error
    ctx.placements.release(owner.uid)
    ended = timebox.completion(
        stop,
        now,
        _mirrored_intervals(status) if session_id is not None else [],
        ctx.price,
        deleted=f"the AWS session {session_id}" if session_id else None,
    )
    outcome = completed_outcome(ended.message)
    outcome.status_fields.update(ended.status_fields, trafficMirrorSessionId=None)
    outcome.annotations.update({AWS_ID_ANNOTATION: None, CREATE_INTENT_ANNOTATION: None})
    return outcome


def completed_outcome(message: str) -> Outcome:
    """Completed: not Ready (nothing mirrors), Synced (AWS holds nothing, as it should), Completed."""
    return Outcome(
        Phase.COMPLETED,
        [
            ConditionUpdate(READY, "False", timebox.COMPLETED, message),
            ConditionUpdate(SYNCED, "True", timebox.COMPLETED, "nothing in AWS, as a completed capture should be"),
            ConditionUpdate(timebox.COMPLETED, "True", timebox.TIME_UP, message),
        ],
    )


def _still_completed(request: SessionRequest, stop: datetime | None) -> Outcome:
    """A Completed session stays Completed without a call: an edit, a resync or a restart never
    restarts it. An edit is answered with an Event that says so."""
    status = request.status
    done = status.condition(timebox.COMPLETED)
    outcome = completed_outcome(done.message if done is not None else "the capture ended")
    if status.observed_generation is not None and status.observed_generation != request.owner.generation:
        ended = status.completed_at or (timebox.format_time(stop) if stop is not None else "earlier")
        outcome.events.append(
            Event(
                "Normal",
                "AlreadyCompleted",
                f"the capture ended at {ended}; a spec change does not restart it: create a new MirrorSession",
            )
        )
    return outcome


def _reconcile_running(request: SessionRequest, ctx: ReconcileContext) -> Outcome:
    owner, spec, status, annotations = request.owner, request.spec, request.status, dict(request.annotations)
    target, mirror_filter = request.facts.target, request.facts.mirror_filter
    aws: SessionAws = ctx.aws_for_region(spec.region)
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
    current_id = status.traffic_mirror_session_id or annotations.get(AWS_ID_ANNOTATION) or spec.adopt_id
    events: list[Event] = []
    choice: Choice | None = None
    refused_full: frozenset[str] = frozenset()
    moved_on: list[Event] = []  # the targets of the pool AWS refused this time
    while True:
        if spec.target_selector is not None:
            choice = _choose_target(request, ctx, source_eni, support.availability_zone, refused_full)
            if choice.target is None:
                return _no_target(choice, source_fields, moved_on)
            target = _chosen_dependency(request, choice.target)
            target_name = choice.target.name
        else:
            assert spec.target_ref is not None
            target_name = spec.target_ref.name
        waiting = _waiting_for("Target", target, target_name) or _waiting_for(
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
        try:
            actual = _apply_session(request, ctx, aws, current_id, source_eni, desired, target, events, source_fields)
        except AwsError as error:
            # A full target, or one AWS refuses for its instance type, is no failure when the pool has
            # another: the next choice skips it.
            full = error.code == SOURCES_PER_TARGET_EXCEEDED
            if (
                choice is not None
                and (full or _refuses_target(error, source_eni))
                and target.aws_id not in refused_full
            ):
                ctx.placements.refused(target.aws_id, owner.uid)
                refused_full |= {target.aws_id}
                reason = "TargetFull" if full else "TargetRefused"
                moved_on.append(Event("Warning", reason, f"{target_name} ({target.aws_id}): {error.message}"))
                continue
            if error.error_class is ErrorClass.UNSUPPORTED_INSTANCE:
                return _rejected_instance(aws, ctx, error, support, source_fields)
            gone = _dependency_gone(error, target_name, spec.filter_ref.name)
            if gone is not None:
                gone.status_fields.update(source_fields)
                gone.events += moved_on
                return gone
            return outcome_for_aws_error(error, **source_fields)
        except Decided as decided:
            decided.outcome.events += moved_on  # said once: the next round chooses without asking AWS
            return decided.outcome
        break

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
        packetLength=actual.packet_length,
        rejectedNetworkInterfaceId=None,
        rejectedInstanceType=None,
        targetName=target_name,
        **source_fields,
    )
    if choice is not None:
        outcome.conditions.append(ConditionUpdate(TARGET_CHOSEN, "True", choice.reason, choice.message))
    else:
        outcome.clear_conditions.append(TARGET_CHOSEN)
    outcome.events += events + moved_on
    outcome.annotations.update({AWS_ID_ANNOTATION: actual.session_id, CREATE_INTENT_ANNOTATION: None})
    return outcome


def _apply_session(
    request: SessionRequest,
    ctx: ReconcileContext,
    aws: SessionAws,
    current_id: str | None,
    source_eni: str,
    desired: SessionParams,
    target: Dependency,
    events: list[Event],
    source_fields: dict[str, Any],
) -> AwsSession:
    """The recorded session brought to `desired`: found, created once, or modified; raises AwsError or Decided."""
    owner, spec, status, annotations = request.owner, request.spec, request.status, dict(request.annotations)
    actual = recorded_resource(current_id, spec.adopt_id, AWS_KIND, aws.describe_sessions, events).resource
    if actual is not None:
        refuse_foreign(AWS_KIND, actual.session_id, actual.tags, owner, ctx.live_owners)
    if actual is not None and actual.network_interface_id != source_eni:
        # AWS cannot move a session to another source ENI: delete and create anew.
        _delete_quietly(aws, actual.session_id)
        events.append(Event("Normal", "Recreating", f"source changed to {source_eni}; replacing {current_id}"))
        actual = None
    if actual is None:
        if _still_refused(aws, ctx, status, target.network_interface_id):
            raise Decided(failed(UNSUPPORTED, status_message(status), **_refusal_fields(status), **source_fields))
        if _quota_still_reached(aws, status, source_eni):
            raise Decided(failed(QUOTA_EXCEEDED, status_message(status), **source_fields))
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
    changes = session_modifications(actual, desired, target.endpoint_type)
    if changes.target_id and _still_refused(aws, ctx, status, target.network_interface_id):
        # AWS refused this move already, and the target's instance type has not changed since.
        raise Decided(failed(UNSUPPORTED, status_message(status), **_refusal_fields(status), **source_fields))
    if not changes.empty:
        actual = aws.modify_session(actual.session_id, changes)
        events.append(Event("Normal", "Updated", f"modified {', '.join(changes.names)}"))
    sync_tags(aws, actual.session_id, owner_tags(owner, spec.tags), actual.tags, events)
    return actual


def _refuses_target(error: AwsError, source_eni: str) -> bool:
    """NetworkInterfaceNotSupported naming an ENI other than the source's: the target's instance type."""
    match = _ENI_IN_MESSAGE.search(error.message)
    return error.error_class is ErrorClass.UNSUPPORTED_INSTANCE and match is not None and match.group(1) != source_eni


def _choose_target(
    request: SessionRequest, ctx: ReconcileContext, source_eni: str, source_az: str | None, refused: frozenset[str]
) -> Choice:
    candidates = [
        Candidate(
            name=member.name,
            target_id=member.aws_id,
            endpoint_type=member.endpoint_type or NETWORK_INTERFACE,
            instance_type=member.instance_type,
            availability_zone=member.availability_zone,
            sources=request.facts.pool_sources.get(member.aws_id, frozenset()),
        )
        for member in request.facts.pool or ()
        if member.phase == "Ready" and member.aws_id
    ]
    return ctx.placements.choose(
        request.owner.uid,
        source_eni,
        source_az,
        candidates,
        ctx.target_quotas,
        current=request.status.traffic_mirror_target_id,
        exclude=refused,
    )


def _chosen_dependency(request: SessionRequest, chosen: Candidate) -> Dependency:
    return next(m for m in request.facts.pool or () if m.name == chosen.name)


def _no_target(choice: Choice, source_fields: dict[str, Any], moved_on: list[Event]) -> Outcome:
    outcome = pending(WAITING_FOR_TARGET, choice.message, retry_after=POOL_RETRY_SECONDS, **source_fields)
    outcome.events += moved_on
    outcome.conditions.append(ConditionUpdate(TARGET_CHOSEN, "False", choice.reason, choice.message))
    return outcome


def _rejected_instance(
    aws: SessionAws,
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


def _current_type(aws: SessionAws, ctx: ReconcileContext, network_interface_id: str) -> str | None:
    return check_support(aws, network_interface_id, ctx.support_table, frozenset()).instance_type


def _still_refused(aws: SessionAws, ctx: ReconcileContext, status: MirrorSessionStatus, target_eni: str | None) -> bool:
    """A target AWS refused stays refused until its instance type changes: do not ask AWS again before."""
    refused, refused_type = status.rejected_network_interface_id, status.rejected_instance_type
    if not refused or refused != target_eni or not refused_type:
        return False
    return bool(_current_type(aws, ctx, refused) == refused_type)


def _quota_still_reached(aws: SessionAws, status: MirrorSessionStatus, source_eni: str) -> bool:
    """After QuotaExceeded for the source's three sessions, one read tells whether a slot is free
    (the resync asks once a period); other quotas are tried again with the create itself."""
    condition = ready_condition(status)
    if (
        condition is None
        or condition.reason != QUOTA_EXCEEDED
        or "per source network interface" not in condition.message
    ):
        return False
    return len(aws.describe_sessions(network_interface_id=source_eni)) >= SESSIONS_PER_INTERFACE


def _find_orphan(aws: SessionAws, owner: Owner, source_eni: str) -> AwsSession | None:
    # At most three sessions per source ENI: the ENI filter finds ours in one small call.
    sessions = aws.describe_sessions(network_interface_id=source_eni)
    return next((s for s in sessions if is_owned_by(s.tags, s.description, owner)), None)


def _delete_quietly(aws: SessionAws, session_id: str) -> None:
    try:
        aws.delete_session(session_id)
    except AwsError as error:
        if error.error_class is not ErrorClass.NOT_FOUND:
            raise


def delete_session(request: SessionRequest, ctx: ReconcileContext) -> Outcome | None:
    spec, session_id = request.spec, request.status.traffic_mirror_session_id
    ctx.placements.release(request.owner.uid)
    if spec.deletion_policy == "Orphan" or not session_id or request.status.phase == Phase.COMPLETED:
        return None
    try:
        _delete_quietly(ctx.aws_for_region(spec.region), session_id)
    except AwsError as error:
        return deleting_outcome_for_aws_error(error)
    return None


def status_message(status: MirrorSessionStatus) -> str:
    condition = ready_condition(status)
    return condition.message if condition is not None else "AWS refused the session for the instance type"


def _refusal_fields(status: MirrorSessionStatus) -> dict[str, Any]:
    return {
        "rejectedNetworkInterfaceId": status.rejected_network_interface_id,
        "rejectedInstanceType": status.rejected_instance_type,
    }
