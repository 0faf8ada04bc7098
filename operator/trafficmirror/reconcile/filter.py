"""MirrorFilter → TrafficMirrorFilter. Rules are applied one by one (create, modify, delete), never
by recreating the filter: sessions keep using the same filter ID while its rules change."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any

from trafficmirror.api import FilterRule, MirrorFilterSpec, MirrorFilterStatus
from trafficmirror.aws.ec2 import EGRESS, INGRESS, AwsFilter, AwsFilterRule, PortRange, RuleParams
from trafficmirror.aws.errors import AwsError, ErrorClass
from trafficmirror.reconcile.common import (
    AWS_ID_ANNOTATION,
    CREATE_INTENT_ANNOTATION,
    Event,
    Outcome,
    Owner,
    client_token,
    deleting,
    is_owned_by,
    owner_description,
    owner_tags,
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
from trafficmirror.reconcile.observed import Observed
from trafficmirror.reconcile.ports import FilterAws
from trafficmirror.reconcile.seam import Request

AWS_KIND = "TrafficMirrorFilter"
FilterRequest = Request[MirrorFilterSpec, MirrorFilterStatus]


def rule_params(direction: str, rule: FilterRule) -> RuleParams:
    def ports(value: Any) -> PortRange | None:
        return PortRange(value.from_port, value.to_port) if value is not None else None

    return RuleParams(
        direction=direction,
        rule_number=rule.rule_number,
        action=rule.action,
        source_cidr_block=rule.source_cidr_block,
        destination_cidr_block=rule.destination_cidr_block,
        protocol=rule.protocol,
        source_port_range=ports(rule.source_port_range),
        destination_port_range=ports(rule.destination_port_range),
        description=rule.description,
    )


def desired_rules(spec: MirrorFilterSpec) -> list[RuleParams]:
    return [rule_params(INGRESS, r) for r in spec.ingress_rules or []] + [
        rule_params(EGRESS, r) for r in spec.egress_rules or []
    ]


@dataclass(frozen=True)
class RuleChanges:
    """What turns the rules AWS has into the rules the spec wants, in the order AWS accepts it."""

    delete: list[AwsFilterRule]
    modify: list[tuple[AwsFilterRule, RuleParams]]
    create: list[RuleParams]

    @property
    def empty(self) -> bool:
        return not (self.delete or self.modify or self.create)


def canonical_cidr(value: str) -> str:
    """The form AWS stores and reports: the network address, IPv6 compressed and in lower case."""
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        return value


def effective_rule(params: RuleParams) -> RuleParams:
    """A rule as AWS holds it, so that a spec and AWS's answer compare equal when they mean the same."""
    return replace(
        params,
        source_cidr_block=canonical_cidr(params.source_cidr_block),
        destination_cidr_block=canonical_cidr(params.destination_cidr_block),
        description=params.description or None,
    )


def rule_changes(desired: list[RuleParams], actual: list[AwsFilterRule]) -> RuleChanges:
    # Deletes go first so that a full filter (10 rules) has room for the creates.
    by_key = {r.params.key: r for r in actual}
    wanted = {p.key: p for p in desired}
    return RuleChanges(
        delete=[r for key, r in sorted(by_key.items()) if key not in wanted],
        modify=[
            (by_key[key], p)
            for key, p in sorted(wanted.items())
            if key in by_key and effective_rule(by_key[key].params) != effective_rule(p)
        ],
        create=[p for key, p in sorted(wanted.items()) if key not in by_key],
    )


def network_service_changes(desired: list[str], actual: tuple[str, ...]) -> tuple[list[str], list[str]]:
    return sorted(set(desired) - set(actual)), sorted(set(actual) - set(desired))


@dataclass(frozen=True)
class FilterReconciler:
    kind: str = "MirrorFilter"
    snapshot_kind: str = "filters"

    @property
    def spec_model(self) -> type[MirrorFilterSpec]:
        return MirrorFilterSpec

    @property
    def status_model(self) -> type[MirrorFilterStatus]:
        return MirrorFilterStatus

    def observed_id(self, status: MirrorFilterStatus) -> str | None:
        return status.traffic_mirror_filter_id

    def in_sync(self, request: FilterRequest, observed: Observed[AwsFilter] | None) -> bool:
        """AWS holds the recorded filter with the spec's rules, network services and tags."""
        if observed is None:
            return False
        spec, found = request.spec, observed.resource
        return (
            rule_changes(desired_rules(spec), list(found.rules)).empty
            and network_service_changes(list(spec.network_services or []), found.network_services) == ([], [])
            and tag_changes(owner_tags(request.owner, spec.tags), found.tags).empty
        )

    def reconcile(self, request: FilterRequest, ctx: ReconcileContext) -> Outcome:
        return reconcile_filter(request, ctx)

    def delete(self, request: FilterRequest, ctx: ReconcileContext) -> Outcome | None:
        return delete_filter(request, ctx)


