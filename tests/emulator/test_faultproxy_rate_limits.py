"""The fault proxy's emulated EC2 rate limits, and the operator's EC2 adapter paced against them.

The proxy answers an empty bucket the way EC2 does (HTTP 503, RequestLimitExceeded, "Request limit exceeded.");
the adapter's pacer spends the same buckets no faster than they refill, so a burst is never throttled.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from trafficmirror.aws.ec2 import Ec2Mirror
from trafficmirror_testbed.emulator import DUMMY_CREDENTIALS, Emulator
from trafficmirror_testbed.faultproxy import FaultProxy
from trafficmirror_testbed.seed import World

SCALE = 0.2  # mutating APIs: 10 tokens, +1 per second; Describe*: 20 tokens, +4 per second


@pytest.fixture
def proxy(emulator: Emulator) -> Iterator[FaultProxy]:
    with FaultProxy(emulator.endpoint_url, rate_limits=SCALE, record_calls=True) as running:
        yield running


def proxied_client(proxy: FaultProxy, emulator: Emulator) -> Any:
    config = botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1})
    return boto3.client(
        "ec2",
        endpoint_url=proxy.endpoint_url,
        region_name=emulator.region,
        config=config,
        aws_access_key_id=DUMMY_CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=DUMMY_CREDENTIALS["aws_secret_access_key"],
    )


def test_an_empty_bucket_answers_request_limit_exceeded_as_ec2_does(proxy: FaultProxy, emulator: Emulator) -> None:
    """Creates as fast as they go until one is refused: the bucket's 10 tokens plus what refilled meanwhile."""
    ec2 = proxied_client(proxy, emulator)
    started, created, error = time.monotonic(), 0, None
    while error is None and created < 200:
        try:
            ec2.create_traffic_mirror_filter(Description=f"burst {created}")
            created += 1
        except ClientError as refused:
            error = refused.response
    took = time.monotonic() - started
    assert error is not None, f"{created} creates in {took:.1f}s and none refused"
    assert error["Error"] == {"Code": "RequestLimitExceeded", "Message": "Request limit exceeded."}
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert 10 <= created <= 10 + took * 1.0 + 1  # 10 tokens, +1 per second (5 scaled by 0.2)
    # Other APIs have buckets of their own; a Describe is not affected.
    ec2.describe_traffic_mirror_filters()
    # The bucket refills at 1 token per second.
    time.sleep(1.1)
    ec2.create_traffic_mirror_filter(Description="after a second")
    counters = proxy.counters()
    assert counters["rate_limited"] == {"CreateTrafficMirrorFilter": 1}
    assert counters["calls"]["CreateTrafficMirrorFilter"] == created + 2
    # The throttled call never reached the emulator.
    described = emulator.client("ec2").describe_traffic_mirror_filters()["TrafficMirrorFilters"]
    assert len(described) == created + 1


def test_the_paced_adapter_sends_a_burst_without_a_throttle(
    proxy: FaultProxy, emulator: Emulator, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """25 creates at once through the operator's adapter: the first 9 go at once, the others at 1 per second."""
    for key, value in emulator.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint_url)
    aws = Ec2Mirror.connect(emulator.region, max_attempts=1, pacing_scale=SCALE)
    started = time.monotonic()
    created = [aws.create_filter(client_token=f"paced-{i}", description=f"paced {i}", tags={}) for i in range(25)]
    took = time.monotonic() - started
    assert len({f.filter_id for f in created}) == 25
    assert proxy.counters()["rate_limited"] == {}
    assert aws.pacer is not None and aws.pacer.throttles == 0
    assert took >= 25 - 9 - 1  # the pacer waited (bucket of 9 = 10 x 0.9), and nothing was refused


def test_the_adapter_adapts_when_someone_else_spends_the_tokens(
    proxy: FaultProxy, emulator: Emulator, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another client of the account empties the bucket first: the adapter is throttled, slows down, and with
    botocore's retries every create still succeeds."""
    for key, value in emulator.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint_url)
    other = proxied_client(proxy, emulator)
    for index in range(10):
        other.create_traffic_mirror_filter(Description=f"someone else {index}")
    aws = Ec2Mirror.connect(emulator.region, max_attempts=8, pacing_scale=SCALE)
    created = [aws.create_filter(client_token=f"late-{i}", description=f"late {i}", tags={}) for i in range(8)]
    assert len({f.filter_id for f in created}) == 8
    assert aws.pacer is not None and aws.pacer.throttles >= 1
    rate_limited = proxy.counters()["rate_limited"].get("CreateTrafficMirrorFilter", 0)
    assert rate_limited == aws.pacer.throttles
    assert rate_limited <= 3, "after a throttle the adapter must wait for tokens, not keep knocking"
