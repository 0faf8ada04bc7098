"""What every kind's reconciler shares: ownership marks, idempotency tokens, conditions, outcomes.

Everything here is pure: the reconcilers decide with it, the kopf handlers apply the `Outcome`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from trafficmirror.api.common import Phase

ANNOTATION_PREFIX = "trafficmirror.io"
OWNER_UID_TAG = f"{ANNOTATION_PREFIX}/owner-uid"
OWNER_TAG = f"{ANNOTATION_PREFIX}/owner"
CLUSTER_TAG = f"{ANNOTATION_PREFIX}/cluster"
AWS_ID_ANNOTATION = f"{ANNOTATION_PREFIX}/aws-id"
# Written before a create is sent: if a later attempt finds a different token here, the spec
# changed while the outcome of that create was unknown, and AWS must be searched first.
CREATE_INTENT_ANNOTATION = f"{ANNOTATION_PREFIX}/create-token"
MAX_CLIENT_TOKEN = 64  # EC2's limit
MAX_TAG_VALUE = 256  # EC2's limit
RESERVED_TAG_PREFIX = "aws:"  # AWS's own tags: never written, never removed

READY = "Ready"
SYNCED = "Synced"  # whether AWS matches the spec
INVALID_SPEC = "InvalidSpec"
QUOTA_EXCEEDED = "QuotaExceeded"
UNSUPPORTED_INSTANCE_TYPE = "UnsupportedInstanceType"
TARGET_NOT_RUNNING = "TargetNotRunning"
# Failed reasons that are facts of the world, not of the spec: a quota frees, an instance is resized,
# a resource AWS did not find appears. The resync looks at them again (cheaply), once a period.
RECHECKED_AT_RESYNC = frozenset(
    {QUOTA_EXCEEDED, UNSUPPORTED_INSTANCE_TYPE, TARGET_NOT_RUNNING, "AdoptedResourceNotFound", "OwnedByAnother"}
)


@dataclass(frozen=True)
class Owner:
    """The custom resource an AWS resource belongs to."""

    kind: str
    namespace: str
    name: str
    uid: str
    generation: int
    cluster: str
    created_at: datetime | None = None  # metadata.creationTimestamp: where a spec.duration starts

    @property
    def marker(self) -> str:
        return f"[trafficmirror:{self.uid}]"


def bounded_tag_value(value: str) -> str:
    """A value cut to EC2's 256 characters; a cut one ends in a hash of the whole, so it stays unique."""
    if len(value) <= MAX_TAG_VALUE:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    return f"{value[: MAX_TAG_VALUE - len(digest) - 1]}~{digest}"


def owner_tags(owner: Owner, user_tags: dict[str, str] | None) -> dict[str, str]:
    """Every tag the AWS resource should carry: the spec's, then the ownership tags (the UID exact)."""
    return {
        **(user_tags or {}),
        OWNER_UID_TAG: owner.uid,
        OWNER_TAG: bounded_tag_value(f"{owner.kind}/{owner.namespace}/{owner.name}"),
        CLUSTER_TAG: bounded_tag_value(owner.cluster),
    }


@dataclass(frozen=True)
class TagChanges:
    add: dict[str, str]  # new keys and changed values
    # Keys the resource has and the spec does not; never aws: keys (AWS's own) nor trafficmirror.io/
    # keys (ownership tags are overwritten, never removed: the IAM policy forbids it too).
    remove: list[str]

    @property
    def empty(self) -> bool:
        return not (self.add or self.remove)


def tag_changes(desired: dict[str, str], actual: dict[str, str]) -> TagChanges:
    """The spec's tags are the whole set: what is missing is added, what is extra removed."""
    add = {k: v for k, v in desired.items() if actual.get(k) != v}
    remove = sorted(
        k for k in actual if k not in desired and not k.startswith((RESERVED_TAG_PREFIX, f"{ANNOTATION_PREFIX}/"))
    )
    return TagChanges(add, remove)


LiveOwners = Callable[[str], "str | None"]  # UID → "Kind namespace/name" of a live object, or None


