"""Client-side pacing of EC2 calls: the operator spends AWS's request tokens no faster than AWS refills them.

EC2 throttles each account per Region with one token bucket per API, sized by the API's category [Amazon EC2
Developer Guide, "Request throttling for the Amazon EC2 API", section "Request token bucket sizes and refill
rates", https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html]. The operator keeps a copy of
those buckets, shared by every reconcile of the process (one `Pacer` per regional client): each HTTP attempt,
botocore's retries included, first takes a token from its API's bucket and waits for one when it is empty. So a
burst of a thousand creates goes out at AWS's refill rate instead of being answered RequestLimitExceeded.

The copy cannot know what other clients of the account spend, nor an account's raised limits, so it adapts:
a RequestLimitExceeded empties that API's bucket and cuts its refill rate by 30 % (multiplicative decrease, at
most once a second: the throttles of one burst are one signal); each answered call gives back a twentieth of the
documented rate (additive increase), up to the documented rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

THROTTLE_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException"})


@dataclass(frozen=True)
class BucketSize:
    capacity: float  # tokens: requests in one burst
    refill_per_second: float


# The documented defaults per API category [EC2 "Request throttling", "Request token bucket sizes and refill rates"].
NON_MUTATING = "non-mutating"
UNFILTERED_NON_MUTATING = "unfiltered-and-unpaginated-non-mutating"
MUTATING = "mutating"
TAGS = "tags"  # CreateTags and DeleteTags are "uncategorized actions" with buckets of their own
CATEGORY_BUCKETS: dict[str, BucketSize] = {
    NON_MUTATING: BucketSize(100, 20),
    UNFILTERED_NON_MUTATING: BucketSize(50, 10),
    MUTATING: BucketSize(50, 5),
    TAGS: BucketSize(100, 10),
}
# Called without pagination and without a filter, these take their token from the smaller bucket. The operator
# asks them by ID (neither paged nor filtered), so its copy always uses the smaller one.
UNFILTERED_OPERATIONS = frozenset(
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
OWN_CATEGORY = {"CreateTags": TAGS, "DeleteTags": TAGS}
_NON_MUTATING_PREFIXES = ("Describe", "List", "Search", "Get")

# Our copy bursts a little less than AWS's bucket holds: the difference absorbs the jitter between the moment a
# token is taken here and the moment AWS counts the request.
CAPACITY_MARGIN = 0.9
DECREASE_FACTOR = 0.7
DECREASE_HOLD_SECONDS = 1.0
INCREASE_FRACTION = 1 / 20
MIN_RATE_FRACTION = 1 / 50


def category_of(operation: str) -> str:
    """The throttling category of an EC2 API (its name as in the API reference, e.g. CreateTrafficMirrorSession)."""
    if operation in OWN_CATEGORY:
        return OWN_CATEGORY[operation]
    if operation in UNFILTERED_OPERATIONS:
        return UNFILTERED_NON_MUTATING
    if operation.startswith(_NON_MUTATING_PREFIXES):
        return NON_MUTATING
    return MUTATING


class TokenBucket:
    """A bucket from which callers reserve tokens: the bucket may go below zero, each reservation then waits its
    turn (first come, first served). Pure arithmetic on the times it is given; thread-safety is the Pacer's."""

    def __init__(self, size: BucketSize, now: float, capacity_margin: float = CAPACITY_MARGIN) -> None:
        self.size = size
        self.capacity = max(1.0, size.capacity * capacity_margin)
        self.rate = size.refill_per_second
        self.tokens = self.capacity
        self.updated = now
        self.decreased_at: float | None = None

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = max(self.updated, now)

    def reserve(self, now: float) -> float:
        """Take one token; the seconds the caller must wait before sending (0.0 when a token was there)."""
        self._refill(now)
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0.0 else -self.tokens / self.rate

    def throttled(self, now: float) -> None:
        """AWS said RequestLimitExceeded: its bucket is empty and fills slower than we thought."""
        self._refill(now)
        self.tokens = min(self.tokens, 0.0)
        if self.decreased_at is not None and now - self.decreased_at < DECREASE_HOLD_SECONDS:
            return
        self.decreased_at = now
        self.rate = max(self.size.refill_per_second * MIN_RATE_FRACTION, self.rate * DECREASE_FACTOR)

    def answered(self, now: float) -> None:
        """A call went through: the rate creeps back towards the documented one."""
        self._refill(now)
        self.rate = min(self.size.refill_per_second, self.rate + self.size.refill_per_second * INCREASE_FRACTION)


class Pacer:
    """The buckets of one account and Region, one per API, created on the API's first call.

    `scale` multiplies the documented sizes (an account with raised limits; 0 switches pacing off).
    """

    def __init__(
        self,
        scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.scale = scale
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()
        self.waited_seconds = 0.0
        self.throttles = 0

    @property
    def enabled(self) -> bool:
        return self.scale > 0

    def _bucket(self, operation: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(operation)
        if bucket is None:
            size = CATEGORY_BUCKETS[category_of(operation)]
            scaled = BucketSize(size.capacity * self.scale, size.refill_per_second * self.scale)
            bucket = self._buckets[operation] = TokenBucket(scaled, now)
        return bucket

    def wait_turn(self, operation: str) -> float:
        """Block until `operation` may be sent; returns the seconds waited."""
        if not self.enabled:
            return 0.0
        with self._lock:
            wait = self._bucket(operation, self._clock()).reserve(self._clock())
            self.waited_seconds += wait
        if wait > 0:
            self._sleep(wait)
        return wait

    def record(self, operation: str, code: str | None) -> None:
        """The outcome of one attempt: an error code, or None when AWS answered without one."""
        if not self.enabled:
            return
        with self._lock:
            bucket = self._bucket(operation, self._clock())
            if code in THROTTLE_CODES:
                self.throttles += 1
                bucket.throttled(self._clock())
            elif code is None:
                bucket.answered(self._clock())

    def install(self, client: Any) -> None:
        """Pace every HTTP attempt of a boto3 EC2 client (botocore's own retries included)."""

        def before_send(event_name: str, **_: Any) -> None:
            self.wait_turn(event_name.rsplit(".", 1)[-1])  # before-send.ec2.<Operation>

        def after_attempt(response: Any, operation: Any, **_: Any) -> None:
            if response is None:
                return  # no answer (a connection error): AWS said nothing of its buckets
            _, parsed = response
            code = parsed.get("Error", {}).get("Code") if isinstance(parsed, dict) else None
            self.record(operation.name, code)

        client.meta.events.register("before-send.ec2", before_send)
        client.meta.events.register("needs-retry.ec2", after_attempt)