def reconcile_filter(request: FilterRequest, ctx: ReconcileContext) -> Outcome:
    owner, spec, status, annotations = request.owner, request.spec, request.status, dict(request.annotations)
    aws: FilterAws = ctx.aws_for_region(spec.region)
    current_id = status.traffic_mirror_filter_id or annotations.get(AWS_ID_ANNOTATION) or spec.adopt_id
    events: list[Event] = []
    try:
        recorded = recorded_resource(current_id, spec.adopt_id, AWS_KIND, aws.describe_filters, events)
        actual, gone_id = recorded.resource, recorded.gone_id
        if actual is not None:
            refuse_foreign(AWS_KIND, actual.filter_id, actual.tags, owner, ctx.live_owners)
        if actual is None:
            actual = create_once(
                aws_kind=AWS_KIND,
                # The token does not depend on the rules: they are added after, one by one.
                token=client_token(owner.uid, {"filter": owner.uid, "replaces": gone_id}),
                annotations=annotations,
                find_orphan=lambda: _find_orphan(aws, owner),
                create=lambda token: aws.create_filter(
                    client_token=token,
                    description=owner_description(owner, spec.description),
                    tags=owner_tags(owner, spec.tags),
                ),
                id_of=lambda created: created.filter_id,
                events=events,
            )
        current_id = actual.filter_id
        sync_tags(aws, current_id, owner_tags(owner, spec.tags), actual.tags, events)
        changes = rule_changes(desired_rules(spec), list(actual.rules))
        rule_ids = _apply_rule_changes(
            aws, owner, current_id, actual, changes, sorted((status.rule_ids or {}).values())
        )
        add, remove = network_service_changes(list(spec.network_services or []), actual.network_services)
        if add or remove:
            aws.set_network_services(current_id, add, remove)
    except AwsError as error:
        return outcome_for_aws_error(error, trafficMirrorFilterId=current_id)
    except Decided as decided:
        return decided.outcome
    if not changes.empty or add or remove:
        events.append(
            Event(
                "Normal",
                "RulesUpdated",
                f"{len(changes.create)} created, {len(changes.modify)} modified, {len(changes.delete)} deleted"
                + (f"; network services +{add} -{remove}" if add or remove else ""),
            )
        )
    outcome = ready(f"TrafficMirrorFilter {current_id} is ready with {len(rule_ids)} rules")
    outcome.events += events
    outcome.status_fields.update(trafficMirrorFilterId=current_id, ruleIds=rule_ids)
    outcome.annotations.update({AWS_ID_ANNOTATION: current_id, CREATE_INTENT_ANNOTATION: None})
    return outcome


def _apply_rule_changes(
    aws: FilterAws,
    owner: Owner,
    filter_id: str,
    actual: AwsFilter,
    changes: RuleChanges,
    recorded_rule_ids: list[str],
) -> dict[str, str]:
    rule_ids = {f"{r.params.direction}/{r.params.rule_number}": r.rule_id for r in actual.rules}
    for rule in changes.delete:
        try:
            aws.delete_filter_rule(rule.rule_id)
        except AwsError as error:
            if error.error_class is not ErrorClass.NOT_FOUND:
                raise
        rule_ids.pop(f"{rule.params.direction}/{rule.params.rule_number}", None)
    for rule, params in changes.modify:
        aws.modify_filter_rule(rule.rule_id, params)
    # The token names the rules recorded in status: a create retried after a crash repeats it (and
    # AWS answers with the rule it made), while re-creating a rule deleted out of band gets a new one.
    for params in changes.create:
        token = client_token(owner.uid, [filter_id, params, recorded_rule_ids])
        created = aws.create_filter_rule(filter_id, params, token)
        rule_ids[f"{params.direction}/{params.rule_number}"] = created.rule_id
    return dict(sorted(rule_ids.items()))


def _find_orphan(aws: FilterAws, owner: Owner) -> AwsFilter | None:
    return next((f for f in aws.describe_filters() if is_owned_by(f.tags, f.description, owner)), None)


def delete_filter(request: FilterRequest, ctx: ReconcileContext) -> Outcome | None:
    spec, status = request.spec, request.status
    if spec.deletion_policy == "Orphan":
        return None
    if request.facts.users:
        return deleting(
            "WaitingForSessions",
            f"still used by MirrorSession {', '.join(sorted(request.facts.users))}",
            retry_after=5,
        )
    filter_id = status.traffic_mirror_filter_id
    if not filter_id:
        return None
    try:
        aws: FilterAws = ctx.aws_for_region(spec.region)
        aws.delete_filter(filter_id)
    except AwsError as error:
        if error.error_class is ErrorClass.NOT_FOUND:
            return None
        if error.error_class is ErrorClass.IN_USE:
            return deleting("WaitingForSessions", f"{filter_id} is still used by mirror sessions in AWS", retry_after=5)
        return deleting_outcome_for_aws_error(error)
    return None