def other_owner(tags: dict[str, str], owner: Owner, live_owners: LiveOwners | None) -> str | None:
    """The live object ("Kind namespace/name") that owns a resource tagged for another UID, if any.

    `live_owners` looks a UID up among the objects that exist; None when that is not known (nothing
    is refused then). A resource whose owner is gone (deletionPolicy Orphan) may be adopted.
    """
    uid = tags.get(OWNER_UID_TAG)
    if not uid or uid == owner.uid or live_owners is None:
        return None
    return live_owners(uid)


def owner_description(owner: Owner, description: str | None) -> str:
    """The owner UID goes into the description too: for filters and targets it is the only text AWS can filter on."""
    return f"{description} {owner.marker}" if description else owner.marker


def is_owned_by(tags: dict[str, str], description: str, owner: Owner) -> bool:
    return tags.get(OWNER_UID_TAG) == owner.uid or owner.marker in description


def client_token(uid: str, parameters: Any) -> str:
    """The same object asking for the same thing always sends the same token (≤ 64 characters)."""
    digest = hashlib.sha256(json.dumps(parameters, sort_keys=True, default=str).encode()).hexdigest()
    return f"{uid}-{digest}"[:MAX_CLIENT_TOKEN]


@dataclass(frozen=True)
class ConditionUpdate:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Outcome:
    """What a reconcile decided: the status to write, events to post, and whether to come back."""

    phase: Phase
    conditions: list[ConditionUpdate]
    status_fields: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, str | None] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    retry_after: float | None = None  # seconds; None means nothing more to do until something changes
    clear_conditions: list[str] = field(default_factory=list)  # condition types that no longer apply

    @property
    def ready_reason(self) -> str:
        return next((c.reason for c in self.conditions if c.type == READY), "")


def ready(message: str, **status_fields: Any) -> Outcome:
    return Outcome(
        Phase.READY,
        [
            ConditionUpdate(READY, "True", "Ready", message),
            ConditionUpdate(SYNCED, "True", "Synced", "AWS matches the spec"),
        ],
        status_fields=status_fields,
    )


def pending(reason: str, message: str, retry_after: float, **status_fields: Any) -> Outcome:
    return Outcome(
        Phase.PENDING,
        [ConditionUpdate(READY, "False", reason, message), ConditionUpdate(SYNCED, "False", reason, message)],
        status_fields=status_fields,
        retry_after=retry_after,
    )


def failed(reason: str, message: str, **status_fields: Any) -> Outcome:
    """Terminal: the spec (or the world, e.g. an instance type) must change. No retry is scheduled."""
    return Outcome(
        Phase.FAILED,
        [ConditionUpdate(READY, "False", reason, message), ConditionUpdate(SYNCED, "False", reason, message)],
        status_fields=status_fields,
    )


def deleting(reason: str, message: str, retry_after: float) -> Outcome:
    """A delete that waits (for sessions, for AWS): the phase stays Deleting."""
    return Outcome(
        Phase.DELETING,
        [ConditionUpdate(READY, "False", reason, message), ConditionUpdate(SYNCED, "False", reason, message)],
        retry_after=retry_after,
    )


def merge_conditions(
    existing: list[dict[str, Any]],
    updates: list[ConditionUpdate],
    generation: int,
    now: datetime | None = None,
    clear: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Kubernetes-convention conditions: lastTransitionTime moves only when the status does."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    by_type = {c["type"]: dict(c) for c in existing if c.get("type") not in (clear or [])}
    for update in updates:
        previous = by_type.get(update.type)
        transitioned = previous is None or previous.get("status") != update.status
        by_type[update.type] = {
            "type": update.type,
            "status": update.status,
            "reason": update.reason,
            "message": update.message,
            "observedGeneration": generation,
            "lastTransitionTime": stamp if transitioned else previous.get("lastTransitionTime", stamp),  # type: ignore[union-attr]
        }
    return list(by_type.values())


def transition_events(previous_phase: str | None, previous_reason: str | None, outcome: Outcome) -> list[Event]:
    """An Event for every change of phase or reason, on top of what the reconciler asked for."""
    events = list(outcome.events)
    if (previous_phase, previous_reason) != (outcome.phase.value, outcome.ready_reason) and not any(
        e.reason == outcome.ready_reason for e in events
    ):
        kind = "Warning" if outcome.phase is Phase.FAILED else "Normal"
        message = next((c.message for c in outcome.conditions if c.type == READY), "")
        events.append(Event(kind, outcome.ready_reason or outcome.phase.value, message))
    return events
