"""The operator's client-side pacing (aws/pacing.py) and the emulated EC2 buckets (testbed/ec2_throttling.py):
their arithmetic as tables, on explicit clocks."""

from __future__ import annotations

import pytest

from trafficmirror.aws import pacing
from trafficmirror.aws.pacing import BucketSize, Pacer, TokenBucket, category_of
from trafficmirror_testbed import ec2_throttling
from trafficmirror_testbed.ec2_throttling import BucketSpec, Ec2RateLimits, bucket_for


# --- the documented numbers, twice (the operator's copy and the emulated AWS's), agree ------------------------
@pytest.mark.parametrize(
    ("operation", "category", "capacity", "refill"),
    [
        ("CreateTrafficMirrorSession", pacing.MUTATING, 50, 5),
        ("ModifyTrafficMirrorFilterRule", pacing.MUTATING, 50, 5),
        ("DeleteTrafficMirrorTarget", pacing.MUTATING, 50, 5),
        ("DescribeTrafficMirrorSessions", pacing.NON_MUTATING, 100, 20),
        ("DescribeInstanceTypes", pacing.NON_MUTATING, 100, 20),
        ("DescribeInstances", pacing.UNFILTERED_NON_MUTATING, 50, 10),
        ("DescribeNetworkInterfaces", pacing.UNFILTERED_NON_MUTATING, 50, 10),
        ("CreateTags", pacing.TAGS, 100, 10),
        ("DeleteTags", pacing.TAGS, 100, 10),
    ],
)
def test_categories_and_documented_bucket_sizes(operation: str, category: str, capacity: int, refill: int) -> None:
    assert category_of(operation) == category
    assert pacing.CATEGORY_BUCKETS[category] == BucketSize(capacity, refill)
    # The emulated AWS, asked the way the operator asks (by ID: neither paged nor filtered), agrees.
    _, spec = bucket_for(operation, {"Action": operation})
    assert spec == BucketSpec(capacity, refill)


@pytest.mark.parametrize(
    ("action", "params", "key", "spec"),
    [
        ("DescribeInstances", {}, "DescribeInstances/unfiltered", BucketSpec(50, 10)),
        ("DescribeInstances", {"InstanceId.1": "i-1"}, "DescribeInstances/unfiltered", BucketSpec(50, 10)),
        ("DescribeInstances", {"MaxResults": "1000"}, "DescribeInstances", BucketSpec(100, 20)),
        ("DescribeInstances", {"Filter.1.Name": "x"}, "DescribeInstances", BucketSpec(100, 20)),
        ("DescribeNetworkInterfaces", {"NextToken": "t"}, "DescribeNetworkInterfaces", BucketSpec(100, 20)),
        ("DescribeTrafficMirrorTargets", {}, "DescribeTrafficMirrorTargets", BucketSpec(100, 20)),
        ("RunInstances", {}, "RunInstances", BucketSpec(50, 5)),
        ("AuthorizeSecurityGroupIngress", {}, "AuthorizeSecurityGroupIngress", BucketSpec(50, 5)),
        ("CreateTags", {}, "CreateTags", BucketSpec(100, 10)),
    ],
)
def test_emulated_bucket_for_a_call(action: str, params: dict[str, str], key: str, spec: BucketSpec) -> None:
    assert bucket_for(action, params) == (key, spec)
    assert ec2_throttling.DOCUMENTATION.startswith("https://docs.aws.amazon.com/")


# --- the emulated AWS bucket: take or refuse ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("calls", "allowed"),
    [
        # (time of each call) → how many are allowed; mutating: 50 tokens, +5/s
        ([0.0] * 50, 50),
        ([0.0] * 51, 50),  # the 51st in the same instant is throttled
        ([0.0] * 50 + [0.1], 50),  # 0.5 token refilled: not enough
        ([0.0] * 50 + [0.2], 51),  # 1 token refilled after 0.2 s
        ([0.0] * 50 + [0.2, 0.2], 51),
        ([0.0] * 50 + [1.0] * 6, 55),  # 5 per second
        ([0.0] * 50 + [100.0] * 60, 100),  # refill stops at the capacity
        ([i * 0.2 for i in range(300)], 300),  # at the refill rate, never throttled
    ],
)
def test_emulated_bucket_arithmetic(calls: list[float], allowed: int) -> None:
    clock = iter(calls)
    limits = Ec2RateLimits(clock=lambda: next(clock))
    assert sum(limits.allow("CreateTrafficMirrorSession") for _ in calls) == allowed


