"""What a reconciler needs besides the object: the AWS adapter and what the cluster tells us."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from trafficmirror.aws.ec2 import Ec2Mirror
from trafficmirror.aws.elbv2 import LoadBalancers
from trafficmirror.aws.errors import AwsError, ErrorClass
from trafficmirror.aws.instance_support import SupportTable
from trafficmirror.reconcile.common import CREATE_INTENT_ANNOTATION, Event, Outcome, failed, pending


class RetryLater(Exception):
    """Time will fix it (throttling, 5xx, a dependency not ready): the handler backs off and retries."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass
class ReconcileContext:
    aws_for_region: Callable[[str | None], Ec2Mirror]
    support_table: SupportTable
    cluster: str
    node_provider_ids: dict[str, str] = field(default_factory=dict)
    # Instance types AWS itself refused (NetworkInterfaceNotSupported): authoritative over the table.
    remembered_rejections: set[str] = field(default_factory=set)
    # MirrorTargets with serviceRef: the load balancers, and each Service's load-balancer hostname.
    load_balancers_for_region: Callable[[str | None], LoadBalancers] | None = None
    service_hostnames: dict[tuple[str, str], str] = field(default_factory=dict)


def outcome_for_aws_error(error: AwsError, **status_fields: Any) -> Outcome:
    """Terminal errors become a Failed outcome naming AWS's words; the rest is retried."""
    if error.error_class is ErrorClass.QUOTA:
        return failed(
            "QuotaExceeded",
            f"AWS quota reached ({error.quota or error.code}): {error.message}",
            **status_fields,
        )
    if error.error_class in (ErrorClass.TERMINAL, ErrorClass.UNSUPPORTED_INSTANCE):
        return failed("AwsRejected", f"{error.operation} was rejected: {error.code}: {error.message}", **status_fields)
    raise RetryLater(str(error), delay=10)


Resource = TypeVar("Resource")


def describe_one(describe: Callable[[list[str]], list[Resource]], aws_id: str) -> Resource | None:
    """One resource by its AWS ID, or None when AWS says it does not exist."""
    try:
        found = describe([aws_id])
    except AwsError as error:
        if error.error_class is ErrorClass.NOT_FOUND:
            return None
        raise
    return found[0] if found else None


class Decided(Exception):
    """A step reached the reconcile's outcome early (e.g. the intent to write before a create)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.ready_reason)
        self.outcome = outcome


def recorded_resource(
    current_id: str | None,
    adopt_id: str | None,
    aws_kind: str,
    describe: Callable[[list[str]], list[Resource]],
    events: list[Event],
) -> Resource | None:
    """The AWS resource the object records, or None when there is none yet or it was deleted outside."""
    if not current_id:
        return None
    found = describe_one(describe, current_id)
    if found is None:
        if current_id == adopt_id:
            raise Decided(failed("AdoptedResourceNotFound", f"{aws_kind} {current_id} does not exist"))
        events.append(Event("Warning", "Recreating", f"{current_id} was deleted outside Kubernetes"))
    return found


def create_once(
    *,
    aws_kind: str,
    token: str,
    annotations: dict[str, str],
    find_orphan: Callable[[], Resource | None],
    create: Callable[[str], Resource],
    id_of: Callable[[Resource], str],
    events: list[Event],
    **status_fields: Any,
) -> Resource:
    """Create at most once per token, even across crashes.

    The token is written to an annotation first (one reconcile), and sent to AWS only on the next:
    if a later attempt finds another token there, the spec changed while the fate of that create
    was unknown, so AWS is searched for a resource this object owns before anything is created.
    """
    intent = annotations.get(CREATE_INTENT_ANNOTATION)
    if intent == token:
        created = create(token)
        events.append(Event("Normal", "Created", f"created {aws_kind} {id_of(created)}"))
        return created
    orphan = find_orphan() if intent else None
    if orphan is not None:
        events.append(Event("Normal", "Adopted", f"found {aws_kind} {id_of(orphan)} created by an earlier attempt"))
        return orphan
    outcome = pending("Creating", f"creating the {aws_kind}", retry_after=0, **status_fields)
    outcome.annotations[CREATE_INTENT_ANNOTATION] = token
    raise Decided(outcome)
