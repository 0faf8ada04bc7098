"""EC2's request rate limits, emulated by the fault proxy, against the operator's own pacing.

The proxy enforces EC2's per-API token buckets (trafficmirror_testbed/ec2_throttling.py), scaled down so that a
test-sized burst is far beyond them: an account whose buckets are a fifth of the defaults (mutating APIs: 10 tokens,
1 more per second), and an operator told so (TRAFFICMIRROR_AWS_RATE_LIMIT_SCALE). A burst of 50 objects, 40 of
them sessions, must converge with at most 5 % of the EC2 calls throttled and no object ever Failed.
"""

from __future__ import annotations

import time

from tests.integration.test_faults import (  # noqa: F401
    FaultBed,
    apply_all,
    assert_one_aws_resource_per_object,
    bed,
    cluster_objects,
    mirror_objects,
    phase,
    shared_operator_frozen,
)

SCALE = 0.2
THROTTLED_AT_MOST = 0.05
CONVERGE_SECONDS = 300.0


def test_a_burst_under_ec2_rate_limits_converges_paced(bed: FaultBed) -> None:  # noqa: F811
    bed.proxy.configure(rate_limits=SCALE)
    bed.operator(TRAFFICMIRROR_AWS_RATE_LIMIT_SCALE=str(SCALE))
    objects = mirror_objects(bed, "paced")
    bed.proxy.reset_counters()
    started = time.monotonic()
    apply_all(bed, objects)
    phases_seen: set[tuple[str, str]] = set()
    ready: list[dict[str, object]] = []
    while time.monotonic() - started < CONVERGE_SECONDS:
        seen = cluster_objects(bed, "paced")
        phases_seen |= {(str(o["metadata"]["name"]), phase(o)) for o in seen}
        if len(seen) == len(objects) and all(phase(o) == "Ready" for o in seen):
            ready = seen
            break
        time.sleep(0.5)
    took = time.monotonic() - started
    counters = bed.proxy.counters()
    calls, limited = sum(counters["calls"].values()), sum(counters["rate_limited"].values())
    print(
        f"{len(objects)} objects Ready in {took:.0f}s under EC2's buckets x{SCALE}: {calls} EC2 calls, "
        f"{limited} throttled ({limited / max(calls, 1):.1%}) {counters['rate_limited']}\ncalls: {counters['calls']}"
    )
    failed = sorted(name for name, seen_phase in phases_seen if seen_phase == "Failed")
    assert not failed, f"throttling reached users as Failed: {failed}"
    assert ready, f"not all Ready after {CONVERGE_SECONDS}s:\n{bed.cluster.operator.log_tail(60)}"
    assert limited <= THROTTLED_AT_MOST * calls, f"{limited} of {calls} calls throttled"
    # The burst really was beyond the buckets: 40 session creates against 10 tokens and 1 per second.
    assert counters["calls"]["CreateTrafficMirrorSession"] >= 40
    assert took >= (40 - 10) / (5 * SCALE) * 0.9
    assert_one_aws_resource_per_object(bed, ready)
