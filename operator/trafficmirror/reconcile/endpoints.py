"""From what the user wrote (an ENI, an instance, a node) to the ENI AWS needs, and whether AWS can mirror it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from trafficmirror.aws.errors import AwsError, ErrorClass
from trafficmirror.aws.instance_support import SupportDecision, SupportTable, SupportVerdict, decide_support
from trafficmirror.reconcile.ports import InstanceLookups

_PROVIDER_ID = re.compile(r"^aws:///[^/]*/(?P<instance>i-[0-9a-f]+)$")


class Unresolvable(Exception):
    """The ENI cannot be found yet; `reason` is a condition reason, the message says what is missing."""

    def __init__(self, reason: str, message: str, terminal: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.terminal = terminal


def instance_id_from_provider_id(provider_id: str | None) -> str | None:
    """aws:///us-east-1a/i-0123… → i-0123…; anything else (another cloud, no ID yet) → None."""
    match = _PROVIDER_ID.match(provider_id or "")
    return match.group("instance") if match else None


def resolve_network_interface(
    aws: InstanceLookups,
    *,
    network_interface_id: str | None,
    instance_id: str | None,
    node_name: str | None,
    node_provider_ids: dict[str, str],
) -> str:
    if network_interface_id:
        return network_interface_id
    if node_name:
        if node_name not in node_provider_ids:
            raise Unresolvable("NodeNotFound", f"node {node_name} does not exist (yet)")
        instance_id = instance_id_from_provider_id(node_provider_ids[node_name])
        if instance_id is None:
            raise Unresolvable(
                "NodeNotOnEC2",
                f"node {node_name} has providerID {node_provider_ids[node_name]!r}, not aws:///<zone>/<instance-id>",
            )
    if instance_id is None:
        raise Unresolvable("NoSource", "nothing to resolve", terminal=True)
    try:
        return aws.primary_network_interface(instance_id)
    except AwsError as error:
        if error.error_class is ErrorClass.NOT_FOUND:
            raise Unresolvable("InstanceNotFound", f"instance {instance_id} does not exist: {error.message}") from error
        raise


@dataclass(frozen=True)
class SupportCheck:
    """What sits behind an ENI, and whether VPC Traffic Mirroring accepts it."""

    network_interface_id: str
    instance_id: str | None
    instance_type: str | None
    decision: SupportDecision | None  # None: not attached to an instance, unknown until tried
    private_ip_address: str | None = None  # the ENI's primary private address
    availability_zone: str | None = None

    @property
    def unsupported(self) -> bool:
        return self.decision is not None and self.decision.verdict is SupportVerdict.UNSUPPORTED


def check_support(
    aws: InstanceLookups, network_interface_id: str, table: SupportTable, remembered_rejections: frozenset[str]
) -> SupportCheck:
    interface = aws.network_interface(network_interface_id)
    if interface.instance_id is None:
        return SupportCheck(
            network_interface_id, None, None, None, interface.private_ip_address, interface.availability_zone
        )
    instance_type = aws.instance_types([interface.instance_id])[interface.instance_id]
    facts = aws.instance_type_facts(instance_type)
    return SupportCheck(
        network_interface_id,
        interface.instance_id,
        instance_type,
        decide_support(facts, table, remembered_rejections),
        interface.private_ip_address,
        interface.availability_zone,
    )
