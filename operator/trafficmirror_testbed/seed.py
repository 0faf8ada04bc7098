"""A small EC2 world for tests and the demo: one VPC, two subnets, and instances by role.

The roles reproduce the field report (DESIGN.md section 1): a web server and a capture box on supported
types, the same pair on t2.micro (where AWS refuses the session), and two types the report names as
unsupported. Everything is tagged, so seeding again against the same server finds what is there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WORLD_TAG = "trafficmirror.io/testbed"
ROLE_TAG = "trafficmirror.io/role"
WORLD_NAME = "world"
VPC_CIDR = "10.42.0.0/16"

# role -> (instance type, subnet key); the comment says what each stands for.
ROLES: dict[str, tuple[str, str]] = {
    "web": ("t3.small", "a"),  # EC2 #1 after the fix: a supported source behind the ALB
    "capture": ("c5.large", "b"),  # a supported capture box / mirror target
    "legacy-web": ("t2.micro", "a"),  # EC2 #1 as reported: AWS refuses it as a source
    "legacy-capture": ("t2.micro", "b"),  # EC2 #2 as reported: accepted as a target, refused at session time
    "gpu": ("p4d.24xlarge", "a"),  # named unsupported by the field report
    "metal": ("m5.metal", "b"),  # bare metal: never supported
}
# /20s: the fault and benchmark runs launch hundreds of instances into one subnet.
SUBNETS: dict[str, str] = {"a": "10.42.16.0/20", "b": "10.42.32.0/20"}


@dataclass(frozen=True)
class Node:
    role: str
    instance_id: str
    instance_type: str
    eni_id: str  # the primary ENI (device index 0)
    private_ip: str
    subnet_id: str
    image_id: str


@dataclass(frozen=True)
class World:
    vpc_id: str
    subnet_ids: dict[str, str]  # "a" / "b" -> subnet ID
    nodes: dict[str, Node]  # role -> node
    image_id: str  # the AMI the nodes run; launch more instances from it

    @property
    def instance_ids(self) -> dict[str, str]:
        return {role: n.instance_id for role, n in self.nodes.items()}

    @property
    def eni_ids(self) -> dict[str, str]:
        return {role: n.eni_id for role, n in self.nodes.items()}

    @property
    def private_ips(self) -> dict[str, str]:
        return {role: n.private_ip for role, n in self.nodes.items()}

    def eni(self, role: str) -> str:
        return self.nodes[role].eni_id

    def instance(self, role: str) -> str:
        return self.nodes[role].instance_id

    def ip(self, role: str) -> str:
        return self.nodes[role].private_ip


def _tags(resource_type: str, name: str, **extra: str) -> list[dict[str, Any]]:
    tags = [{"Key": "Name", "Value": name}, {"Key": WORLD_TAG, "Value": WORLD_NAME}]
    tags += [{"Key": k, "Value": v} for k, v in extra.items()]
    return [{"ResourceType": resource_type, "Tags": tags}]


def _world_filter(**extra: str) -> list[dict[str, Any]]:
    filters = [{"Name": f"tag:{WORLD_TAG}", "Values": [WORLD_NAME]}]
    filters += [{"Name": f"tag:{k}", "Values": [v]} for k, v in extra.items()]
    return filters


def _vpc(ec2: Any) -> str:
    found = ec2.describe_vpcs(Filters=_world_filter())["Vpcs"]
    if found:
        return str(found[0]["VpcId"])
    vpc = ec2.create_vpc(CidrBlock=VPC_CIDR, TagSpecifications=_tags("vpc", "trafficmirror-world"))["Vpc"]
    return str(vpc["VpcId"])


def _subnets(ec2: Any, vpc_id: str) -> dict[str, str]:
    region = ec2.meta.region_name
    result: dict[str, str] = {}
    for key, cidr in SUBNETS.items():
        found = ec2.describe_subnets(Filters=[*_world_filter(**{ROLE_TAG: f"subnet-{key}"})])["Subnets"]
        if found:
            result[key] = found[0]["SubnetId"]
            continue
        subnet = ec2.create_subnet(
            VpcId=vpc_id,
            CidrBlock=cidr,
            AvailabilityZone=f"{region}{key}",
            TagSpecifications=_tags("subnet", f"trafficmirror-world-{key}", **{ROLE_TAG: f"subnet-{key}"}),
        )["Subnet"]
        result[key] = subnet["SubnetId"]
    return result


def _image(ec2: Any) -> str:
    # Filtered on the server: moto's unfiltered image list is ~1 MB per call.
    images = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}])
    found = images["Images"] or ec2.describe_images(Owners=["amazon"])["Images"]
    if not found:
        raise RuntimeError("no AMI to launch the world's instances from")
    return str(max(found, key=lambda i: (i.get("CreationDate", ""), i["ImageId"]))["ImageId"])


def _node(role: str, instance: dict[str, Any]) -> Node:
    primary = next(eni for eni in instance["NetworkInterfaces"] if eni.get("Attachment", {}).get("DeviceIndex", 0) == 0)
    return Node(
        role=role,
        instance_id=instance["InstanceId"],
        instance_type=instance["InstanceType"],
        eni_id=primary["NetworkInterfaceId"],
        private_ip=primary.get("PrivateIpAddress") or instance["PrivateIpAddress"],
        subnet_id=instance["SubnetId"],
        image_id=instance["ImageId"],
    )


def seed_world(ec2: Any) -> World:
    """Create (or find, by tag) the VPC, subnets and one instance per role; return their IDs and IPs.

    Instances that exist keep their current type and state: a test that resized `legacy-web` to t3.small
    sees that in the returned `Node.instance_type`.
    """
    vpc_id = _vpc(ec2)
    subnet_ids = _subnets(ec2, vpc_id)
    image_id: str | None = None
    nodes: dict[str, Node] = {}
    for role, (instance_type, subnet_key) in ROLES.items():
        filters = [
            *_world_filter(**{ROLE_TAG: role}),
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
        found = [i for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]
        if found:
            nodes[role] = _node(role, found[0])
            continue
        image_id = image_id or _image(ec2)
        launched = ec2.run_instances(
            ImageId=image_id,
            InstanceType=instance_type,
            MinCount=1,
            MaxCount=1,
            SubnetId=subnet_ids[subnet_key],
            TagSpecifications=_tags("instance", f"trafficmirror-{role}", **{ROLE_TAG: role}),
        )["Instances"][0]
        ec2.get_waiter("instance_running").wait(
            InstanceIds=[launched["InstanceId"]], WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
        described = ec2.describe_instances(InstanceIds=[launched["InstanceId"]])["Reservations"][0]
        nodes[role] = _node(role, described["Instances"][0])
    return World(vpc_id=vpc_id, subnet_ids=subnet_ids, nodes=nodes, image_id=nodes["web"].image_id)
