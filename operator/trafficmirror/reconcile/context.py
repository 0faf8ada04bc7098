"""What a reconciler needs besides the object: the AWS adapter and what the cluster tells us,
and the steps every kind shares (the recorded resource, create-once, tags, AWS errors)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from trafficmirror.aws.elbv2 import LoadBalancers
from trafficmirror.aws.errors import AwsError, ErrorClass
from trafficmirror.aws.instance_support import SupportTable
from trafficmirror.aws.target_quotas import Price, TargetQuotas
from trafficmirror.reconcile.common import (
    CLUSTER_TAG,
    CREATE_INTENT_ANNOTATION,
    QUOTA_EXCEEDED,
    TARGET_NOT_RUNNING,
    UNSUPPORTED_INSTANCE_TYPE,
    Event,
    LiveOwners,
    Outcome,
    Owner,
    deleting,
    failed,
    other_owner,
    pending,
    tag_changes,
)
from trafficmirror.reconcile.placement import PlacementBook
from trafficmirror.reconcile.ports import MirrorAws, Tagging

AWS_RETRY_SECONDS = 10.0
NOT_FOUND_RETRY_SECONDS = 1.0


class RetryLater(Exception):
    """Time will fix it (throttling, 5xx, a dependency not ready): the handler backs off and retries.

    `outcome`, when set, is the status to write meanwhile, so the wait is visible on the object.
    """

    def __init__(self, message: str, delay: float, outcome: Outcome | None = None) -> None:
        super().__init__(message)
        self.delay = delay
        self.outcome = outcome


@dataclass
class ReconcileContext:
    aws_for_region: Callable[[str | None], MirrorAws]
    support_table: SupportTable
    cluster: str
    node_provider_ids: dict[str, str] = field(default_factory=dict)
    # Instance types AWS itself refused (NetworkInterfaceNotSupported): authoritative over the table.
    remembered_rejections: set[str] = field(default_factory=set)
    # UID → "Kind namespace/name" of a live MirrorTarget/Filter/Session; None when not known.
    live_owners: LiveOwners | None = None
    # MirrorTargets with serviceRef: the load balancers, and each Service's load-balancer hostname.
    load_balancers_for_region: Callable[[str | None], LoadBalancers] | None = None
    service_hostnames: dict[tuple[str, str], str] = field(default_factory=dict)
    # Sessions with targetSelector: AWS's sources-per-target quotas and this operator's recent choices.
    target_quotas: TargetQuotas = field(default_factory=TargetQuotas.packaged)
    placements: PlacementBook = field(default_factory=PlacementBook)
    # Time-boxed sessions: the clock they end by, and the price their estimated cost uses.
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    price: Price = field(default_factory=lambda: TargetQuotas.packaged().price())


def outcome_for_aws_error(error: AwsError, **status_fields: Any) -> Outcome:
    """Every AWS error reaches status: terminal ones as Failed naming AWS's words, the rest as a
    Pending that says what is retried (the handler retries it with backoff)."""
    if error.error_class is ErrorClass.QUOTA:
        return failed(
            QUOTA_EXCEEDED,
            f"AWS quota reached ({error.quota or error.code}): {error.message}; checked again every resync",
            **status_fields,
        )
    if error.error_class is ErrorClass.UNSUPPORTED_INSTANCE:  # the instance type: a fact of the world
        return failed(UNSUPPORTED_INSTANCE_TYPE, f"{error.operation}: {error.code}: {error.message}", **status_fields)
    if error.error_class is ErrorClass.NOT_RUNNING:  # the target's instance is stopped: it may start again
        return failed(
            TARGET_NOT_RUNNING,
            f"{error.operation}: {error.code}: {error.message}; checked again every resync",
            **status_fields,
        )
    if error.error_class is ErrorClass.TERMINAL:
        return failed("AwsRejected", f"{error.operation} was rejected: {error.code}: {error.message}", **status_fields)
    if error.error_class is ErrorClass.NOT_FOUND:
        # Gone between the read and the write (deleted out of band): the next pass sees it gone and re-creates
        # it, at once; nothing to back off from.
        outcome = pending("NotFound", f"{error}; retrying", retry_after=NOT_FOUND_RETRY_SECONDS, **status_fields)
        raise RetryLater(str(error), delay=NOT_FOUND_RETRY_SECONDS, outcome=outcome)
    outcome = pending("AwsRetrying", f"{error}; retrying", retry_after=AWS_RETRY_SECONDS, **status_fields)
    raise RetryLater(str(error), delay=AWS_RETRY_SECONDS, outcome=outcome)


def deleting_outcome_for_aws_error(error: AwsError) -> Outcome:
    """A delete AWS refuses or cannot do now keeps the object Deleting, with AWS's words, and is retried."""
    delay = AWS_RETRY_SECONDS if error.error_class is ErrorClass.RETRYABLE else 6 * AWS_RETRY_SECONDS
    return deleting("DeleteFailed", f"{error}; retrying", retry_after=delay)


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


@dataclass(frozen=True)
class Recorded(Generic[Resource]):
    resource: Resource | None  # None: not created yet, or deleted outside
    gone_id: str | None  # the ID of a resource deleted outside


def recorded_resource(
    current_id: str | None,
    adopt_id: str | None,
    aws_kind: str,
    describe: Callable[[list[str]], list[Resource]],
    events: list[Event],
) -> Recorded[Resource]:
    """The recorded AWS resource, or None when there is none yet or it was deleted outside; and the
    ID of a deleted one, which a new create's token must name (AWS's idempotency would otherwise
    answer with the deleted resource)."""
    if not current_id:
        return Recorded(None, None)
    found = describe_one(describe, current_id)
    if found is None:
        if current_id == adopt_id:
            raise Decided(failed("AdoptedResourceNotFound", f"{aws_kind} {current_id} does not exist"))
        events.append(Event("Warning", "Recreating", f"{current_id} was deleted outside Kubernetes"))
        return Recorded(None, current_id)
    return Recorded(found, None)


def refuse_foreign(
    aws_kind: str, resource_id: str, tags: dict[str, str], owner: Owner, live_owners: LiveOwners | None
) -> None:
    """A resource tagged as another live object's is not ours to change: two owners would fight."""
    holder = other_owner(tags, owner, live_owners)
    if holder is not None:
        raise Decided(
            failed("OwnedByAnother", f"{aws_kind} {resource_id} is managed by {holder}; adopt it from one object only")
        )


def sync_tags(
    aws: Tagging, resource_id: str, desired: dict[str, str], actual: dict[str, str], events: list[Event]
) -> None:
    changes = tag_changes(desired, actual)
    if changes.empty:
        return
    # The cluster tag goes with every CreateTags: the IAM policy allows tagging only with it.
    add = {**changes.add, CLUSTER_TAG: desired[CLUSTER_TAG]} if changes.add and CLUSTER_TAG in desired else changes.add
    aws.set_tags(resource_id, add, changes.remove)
    events.append(
        Event("Normal", "TagsUpdated", f"tags on {resource_id}: set {sorted(changes.add)}, removed {changes.remove}")
    )


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
