"""What a pod or node selector session asks EC2, through the adapter against the emulator: the ENI
holding a pod's secondary address (AWS's `addresses.private-ip-address` filter matches every private
address of an ENI, not only the primary), branch ENIs, a node's ENIs, and the sessions on an ENI;
batched and cached, calls counted."""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any

import pytest

from trafficmirror.aws.ec2 import Ec2Mirror
from trafficmirror_testbed.emulator import Emulator
from trafficmirror_testbed.seed import World


def _adapter(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> tuple[Ec2Mirror, Counter[str]]:
    for key, value in emulator.env().items():
        monkeypatch.setenv(key, value)
    calls: Counter[str] = Counter()
    return Ec2Mirror.connect(emulator.region, observe=lambda operation, _result: calls.update([operation])), calls


def _secondary(ec2: Any, eni: str, count: int) -> list[str]:
    ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=count)
    raw = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]
    return [a["PrivateIpAddress"] for a in raw["PrivateIpAddresses"] if not a.get("Primary")]


def test_the_address_filter_finds_secondary_addresses_in_one_batched_cached_call(
    emulator: Emulator, ec2: Any, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws, calls = _adapter(emulator, monkeypatch)
    launched = ec2.run_instances(
        ImageId=world.image_id, InstanceType="t3.small", MinCount=2, MaxCount=2, SubnetId=world.subnet_ids["a"]
    )["Instances"]
    enis = [i["NetworkInterfaces"][0]["NetworkInterfaceId"] for i in launched]
    pods = {eni: _secondary(ec2, eni, 3) for eni in enis}
    addresses = [a for found in pods.values() for a in found]
    found = aws.interfaces_by_address([*addresses, "10.255.255.254"])
    assert {a: i.network_interface_id for a, i in found.items()} == {a: e for e, f in pods.items() for a in f}
    assert calls["DescribeNetworkInterfaces"] == 1
    aws.interfaces_by_address(addresses)  # cached
    assert calls["DescribeNetworkInterfaces"] == 1
    aws.interfaces_by_address(addresses[:1], refresh=frozenset(addresses[:1]))
    assert calls["DescribeNetworkInterfaces"] == 2
    primary = aws.instance_network_interfaces(launched[0]["InstanceId"])
    assert primary[0].network_interface_id == enis[0] and primary[0].device_index == 0


def test_a_branch_eni_says_so_and_an_unknown_interface_type_is_refused(
    emulator: Emulator, ec2: Any, world: World, monkeypatch: pytest.MonkeyPatch, expect_error: Any
) -> None:
    aws, _calls = _adapter(emulator, monkeypatch)
    branch = ec2.create_network_interface(SubnetId=world.subnet_ids["a"], InterfaceType="branch")["NetworkInterface"]
    assert branch["InterfaceType"] == "branch"
    (address,) = _secondary(ec2, branch["NetworkInterfaceId"], 1)
    assert aws.interfaces_by_address([address])[address].is_branch
    expect_error("InvalidParameterValue", ec2.create_network_interface, SubnetId=world.subnet_ids["a"],
                 InterfaceType="bridge")  # fmt: skip


def test_sessions_on_enis_counts_everyones_in_one_call(
    emulator: Emulator, ec2: Any, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws, calls = _adapter(emulator, monkeypatch)
    launched = ec2.run_instances(
        ImageId=world.image_id, InstanceType="t3.small", MinCount=3, MaxCount=3, SubnetId=world.subnet_ids["a"]
    )["Instances"]
    source, other, capture = (i["NetworkInterfaces"][0]["NetworkInterfaceId"] for i in launched)
    target = ec2.create_traffic_mirror_target(NetworkInterfaceId=capture)["TrafficMirrorTarget"]
    mirror_filter = ec2.create_traffic_mirror_filter()["TrafficMirrorFilter"]
    for number in (1, 2):
        ec2.create_traffic_mirror_session(
            NetworkInterfaceId=source, TrafficMirrorTargetId=target["TrafficMirrorTargetId"],
            TrafficMirrorFilterId=mirror_filter["TrafficMirrorFilterId"], SessionNumber=number,
        )  # fmt: skip
    found = aws.sessions_on([source, other])
    assert (len(found[source]), found[other]) == (2, [])
    assert calls["DescribeTrafficMirrorSessions"] == 1


def test_no_two_enis_of_a_subnet_share_an_address_until_it_is_full(ec2: Any, world: World, expect_error: Any) -> None:
    """A subnet's private addresses are unique (moto alone handed one address to two ENIs, so a pod's
    address seemed to be on an unrelated ENI). A /28 has 16 addresses, AWS reserves the first four and
    the last: 11 to hand out, each once, whether primary or secondary; then the subnet is full."""
    vpc = world.vpc_id
    cidr = "10.42.250.0/28"
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=cidr)["Subnet"]["SubnetId"]
    enis: list[str] = []
    try:
        for _ in range(3):
            enis.append(ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"])
        for eni in enis:
            ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=2)
        ec2.assign_private_ip_addresses(NetworkInterfaceId=enis[0], SecondaryPrivateIpAddressCount=2)
        raw = ec2.describe_network_interfaces(NetworkInterfaceIds=enis)["NetworkInterfaces"]
        held = [a["PrivateIpAddress"] for r in raw for a in r["PrivateIpAddresses"]]
        assert len(held) == 11 and len(set(held)) == 11, held
        hosts = [str(h) for h in ipaddress.IPv4Network(cidr)]
        assert set(held) == set(hosts[4:-1])
        expect_error("InsufficientFreeAddressesInSubnet", ec2.assign_private_ip_addresses,
                     NetworkInterfaceId=enis[1], SecondaryPrivateIpAddressCount=1)  # fmt: skip
    finally:
        for eni in enis:
            ec2.delete_network_interface(NetworkInterfaceId=eni)
        ec2.delete_subnet(SubnetId=subnet)
