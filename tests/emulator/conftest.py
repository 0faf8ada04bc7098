"""Fixtures for the emulator's own tests: one real emulator subprocess per session, reset before each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError

from trafficmirror_testbed.emulator import Emulator
from trafficmirror_testbed.seed import World, seed_world


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def emulator(emulator_server: Emulator) -> Emulator:
    """The shared emulator, with every resource forgotten and the switches back at their start-up values."""
    emulator_server.reset()
    return emulator_server


@pytest.fixture
def ec2(emulator: Emulator) -> Any:
    return emulator.client("ec2")


@pytest.fixture
def world(ec2: Any) -> World:
    return seed_world(ec2)


ExpectError = Callable[..., str]


@pytest.fixture
def expect_error() -> ExpectError:
    """`expect_error("Code", call, **kwargs)`: the call must fail with that AWS code; returns the message."""

    def check(code: str, call: Callable[..., Any], **kwargs: Any) -> str:
        with pytest.raises(ClientError) as caught:
            call(**kwargs)
        error = caught.value.response["Error"]
        assert error["Code"] == code, error
        # EC2 answers client errors with 400, and a successful dry run with 412.
        status = 412 if code == "DryRunOperation" else 400
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
        return str(error["Message"])

    return check


@dataclass
class Mirror:
    """Shortcuts for building mirror resources in tests; every call goes through boto3 to the emulator."""

    ec2: Any
    world: World

    def launch(self, instance_type: str, count: int = 1) -> list[tuple[str, str]]:
        """Run instances in the world's subnet "a"; returns (instance ID, primary ENI ID) pairs."""
        launched = self.ec2.run_instances(
            ImageId=self.world.image_id,
            InstanceType=instance_type,
            MinCount=count,
            MaxCount=count,
            SubnetId=self.world.subnet_ids["a"],
        )["Instances"]
        return [(i["InstanceId"], i["NetworkInterfaces"][0]["NetworkInterfaceId"]) for i in launched]

    def target(self, role_or_eni: str = "capture", **kwargs: Any) -> str:
        eni = self.world.eni(role_or_eni) if role_or_eni in self.world.nodes else role_or_eni
        created = self.ec2.create_traffic_mirror_target(NetworkInterfaceId=eni, **kwargs)
        return str(created["TrafficMirrorTarget"]["TrafficMirrorTargetId"])

    def filter(self, **kwargs: Any) -> str:
        return str(self.ec2.create_traffic_mirror_filter(**kwargs)["TrafficMirrorFilter"]["TrafficMirrorFilterId"])

    def rule(self, filter_id: str, number: int, direction: str = "ingress", **kwargs: Any) -> str:
        params: dict[str, Any] = {
            "TrafficMirrorFilterId": filter_id,
            "TrafficDirection": direction,
            "RuleNumber": number,
            "RuleAction": "accept",
            "SourceCidrBlock": "0.0.0.0/0",
            "DestinationCidrBlock": "0.0.0.0/0",
        }
        params.update(kwargs)
        created = self.ec2.create_traffic_mirror_filter_rule(**params)
        return str(created["TrafficMirrorFilterRule"]["TrafficMirrorFilterRuleId"])

    def session_params(
        self, source: str = "web", target: str | None = None, filter_id: str | None = None, number: int = 1
    ) -> dict[str, Any]:
        eni = self.world.eni(source) if source in self.world.nodes else source
        return {
            "NetworkInterfaceId": eni,
            "TrafficMirrorTargetId": target or self.target(),
            "TrafficMirrorFilterId": filter_id or self.filter(),
            "SessionNumber": number,
        }

    def session(self, source: str = "web", target: str | None = None, **kwargs: Any) -> dict[str, Any]:
        params = self.session_params(source, target, kwargs.pop("TrafficMirrorFilterId", None))
        params.update(kwargs)
        return dict(self.ec2.create_traffic_mirror_session(**params)["TrafficMirrorSession"])

    def resize(self, instance_id: str, instance_type: str) -> None:
        """The path AWS allows: stop, modify, start."""
        self.ec2.stop_instances(InstanceIds=[instance_id])
        self.ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance_id], WaiterConfig={"Delay": 1})
        self.ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": instance_type})
        self.ec2.start_instances(InstanceIds=[instance_id])
        self.ec2.get_waiter("instance_running").wait(InstanceIds=[instance_id], WaiterConfig={"Delay": 1})


@pytest.fixture
def mirror(ec2: Any, world: World) -> Mirror:
    return Mirror(ec2, world)