def test_emulated_buckets_are_per_api_and_scalable() -> None:
    now = [0.0]
    limits = Ec2RateLimits(scale=0.1, clock=lambda: now[0])  # mutating: 5 tokens, +0.5/s
    assert [limits.allow("CreateTrafficMirrorSession") for _ in range(6)] == [True] * 5 + [False]
    assert limits.allow("CreateTrafficMirrorTarget")  # another API: its own full bucket
    now[0] = 2.0
    assert limits.allow("CreateTrafficMirrorSession")
    assert not limits.allow("CreateTrafficMirrorSession")
    with pytest.raises(ValueError):
        Ec2RateLimits(scale=0)


# --- the operator's bucket: reservations, decrease and increase -------------------------------------------
@pytest.mark.parametrize(
    ("size", "calls", "waits"),
    [
        # capacity x 0.9 tokens at once, then each waits its turn at the refill rate
        (BucketSize(10, 2), [0.0] * 10, [0.0] * 9 + [0.5]),
        (BucketSize(10, 2), [0.0] * 11, [0.0] * 9 + [0.5, 1.0]),
        (BucketSize(10, 2), [0.0] * 9 + [0.5], [0.0] * 10),  # one token refilled by then
        (BucketSize(10, 2), [0.0] * 9 + [10.0] * 10, [0.0] * 18 + [0.5]),  # refilled to 9, not beyond
        (BucketSize(50, 5), [i * 0.2 for i in range(200)], [0.0] * 200),  # at the refill rate: no wait
        (BucketSize(1, 1), [0.0, 0.0], [0.0, 1.0]),  # never less than one token of burst
    ],
)
def test_client_bucket_reservations(size: BucketSize, calls: list[float], waits: list[float]) -> None:
    bucket = TokenBucket(size, now=0.0)
    assert [round(bucket.reserve(t), 6) for t in calls] == waits


def test_client_bucket_adapts_to_throttling() -> None:
    bucket = TokenBucket(BucketSize(50, 5), now=0.0)
    assert bucket.reserve(0.0) == 0.0
    bucket.throttled(0.0)  # AWS's bucket is empty: so is ours, and it refills 30 % slower
    assert (bucket.rate, bucket.tokens) == (3.5, 0.0)
    assert bucket.reserve(0.0) == pytest.approx(1 / 3.5)
    bucket.throttled(0.5)  # the same burst's throttles: one signal, one decrease
    assert bucket.rate == 3.5
    assert bucket.tokens == 0.0
    bucket.throttled(1.0)
    assert bucket.rate == pytest.approx(2.45)
    for second in range(2, 100):
        bucket.throttled(float(second))
    assert bucket.rate == pytest.approx(5 * pacing.MIN_RATE_FRACTION)  # never stops altogether
    for _ in range(19):
        bucket.answered(100.0)
    assert bucket.rate < 5
    bucket.answered(100.0)
    assert bucket.rate == 5  # twenty answers bring it back, and never beyond the documented rate
    bucket.answered(100.0)
    assert bucket.rate == 5


def test_pacer_shares_one_bucket_per_api_and_sleeps_for_its_turn() -> None:
    now = [0.0]
    slept: list[float] = []
    pacer = Pacer(scale=0.1, clock=lambda: now[0], sleep=slept.append)  # mutating: 4.5 → 4 tokens, +0.5/s
    waits = [pacer.wait_turn("CreateTrafficMirrorSession") for _ in range(6)]
    assert waits == [0.0, 0.0, 0.0, 0.0, pytest.approx(1.0), pytest.approx(3.0)]
    assert slept == [pytest.approx(1.0), pytest.approx(3.0)]
    assert pacer.wait_turn("DescribeTrafficMirrorSessions") == 0.0  # another API, another bucket
    pacer.record("CreateTrafficMirrorSession", "RequestLimitExceeded")
    assert pacer.throttles == 1
    assert pacer.waited_seconds == pytest.approx(4.0)


def test_pacing_switched_off() -> None:
    pacer = Pacer(scale=0, sleep=lambda s: pytest.fail("must not sleep"))
    assert [pacer.wait_turn("CreateTrafficMirrorSession") for _ in range(500)] == [0.0] * 500
    pacer.record("CreateTrafficMirrorSession", "RequestLimitExceeded")
    assert pacer.throttles == 0
