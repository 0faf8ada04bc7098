"""EC2's request rate limits, as AWS documents them, for the fault proxy to enforce.

Source: Amazon EC2 Developer Guide, "Request throttling for the Amazon EC2 API", section "Request token bucket
sizes and refill rates" (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html):

- EC2 throttles each account per Region with the token bucket algorithm. Each API is evaluated individually:
  a request takes one token from that API's bucket; an empty bucket answers RequestLimitExceeded and does not
  affect the other APIs' buckets.
- A bucket refills at a set rate per second up to its maximum capacity; refill tokens beyond it are discarded.
- The bucket sizes and refill rates are the defaults of the API's category; a few APIs ("uncategorized") have
  their own. Describe calls of a short list of APIs made without pagination and without a filter take their
  token from a smaller bucket.

The numbers are data (`CATEGORY_BUCKETS`, `UNCATEGORIZED_BUCKETS`), the arithmetic is `TokenBucket`. This is the
emulated AWS's own code: it must not import the operator's client-side pacing, which is what it puts to the proof.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

DOCUMENTATION = "https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html"


@dataclass(frozen=True)
class BucketSpec:
    capacity: float  # "bucket maximum capacity": tokens, i.e. requests in one burst
    refill_per_second: float  # "bucket refill rate": tokens added per second


NON_MUTATING = "non-mutating"
UNFILTERED = "unfiltered-and-unpaginated-non-mutating"
MUTATING = "mutating"
RESOURCE_INTENSIVE = "resource-intensive"

# The documented defaults per API category.
CATEGORY_BUCKETS: dict[str, BucketSpec] = {
    NON_MUTATING: BucketSpec(100, 20),  # Describe*, List*, Search*, Get* not in another category
    UNFILTERED: BucketSpec(50, 10),  # the APIs below, called without pagination and without a filter
    MUTATING: BucketSpec(50, 5),  # every other API that is neither resource-intensive nor uncategorized
    RESOURCE_INTENSIVE: BucketSpec(50, 5),
}
UNFILTERED_APIS = frozenset(
    {
        "DescribeInstances",
        "DescribeInstanceStatus",
        "DescribeNetworkInterfaces",
        "DescribeSecurityGroups",
        "DescribeSnapshots",
        "DescribeSpotInstanceRequests",
        "DescribeVolumes",
    }
)
RESOURCE_INTENSIVE_APIS = frozenset(
    {
        "AcceptVpcPeeringConnection",
        "AuthorizeSecurityGroupIngress",
        "CancelSpotInstanceRequests",
        "CreateKeyPair",
        "CreateVpcPeeringConnection",
        "DeleteVpcPeeringConnection",
        "RejectVpcPeeringConnection",
        "RevokeSecurityGroupIngress",
        "RequestSpotInstances",
    }
)
# "Uncategorized actions" with buckets of their own: the ones the operator, the tests or the demo call.
UNCATEGORIZED_BUCKETS: dict[str, BucketSpec] = {
    "CreateTags": BucketSpec(100, 10),
    "DeleteTags": BucketSpec(100, 10),
    "CreateNetworkInterface": BucketSpec(100, 5),
    "DeleteNetworkInterface": BucketSpec(100, 5),
    "ModifyNetworkInterfaceAttribute": BucketSpec(100, 5),
}
_NON_MUTATING_PREFIXES = ("Describe", "List", "Search", "Get")
_PAGINATION_OR_FILTER = ("MaxResults", "NextToken", "Filter.")


def mutates(action: str) -> bool:
    """Whether an EC2 action changes something: every action but the read-only ones (the prefixes above)."""
    return not action.startswith(_NON_MUTATING_PREFIXES)


def bucket_for(action: str, params: Mapping[str, object] | None = None) -> tuple[str, BucketSpec]:
    """(the key of the bucket a call of `action` with these query parameters draws from, its size and rate)."""
    if action in UNCATEGORIZED_BUCKETS:
        return action, UNCATEGORIZED_BUCKETS[action]
    if not mutates(action):
        keys = params or {}
        paged_or_filtered = any(str(k).startswith(_PAGINATION_OR_FILTER) for k in keys)
        if action in UNFILTERED_APIS and not paged_or_filtered:
            return f"{action}/unfiltered", CATEGORY_BUCKETS[UNFILTERED]
        return action, CATEGORY_BUCKETS[NON_MUTATING]
    if action in RESOURCE_INTENSIVE_APIS:
        return action, CATEGORY_BUCKETS[RESOURCE_INTENSIVE]
    return action, CATEGORY_BUCKETS[MUTATING]


class TokenBucket:
    """One API's bucket: starts full, refills continuously at `refill_per_second`, never above `capacity`."""

    def __init__(self, spec: BucketSpec, now: float) -> None:
        self.spec = spec
        self.tokens = float(spec.capacity)
        self.updated = now

    def take(self, now: float) -> bool:
        """Take one token at `now` (seconds); False (throttled, nothing taken) when the bucket holds less than one."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.spec.capacity), self.tokens + elapsed * self.spec.refill_per_second)
        self.updated = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class Ec2RateLimits:
    """The account's buckets in one Region, created full on an API's first call. Thread-safe.

    `scale` multiplies every capacity and refill rate (1.0: AWS's defaults; 0.5: an account half as generous).
    """

    def __init__(self, scale: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if scale <= 0:
            raise ValueError(f"scale must be positive, not {scale}")
        self.scale = scale
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def allow(self, action: str, params: Mapping[str, object] | None = None) -> bool:
        key, spec = bucket_for(action, params)
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                scaled = BucketSpec(spec.capacity * self.scale, spec.refill_per_second * self.scale)
                bucket = self._buckets[key] = TokenBucket(scaled, now)
            return bucket.take(now)
