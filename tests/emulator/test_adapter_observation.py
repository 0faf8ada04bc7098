"""The adapter's once-a-period observation of instance types reads them anew: a resize shows at the next
period however short the period is (its cache must not hide it for longer)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from trafficmirror.aws.ec2 import Ec2Mirror, TtlCache
from trafficmirror_testbed.emulator import Emulator
from trafficmirror_testbed.seed import World


def test_a_resize_shows_at_the_next_observation(
    emulator: Emulator, ec2: Any, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in emulator.env().items():
        monkeypatch.setenv(key, value)
    instance = ec2.run_instances(
        ImageId=world.image_id, InstanceType="t3.small", MinCount=1, MaxCount=1, SubnetId=world.subnet_ids["a"]
    )["Instances"][0]
    eni, instance_id = instance["NetworkInterfaces"][0]["NetworkInterfaceId"], instance["InstanceId"]
    aws = Ec2Mirror.connect(emulator.region)
    assert aws.instance_types_behind([eni]) == {eni: "t3.small"}
    ec2.stop_instances(InstanceIds=[instance_id])
    ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "m5.large"})
    ec2.start_instances(InstanceIds=[instance_id])
    assert aws.instance_types_behind([eni]) == {eni: "m5.large"}
    # and the reconciles of the period see what the observation saw
    assert aws.instance_types([instance_id]) == {instance_id: "m5.large"}


def test_a_reconcile_reuses_an_instance_type_no_longer_than_told(
    emulator: Emulator, ec2: Any, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator sets the reuse to a quarter of its resync period: a resize shows within the period."""
    for key, value in emulator.env().items():
        monkeypatch.setenv(key, value)
    instance_id = ec2.run_instances(
        ImageId=world.image_id, InstanceType="t3.small", MinCount=1, MaxCount=1, SubnetId=world.subnet_ids["a"]
    )["Instances"][0]["InstanceId"]
    aws = Ec2Mirror.connect(emulator.region, instance_type_ttl_seconds=0.5)
    assert aws.instance_types([instance_id]) == {instance_id: "t3.small"}
    ec2.stop_instances(InstanceIds=[instance_id])
    ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "c5.large"})
    ec2.start_instances(InstanceIds=[instance_id])
    time.sleep(0.6)
    assert aws.instance_types([instance_id]) == {instance_id: "c5.large"}


def test_an_observation_slower_than_the_type_reuse_still_knows_every_type(
    emulator: Emulator, ec2: Any, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With thousands of ENIs the observation's batches take longer than a type may be reused: each
    type it read must still be in its answer (a type read as unknown is a drift, every period)."""
    for key, value in emulator.env().items():
        monkeypatch.setenv(key, value)
    instances = ec2.run_instances(
        ImageId=world.image_id, InstanceType="t3.small", MinCount=5, MaxCount=5, SubnetId=world.subnet_ids["a"]
    )["Instances"]
    enis = [i["NetworkInterfaces"][0]["NetworkInterfaceId"] for i in instances]
    aws = Ec2Mirror.connect(emulator.region)
    # A clock that moves a minute at every look: every cached entry has expired when it is read back,
    # as after a long observation.
    ticks = iter(range(0, 10**9, 60))
    monkeypatch.setattr(aws, "_instance_types", TtlCache(15.0, clock=lambda: float(next(ticks))))
    monkeypatch.setattr(aws, "_interfaces", TtlCache(15.0, clock=lambda: float(next(ticks))))
    assert aws.instance_types_behind(enis) == dict.fromkeys(enis, "t3.small")
