"""seed_world: the VPC, subnets and instances by role that the other tests and the demo stand on."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from trafficmirror_testbed.seed import ROLES, SUBNETS, World, seed_world

pytestmark = pytest.mark.emulator


def test_world_has_every_role_on_its_type(ec2: Any, world: World) -> None:
    assert set(world.nodes) == set(ROLES) >= {"web", "capture", "legacy-web", "legacy-capture", "gpu", "metal"}
    for role, (instance_type, subnet_key) in ROLES.items():
        node = world.nodes[role]
        assert node.instance_type == instance_type
        assert node.subnet_id == world.subnet_ids[subnet_key]
        assert ipaddress.ip_address(node.private_ip) in ipaddress.ip_network(SUBNETS[subnet_key])
        eni = ec2.describe_network_interfaces(NetworkInterfaceIds=[node.eni_id])["NetworkInterfaces"][0]
        assert eni["Attachment"]["InstanceId"] == node.instance_id
        assert eni["Attachment"]["DeviceIndex"] == 0
        assert eni["PrivateIpAddress"] == node.private_ip
    assert world.nodes["legacy-web"].instance_type == "t2.micro"
    assert {world.nodes["web"].instance_type, world.nodes["capture"].instance_type} == {
        "t3.small",
        "c5.large",
    }
    assert world.eni_ids["web"] == world.eni("web")
    assert world.instance_ids["capture"] == world.instance("capture")
    assert world.private_ips["gpu"] == world.ip("gpu")


def test_instances_are_running_and_tagged(ec2: Any, world: World) -> None:
    reservations = ec2.describe_instances(InstanceIds=list(world.instance_ids.values()))["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    assert {i["State"]["Name"] for i in instances} == {"running"}
    roles = {t["Value"] for i in instances for t in i["Tags"] if t["Key"] == "trafficmirror.io/role"}
    assert roles == set(ROLES)


def test_seeding_again_finds_the_same_world(ec2: Any, world: World) -> None:
    assert seed_world(ec2) == world
    assert len(ec2.describe_vpcs(Filters=[{"Name": "tag:trafficmirror.io/testbed", "Values": ["world"]}])["Vpcs"]) == 1
    running = ec2.describe_instances(Filters=[{"Name": "tag:trafficmirror.io/testbed", "Values": ["world"]}])
    assert sum(len(r["Instances"]) for r in running["Reservations"]) == len(ROLES)


def test_seeding_again_reports_current_instance_types(ec2: Any, world: World, mirror: Any) -> None:
    mirror.resize(world.instance("legacy-web"), "t3.small")
    again = seed_world(ec2)
    assert again.nodes["legacy-web"].instance_type == "t3.small"
    assert again.instance("legacy-web") == world.instance("legacy-web")
