"""An extension of moto's EC2 backend that plays AWS VPC Traffic Mirroring, and a server that serves it.

moto 5.2.x knows targets, filters and sessions only as records: no filter rules, no network services, no
deletes of filters or targets, no quotas, no not-found errors, no idempotency, IDs with the wrong prefixes,
and no instance-type check. This module replaces moto's traffic-mirror API handlers with ones that answer
with the codes and messages of the real EC2 API (DESIGN.md section 2), and fixes ModifyInstanceAttribute
so an instance type changes only while the instance is stopped.

It plays AWS, so it decides which instance types may be mirrored with its OWN small rule set below; it must
never import the operator's `trafficmirror` package, whose table is what the tests put to the proof.

Run it:   python -m trafficmirror_testbed.emulator --host 127.0.0.1 --port 5000 [--no-target-type-check]
From pytest: `with Emulator() as emu: ec2 = emu.client("ec2")`, or `start_emulator()` / `emu.stop()`.
Switch behaviour at run time: POST JSON to /_trafficmirror/config (see `EmulatorConfig`);
POST /_trafficmirror/reset wipes moto's state and restores the start-up configuration.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import fnmatch
import ipaddress
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moto.core.responses import ActionResult
from moto.core.utils import get_service_model
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models import EC2Backend, ec2_backends
from moto.ec2.models import elastic_network_interfaces as moto_enis
from moto.ec2.models.core import TaggedEC2Resource
from moto.ec2.models.elastic_network_interfaces import NetworkInterfaceBackend
from moto.ec2.responses import EC2Response
from moto.ec2.utils import (
    EC2_PREFIX_TO_RESOURCE,
    EC2_RESOURCE_TO_PREFIX,
    get_prefix,
    random_id,
    simple_aws_filter_to_re,
)
from moto.ec2.utils import random_private_ip as moto_random_private_ip
from moto.moto_api._internal import mock_random

from trafficmirror.aws.target_quotas import TargetQuotas

CONTROL_PATH = "/_trafficmirror/config"
RESET_PATH = "/_trafficmirror/reset"
READY_MARKER = "trafficmirror emulator ready on "

# AWS quotas that are not adjustable [VPC Traffic Mirroring guide, "quotas"].
SESSIONS_PER_INTERFACE = 3
RULES_PER_FILTER = 10
SESSION_NUMBER_RANGE = (1, 32766)
VNI_RANGE = (0, 2**24 - 1)
NLB_PACKET_LENGTH_MAX = 8500
MAX_RESULTS_RANGE = (5, 1000)
NETWORK_SERVICES = ("amazon-dns",)


# ---------------------------------------------------------------------------------------------------------
# Run-time switches. One process-wide instance: the server serves one account and one test at a time.
# ---------------------------------------------------------------------------------------------------------
@dataclass
class EmulatorConfig:
    # The field report saw a session refused for a t2.micro *target*; AWS documents the limit for sources
    # only. On by default (what was observed); off models the documented behaviour.
    target_type_check: bool = True
    # Sources per ENI target: None follows AWS's quota of the target's instance type (the operator's
    # cited table, aws/target_quotas.yaml: 100 on the listed large types, 10 on all others); a number
    # overrides it for every ENI target.
    sources_per_target_limit: int | None = None
    # fnmatch patterns of instance types that override the built-in rule set (supported wins), so a test can
    # make "AWS" disagree with the operator's table.
    supported_types: list[str] = field(default_factory=list)
    unsupported_types: list[str] = field(default_factory=list)

    def update(self, changes: Mapping[str, Any]) -> None:
        known = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for name, value in changes.items():
            current = getattr(self, name)
            if name == "sources_per_target_limit":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                    raise ValueError(f"{name} must be a positive integer, or null to follow the quota table")
            elif isinstance(current, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false")
            elif isinstance(current, int):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"{name} must be a positive integer")
            elif not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name} must be a list of strings")
            setattr(self, name, list(value) if isinstance(value, list) else value)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CONFIG = EmulatorConfig()
# What /_trafficmirror/reset goes back to: the command line's choices.
_STARTUP_CONFIG = EmulatorConfig()

# werkzeug serves each request on its own thread; check-then-create (quotas, idempotency) must not race.
_LOCK = threading.RLock()


# ---------------------------------------------------------------------------------------------------------
# Which instance types AWS lets you mirror - the emulator's own opinion, modelled on AWS's history
# [awsdocs traffic-mirroring-considerations]. Deliberately independent of the operator's table.
# ---------------------------------------------------------------------------------------------------------
# Previous-generation families never got mirroring. (The Xen families C4, D2, G3, G3s, H1, I3, M4, P2, P3,
# R4, X1, X1e were added in 2021 and so fall through to "supported".)
_PREVIOUS_GENERATION = {"t1", "m1", "m2", "m3", "c1", "c3", "cc1", "cc2", "cg1", "cr1", "g2", "hi1", "hs1"}
_PREVIOUS_GENERATION |= {"i2", "r3"}
# T2 and a sample of the Nitro families AWS has denied since 2022; p4d because the field report named it.
_DENIED_FAMILIES = {"t2", "p4d", "c6gn", "c6i", "im4gn", "is4gen", "m6a", "m6i", "r6i", "m7g", "c7g", "i4i"}
_DENIED_FAMILIES |= {"m7i", "p5", "inf2", "trn1", "hpc6a", "hpc7g", "m8g", "c8g", "r8g", "x8g"}


# DescribeInstanceTypes' CurrentGeneration as AWS publishes it, for the families the tests and the demo
# launch; moto's bundled data says false for c5, m5, r5 and m6i, which AWS lists among its current
# generation instance types [Amazon EC2 Instance Types guide, "Current generation instances": general
# purpose M5, M6i, T2, T3; compute optimized C5; memory optimized R5]. C4, M4 and R4 stay false: AWS
# lists them under "Previous generation instances", next to C1, C3, G2, I2, M1, M2, M3, R3 and T1.
CURRENT_GENERATION_FAMILIES = {"c5": True, "m5": True, "r5": True, "m6i": True, "t2": True, "t3": True}
CURRENT_GENERATION_FAMILIES |= {"c4": False, "m4": False, "r4": False, "m1": False, "m3": False, "r3": False}


def _correct_instance_type_data() -> None:
    # Both the raw data and the records moto built from it at import time.
    from moto.ec2.models.instance_types import INSTANCE_TYPES, InstanceTypeBackend

    for record in [*INSTANCE_TYPES.values(), *InstanceTypeBackend.instance_types]:
        current = CURRENT_GENERATION_FAMILIES.get(str(record.get("InstanceType", "")).partition(".")[0])
        if current is not None:
            record["CurrentGeneration"] = current


def instance_type_supported(instance_type: str) -> bool:
    """Whether this emulated AWS accepts an ENI on `instance_type` in a mirror session."""
    if any(fnmatch.fnmatchcase(instance_type, p) for p in CONFIG.supported_types):
        return True
    if any(fnmatch.fnmatchcase(instance_type, p) for p in CONFIG.unsupported_types):
        return False
    family, _, size = instance_type.partition(".")
    if size == "metal" or size.startswith("metal-"):  # any bare metal: c5.metal, u-6tb1.metal, m7i.metal-24xl
        return False
    return family not in _PREVIOUS_GENERATION and family not in _DENIED_FAMILIES


# ---------------------------------------------------------------------------------------------------------
# Errors: the codes are AWS's; messages follow AWS's wording where it is known (the field report's, the
# "does not exist" family), otherwise they say plainly what is wrong.
# ---------------------------------------------------------------------------------------------------------
def _error(code: str, message: str) -> EC2ClientError:
    return EC2ClientError(code, message)


def _not_found(kind: str, resource_id: str) -> EC2ClientError:
    codes = {
        "session": "InvalidTrafficMirrorSessionId.NotFound",
        "target": "InvalidTrafficMirrorTargetId.NotFound",
        "filter": "InvalidTrafficMirrorFilterId.NotFound",
        "filter rule": "InvalidTrafficMirrorFilterRuleId.NotFound",
    }
    return _error(codes[kind], f"The traffic mirror {kind} ID '{resource_id}' does not exist")


def _invalid(message: str) -> EC2ClientError:
    return _error("InvalidParameterValue", message)


def _not_supported(eni_id: str) -> EC2ClientError:
    return _error("NetworkInterfaceNotSupported", f"{eni_id} must be attached to a supported instance")


# ---------------------------------------------------------------------------------------------------------
# Resource models. Plain dataclasses (moto's BaseModel would register them as a service of their own);
# tags live where moto keeps every EC2 tag, `backend.tags`, so CreateTags/DescribeTags work on them too.
# ---------------------------------------------------------------------------------------------------------
_SEQUENCE = itertools.count(1)  # creation order: the Describe order and the paging cursor


def _tags_out(backend: Any, resource_id: str) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in backend.tags.get(resource_id, {}).items()]


@dataclass
class MirrorFilter:
    id: str
    description: str | None
    network_services: list[str] = field(default_factory=list)
    seq: int = field(default_factory=lambda: next(_SEQUENCE))

    FILTERS = {"traffic-mirror-filter-id": "id", "description": "description"}

    def to_dict(self, backend: Any) -> dict[str, Any]:
        rules = sorted(_state(backend).rules_of(self.id), key=lambda r: r.rule_number)
        return {
            "TrafficMirrorFilterId": self.id,
            "IngressFilterRules": [r.to_dict(backend) for r in rules if r.direction == "ingress"],
            "EgressFilterRules": [r.to_dict(backend) for r in rules if r.direction == "egress"],
            "NetworkServices": list(self.network_services),
            "Description": self.description,
            "Tags": _tags_out(backend, self.id),
        }


@dataclass
class FilterRule:
    id: str
    filter_id: str
    direction: str
    rule_number: int
    action: str
    protocol: int | None
    source_cidr: str
    destination_cidr: str
    source_ports: tuple[int, int] | None
    destination_ports: tuple[int, int] | None
    description: str | None
    seq: int = field(default_factory=lambda: next(_SEQUENCE))

    FILTERS = {
        "traffic-mirror-filter-rule-id": "id",
        "traffic-mirror-filter-id": "filter_id",
        "rule-number": "rule_number",
        "rule-action": "action",
        "traffic-direction": "direction",
        "protocol": "protocol",
        "source-cidr-block": "source_cidr",
        "destination-cidr-block": "destination_cidr",
        "description": "description",
    }

    def to_dict(self, backend: Any) -> dict[str, Any]:
        def ports(rng: tuple[int, int] | None) -> dict[str, int] | None:
            return None if rng is None else {"FromPort": rng[0], "ToPort": rng[1]}

        return {
            "TrafficMirrorFilterRuleId": self.id,
            "TrafficMirrorFilterId": self.filter_id,
            "TrafficDirection": self.direction,
            "RuleNumber": self.rule_number,
            "RuleAction": self.action,
            "Protocol": self.protocol,
            "DestinationPortRange": ports(self.destination_ports),
            "SourcePortRange": ports(self.source_ports),
            "DestinationCidrBlock": self.destination_cidr,
            "SourceCidrBlock": self.source_cidr,
            "Description": self.description,
            "Tags": _tags_out(backend, self.id),
        }


@dataclass
class MirrorTarget:
    id: str
    owner_id: str
    type: str
    network_interface_id: str | None
    network_load_balancer_arn: str | None
    gateway_load_balancer_endpoint_id: str | None
    description: str | None
    seq: int = field(default_factory=lambda: next(_SEQUENCE))

    FILTERS = {
        "traffic-mirror-target-id": "id",
        "description": "description",
        "network-interface-id": "network_interface_id",
        "network-load-balancer-arn": "network_load_balancer_arn",
        "owner-id": "owner_id",
    }

    def to_dict(self, backend: Any) -> dict[str, Any]:
        return {
            "TrafficMirrorTargetId": self.id,
            "NetworkInterfaceId": self.network_interface_id,
            "NetworkLoadBalancerArn": self.network_load_balancer_arn,
            "GatewayLoadBalancerEndpointId": self.gateway_load_balancer_endpoint_id,
            "Type": self.type,
            "Description": self.description,
            "OwnerId": self.owner_id,
            "Tags": _tags_out(backend, self.id),
        }


@dataclass
class MirrorSession:
    id: str
    owner_id: str
    network_interface_id: str
    traffic_mirror_target_id: str
    traffic_mirror_filter_id: str
    session_number: int
    virtual_network_id: int
    packet_length: int | None
    description: str | None
    seq: int = field(default_factory=lambda: next(_SEQUENCE))

    FILTERS = {
        "traffic-mirror-session-id": "id",
        "traffic-mirror-target-id": "traffic_mirror_target_id",
        "traffic-mirror-filter-id": "traffic_mirror_filter_id",
        "network-interface-id": "network_interface_id",
        "owner-id": "owner_id",
        "session-number": "session_number",
        "virtual-network-id": "virtual_network_id",
        "packet-length": "packet_length",
        "description": "description",
    }

    def to_dict(self, backend: Any) -> dict[str, Any]:
        return {
            "TrafficMirrorSessionId": self.id,
            "TrafficMirrorTargetId": self.traffic_mirror_target_id,
            "TrafficMirrorFilterId": self.traffic_mirror_filter_id,
            "NetworkInterfaceId": self.network_interface_id,
            "OwnerId": self.owner_id,
            "PacketLength": self.packet_length,
            "SessionNumber": self.session_number,
            "VirtualNetworkId": self.virtual_network_id,
            "Description": self.description,
            "Tags": _tags_out(backend, self.id),
        }


Resource = MirrorFilter | FilterRule | MirrorTarget | MirrorSession


# ---------------------------------------------------------------------------------------------------------
# Per-backend state. Filters, targets and sessions stay in moto's own dicts (moto's tagging API iterates
# them); rules and client tokens hang off the backend object, so /moto-api/reset wipes them with it.
# ---------------------------------------------------------------------------------------------------------
@dataclass
class _TokenRecord:
    fingerprint: str
    resource_id: str
    snapshot: dict[str, Any]


@dataclass
class _MirrorState:
    rules: dict[str, FilterRule] = field(default_factory=dict)
    tokens: dict[tuple[str, str], _TokenRecord] = field(default_factory=dict)

    def rules_of(self, filter_id: str) -> list[FilterRule]:
        return [r for r in self.rules.values() if r.filter_id == filter_id]


def _state(backend: Any) -> _MirrorState:
    state: _MirrorState | None = backend.__dict__.get("_trafficmirror_state")
    if state is None:
        state = backend.__dict__["_trafficmirror_state"] = _MirrorState()
    return state


def _get_filter(backend: Any, filter_id: str | None) -> MirrorFilter:
    found = backend.traffic_mirror_filters.get(filter_id)
    if not isinstance(found, MirrorFilter):
        raise _not_found("filter", str(filter_id))
    return found


def _get_target(backend: Any, target_id: str | None) -> MirrorTarget:
    found = backend.traffic_mirror_targets.get(target_id)
    if not isinstance(found, MirrorTarget):
        raise _not_found("target", str(target_id))
    return found


def _get_session(backend: Any, session_id: str | None) -> MirrorSession:
    found = backend.traffic_mirror_sessions.get(session_id)
    if not isinstance(found, MirrorSession):
        raise _not_found("session", str(session_id))
    return found


def _get_rule(backend: Any, rule_id: str | None) -> FilterRule:
    found = _state(backend).rules.get(str(rule_id))
    if found is None:
        raise _not_found("filter rule", str(rule_id))
    return found


def _forget(backend: Any, resource_id: str) -> None:
    backend.tags.pop(resource_id, None)


# ---------------------------------------------------------------------------------------------------------
# Request helpers shared by the handlers: parameters, tags, ClientToken idempotency, Filters, paging.
# ---------------------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """moto hands nested structures over as case-insensitive mappings; make them JSON-able."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _required(request: Any, name: str) -> Any:
    value = request._get_param(name)
    if value is None or value == "":
        raise _error("MissingParameter", f"The request must contain the parameter {name}")
    return value


def _optional_int(request: Any, name: str) -> int | None:
    value = request._get_param(name)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _invalid(f"Value ({value}) for parameter {name} is invalid. It must be an integer.") from None


def _tag_specifications(request: Any, resource_type: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for spec in request._get_param("TagSpecifications") or []:
        given = spec.get("ResourceType")
        if given != resource_type:
            raise _invalid(f"'{given}' is not a valid taggable resource type for this operation.")
        for tag in spec.get("Tags") or []:
            tags[tag["Key"]] = tag.get("Value", "")
    return tags


def _apply_tags(backend: Any, resource_id: str, tags: dict[str, str]) -> None:
    if tags:
        backend.create_tags([resource_id], tags)


_IDEMPOTENCY_IGNORED = {"ClientToken", "DryRun"}


def _fingerprint(request: Any, action: str) -> str:
    members = get_service_model("ec2").operation_model(action).input_shape.members
    params = {name: _plain(request._get_param(name)) for name in members if name not in _IDEMPOTENCY_IGNORED}
    return json.dumps(params, sort_keys=True, default=str)


def _replay(request: Any, action: str, lookup: Callable[[str], Resource | None]) -> dict[str, Any] | None:
    """The earlier answer to this ClientToken, or None if the token is new.

    Same token + same parameters returns the original resource; different parameters are refused, as
    AWS does [EC2 API "Ensuring idempotency"].
    """
    token = request._get_param("ClientToken")
    if not token:
        return None
    record = _state(request.ec2_backend).tokens.get((action, token))
    if record is None:
        return None
    if record.fingerprint != _fingerprint(request, action):
        raise _error(
            "IdempotentParameterMismatch",
            "Arguments on this idempotent request are inconsistent with arguments used in previous request(s).",
        )
    current = lookup(record.resource_id)
    return current.to_dict(request.ec2_backend) if current is not None else record.snapshot


def _remember(request: Any, action: str, resource: Resource) -> None:
    token = request._get_param("ClientToken")
    if token:
        snapshot = resource.to_dict(request.ec2_backend)
        record = _TokenRecord(_fingerprint(request, action), resource.id, snapshot)
        _state(request.ec2_backend).tokens[(action, token)] = record


def _filters(request: Any) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for item in request._get_param("Filters") or []:
        name = item.get("Name")
        if not name:
            raise _invalid("The filter 'null' is invalid")
        result[name] = [str(v) for v in item.get("Values") or []]
    return result


def _matches(backend: Any, resource: Resource, filters: dict[str, list[str]]) -> bool:
    tags = backend.tags.get(resource.id, {})
    for name, values in filters.items():
        if name.startswith("tag:"):
            candidates = [tags[name[4:]]] if name[4:] in tags else []
        elif name == "tag-key":
            candidates = list(tags)
        elif name == "tag-value":
            candidates = list(tags.values())
        else:
            value = getattr(resource, resource.FILTERS[name])
            candidates = [] if value is None else [str(value)]
        patterns = [re.compile(simple_aws_filter_to_re(v)) for v in values]
        if not any(p.match(c) for p in patterns for c in candidates):
            return False
    return True


def _describe(
    request: Any,
    model: type[Resource],
    resources: Iterable[Resource],
    ids_param: str,
    kind: str,
) -> tuple[list[dict[str, Any]], str | None]:
    """IDs (each must exist), then Filters, then MaxResults/NextToken paging in creation order."""
    backend = request.ec2_backend
    items = sorted(resources, key=lambda r: r.seq)
    wanted = request._get_param(ids_param) or []
    if wanted:
        known = {r.id for r in items}
        for resource_id in wanted:
            if resource_id not in known:
                raise _not_found(kind, resource_id)
        items = [r for r in items if r.id in set(wanted)]
    filters = _filters(request)
    for name in filters:
        if not (name.startswith("tag:") or name in ("tag-key", "tag-value") or name in model.FILTERS):
            raise _invalid(f"The filter '{name}' is invalid")
    items = [r for r in items if _matches(backend, r, filters)]

    token = request._get_param("NextToken")
    if token:
        try:
            after = int(json.loads(base64.urlsafe_b64decode(token.encode()))["after"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise _error("InvalidPaginationToken", f"Invalid pagination token: {token}") from None
        items = [r for r in items if r.seq > after]
    max_results = _optional_int(request, "MaxResults")
    next_token = None
    if max_results is not None:
        low, high = MAX_RESULTS_RANGE
        if not low <= max_results <= high:
            raise _invalid(
                f"Value ( {max_results} ) for parameter maxResults is invalid. "
                f"Parameter must be between {low} and {high}."
            )
        if len(items) > max_results:
            items = items[:max_results]
            next_token = base64.urlsafe_b64encode(json.dumps({"after": items[-1].seq}).encode()).decode()
    return [r.to_dict(backend) for r in items], next_token


def _locked(handler: Callable[[Any], ActionResult]) -> Callable[[Any], ActionResult]:
    def wrapper(self: Any) -> ActionResult:
        with _LOCK:
            self.error_on_dryrun()
            return handler(self)

    wrapper.__name__ = handler.__name__
    wrapper.__doc__ = handler.__doc__
    return wrapper


# ---------------------------------------------------------------------------------------------------------
# Instance facts at call time: the type and state an ENI's instance has *now* (types change by
# stop/modify/start between calls, and the next create must see the new type).
# ---------------------------------------------------------------------------------------------------------
def _eni(backend: Any, eni_id: str) -> Any:
    return backend.get_network_interface(eni_id)  # moto's InvalidNetworkInterfaceID.NotFound if missing


def _check_source(backend: Any, eni_id: str) -> None:
    instance = _eni(backend, eni_id).instance
    # An ENI not attached to an instance (ALB, RDS, Fargate) has no type to refuse.
    if instance is not None and not instance_type_supported(instance.instance_type):
        raise _not_supported(eni_id)


def _check_target_usable(backend: Any, target: MirrorTarget) -> None:
    if target.type != "network-interface" or target.network_interface_id is None:
        return
    eni = backend.enis.get(target.network_interface_id)
    if eni is None:
        raise _error(
            "InvalidTrafficMirrorTarget",
            f"The traffic mirror target '{target.id}' is not valid: its network interface "
            f"'{target.network_interface_id}' does not exist.",
        )
    instance = eni.instance
    if instance is None:
        return
    if CONFIG.target_type_check and not instance_type_supported(instance.instance_type):
        raise _not_supported(eni.id)
    if instance.state != "running":
        raise _error(
            "InvalidTrafficMirrorTarget",
            f"The traffic mirror target '{target.id}' is not valid: network interface '{eni.id}' is "
            f"attached to instance '{instance.id}', which is {instance.state}, not running.",
        )


def _sources_per_target_quota(backend: Any, target: MirrorTarget) -> int:
    eni = backend.enis.get(target.network_interface_id) if target.network_interface_id else None
    instance_type = eni.instance.instance_type if eni is not None and eni.instance is not None else None
    limit = TargetQuotas.packaged().sources_per_target("network-interface", instance_type).limit
    assert limit is not None  # an ENI target always has one
    return limit


def _check_target_capacity(backend: Any, target: MirrorTarget, source_eni: str, ignore: str | None) -> None:
    # NLB and GWLB endpoint targets take any number of sources; an ENI target only a few.
    if target.type != "network-interface":
        return
    sources = {
        s.network_interface_id
        for s in backend.traffic_mirror_sessions.values()
        if s.traffic_mirror_target_id == target.id and s.id != ignore
    }
    limit = CONFIG.sources_per_target_limit or _sources_per_target_quota(backend, target)
    if source_eni not in sources and len(sources) >= limit:
        raise _error(
            "TrafficMirrorSourcesPerTargetLimitExceeded",
            f"The maximum number of traffic mirror sources ({limit}) for traffic mirror target "
            f"'{target.id}' has been exceeded.",
        )


def _check_session_number(backend: Any, eni_id: str, number: int, ignore: str | None) -> None:
    low, high = SESSION_NUMBER_RANGE
    if not low <= number <= high:
        raise _invalid(f"The session number {number} is invalid. It must be between {low} and {high}.")
    for other in backend.traffic_mirror_sessions.values():
        if other.network_interface_id == eni_id and other.session_number == number and other.id != ignore:
            raise _invalid(
                f"Session number {number} is already used by traffic mirror session '{other.id}' "
                f"on network interface '{eni_id}'."
            )


def _check_vni(vni: int) -> None:
    low, high = VNI_RANGE
    if not low <= vni <= high:
        raise _invalid(f"The virtual network ID {vni} is invalid. It must be between {low} and {high}.")


def _check_packet_length(length: int | None, target: MirrorTarget) -> int | None:
    if length is None:
        # AWS: "For sessions with NLB targets the default PacketLength will be set to 8500".
        return NLB_PACKET_LENGTH_MAX if target.type == "network-load-balancer" else None
    if length < 1:
        raise _invalid(f"The packet length {length} is invalid. It must be at least 1.")
    if target.type == "network-load-balancer" and length > NLB_PACKET_LENGTH_MAX:
        raise _invalid(
            f"The packet length {length} is invalid for a Network Load Balancer target. "
            f"Valid values are 1-{NLB_PACKET_LENGTH_MAX}."
        )
    return length


def _random_vni(backend: Any) -> int:
    # "an account-wide unique ID is chosen at random" - unique across every region of the account.
    used = {
        s.virtual_network_id
        for region_backend in ec2_backends[backend.account_id].values()
        for s in region_backend.traffic_mirror_sessions.values()
        if isinstance(s, MirrorSession)
    }
    while True:
        vni = mock_random.randint(1, VNI_RANGE[1])
        if vni not in used:
            return vni


# ---------------------------------------------------------------------------------------------------------
# API: CreateTrafficMirrorTarget / DescribeTrafficMirrorTargets / DeleteTrafficMirrorTarget (no Modify).
# The target ENI's instance type is NOT checked here: AWS accepts a t2.micro target and refuses it only
# when a session is created (field report, step 2 and 4).
# ---------------------------------------------------------------------------------------------------------
@_locked
def create_traffic_mirror_target(self: Any) -> ActionResult:
    action, backend = "CreateTrafficMirrorTarget", self.ec2_backend
    replay = _replay(self, action, backend.traffic_mirror_targets.get)
    if replay is not None:
        return ActionResult({"TrafficMirrorTarget": replay, "ClientToken": self._get_param("ClientToken")})

    choices = {
        "network-interface": self._get_param("NetworkInterfaceId"),
        "network-load-balancer": self._get_param("NetworkLoadBalancerArn"),
        "gateway-load-balancer-endpoint": self._get_param("GatewayLoadBalancerEndpointId"),
    }
    given = [kind for kind, value in choices.items() if value]
    if len(given) != 1:
        # Code and wording kept from moto 5.2, which had this check already.
        raise _error(
            "InvalidInput",
            "Invalid number of inputs. Only 1 of NetworkInterfaceId, NetworkLoadBalancerArn or "
            "GatewayLoadBalancerEndpointId required.",
        )
    if choices["network-interface"]:
        _eni(backend, choices["network-interface"])
    tags = _tag_specifications(self, "traffic-mirror-target")
    target = MirrorTarget(
        id=random_id("tmt"),
        owner_id=backend.account_id,
        type=given[0],
        network_interface_id=choices["network-interface"],
        network_load_balancer_arn=choices["network-load-balancer"],
        gateway_load_balancer_endpoint_id=choices["gateway-load-balancer-endpoint"],
        description=self._get_param("Description"),
    )
    backend.traffic_mirror_targets[target.id] = target
    _apply_tags(backend, target.id, tags)
    _remember(self, action, target)
    return ActionResult({"TrafficMirrorTarget": target.to_dict(backend), "ClientToken": self._get_param("ClientToken")})


@_locked
def describe_traffic_mirror_targets(self: Any) -> ActionResult:
    found, token = _describe(
        self,
        MirrorTarget,
        self.ec2_backend.traffic_mirror_targets.values(),
        "TrafficMirrorTargetIds",
        "target",
    )
    return ActionResult({"TrafficMirrorTargets": found, "NextToken": token})


@_locked
def delete_traffic_mirror_target(self: Any) -> ActionResult:
    backend = self.ec2_backend
    target = _get_target(backend, _required(self, "TrafficMirrorTargetId"))
    if any(s.traffic_mirror_target_id == target.id for s in backend.traffic_mirror_sessions.values()):
        raise _error(
            "TrafficMirrorTargetInUseException",
            f"The traffic mirror target '{target.id}' cannot be deleted because a traffic mirror session "
            "is currently using it.",
        )
    del backend.traffic_mirror_targets[target.id]
    _forget(backend, target.id)
    return ActionResult({"TrafficMirrorTargetId": target.id})


# ---------------------------------------------------------------------------------------------------------
# API: CreateTrafficMirrorFilter / DescribeTrafficMirrorFilters / DeleteTrafficMirrorFilter.
# A filter's rules are returned inside it (Ingress/EgressFilterRules) and die with it.
# ---------------------------------------------------------------------------------------------------------
@_locked
def create_traffic_mirror_filter(self: Any) -> ActionResult:
    action, backend = "CreateTrafficMirrorFilter", self.ec2_backend
    replay = _replay(self, action, backend.traffic_mirror_filters.get)
    if replay is not None:
        return ActionResult({"TrafficMirrorFilter": replay, "ClientToken": self._get_param("ClientToken")})
    tags = _tag_specifications(self, "traffic-mirror-filter")
    mirror_filter = MirrorFilter(id=random_id("tmf"), description=self._get_param("Description"))
    backend.traffic_mirror_filters[mirror_filter.id] = mirror_filter
    _apply_tags(backend, mirror_filter.id, tags)
    _remember(self, action, mirror_filter)
    return ActionResult(
        {"TrafficMirrorFilter": mirror_filter.to_dict(backend), "ClientToken": self._get_param("ClientToken")}
    )


@_locked
def describe_traffic_mirror_filters(self: Any) -> ActionResult:
    found, token = _describe(
        self,
        MirrorFilter,
        self.ec2_backend.traffic_mirror_filters.values(),
        "TrafficMirrorFilterIds",
        "filter",
    )
    return ActionResult({"TrafficMirrorFilters": found, "NextToken": token})


@_locked
def delete_traffic_mirror_filter(self: Any) -> ActionResult:
    backend = self.ec2_backend
    mirror_filter = _get_filter(backend, _required(self, "TrafficMirrorFilterId"))
    if any(s.traffic_mirror_filter_id == mirror_filter.id for s in backend.traffic_mirror_sessions.values()):
        raise _error(
            "TrafficMirrorFilterInUse",
            f"The traffic mirror filter '{mirror_filter.id}' cannot be deleted because a traffic mirror "
            "session is currently using it.",
        )
    state = _state(backend)
    for rule in state.rules_of(mirror_filter.id):
        del state.rules[rule.id]
        _forget(backend, rule.id)
    del backend.traffic_mirror_filters[mirror_filter.id]
    _forget(backend, mirror_filter.id)
    return ActionResult({"TrafficMirrorFilterId": mirror_filter.id})


# ---------------------------------------------------------------------------------------------------------
# API: ModifyTrafficMirrorFilterNetworkServices (AWS knows one service: amazon-dns).
# ---------------------------------------------------------------------------------------------------------
@_locked
def modify_traffic_mirror_filter_network_services(self: Any) -> ActionResult:
    backend = self.ec2_backend
    mirror_filter = _get_filter(backend, _required(self, "TrafficMirrorFilterId"))
    add = list(self._get_param("AddNetworkServices") or [])
    remove = list(self._get_param("RemoveNetworkServices") or [])
    for service in add + remove:
        if service not in NETWORK_SERVICES:
            raise _invalid(f"The network service '{service}' is invalid. Valid values: {', '.join(NETWORK_SERVICES)}.")
    services = [s for s in mirror_filter.network_services if s not in remove]
    services += [s for s in add if s not in services]
    mirror_filter.network_services = services
    return ActionResult({"TrafficMirrorFilter": mirror_filter.to_dict(backend)})


# ---------------------------------------------------------------------------------------------------------
# API: CreateTrafficMirrorFilterRule / ModifyTrafficMirrorFilterRule / DeleteTrafficMirrorFilterRule /
# DescribeTrafficMirrorFilterRules. RuleNumber is unique per direction, 10 rules per filter, port ranges
# only for TCP (6) and UDP (17).
# ---------------------------------------------------------------------------------------------------------
_DIRECTIONS = ("ingress", "egress")
_ACTIONS = ("accept", "reject")
_PORT_PROTOCOLS = (6, 17)
_RULE_FIELDS = ("destination-port-range", "source-port-range", "protocol", "description")


def _direction(value: Any) -> str:
    if value not in _DIRECTIONS:
        raise _invalid(f"The traffic direction '{value}' is invalid. Valid values: ingress, egress.")
    return str(value)


def _rule_action(value: Any) -> str:
    if value not in _ACTIONS:
        raise _invalid(f"The rule action '{value}' is invalid. Valid values: accept, reject.")
    return str(value)


def _rule_number(value: Any) -> int:
    number = int(value)
    low, high = SESSION_NUMBER_RANGE
    if not low <= number <= high:
        raise _invalid(f"The rule number {number} is invalid. It must be between {low} and {high}.")
    return number


def _protocol(value: Any) -> int | None:
    if value is None:
        return None
    protocol = int(value)
    if not 0 <= protocol <= 255:
        raise _invalid(f"The protocol {protocol} is invalid. It must be an IANA protocol number (0-255).")
    return protocol


def _cidr(value: Any, name: str) -> str:
    try:
        return str(ipaddress.ip_network(str(value), strict=False))
    except ValueError:
        raise _invalid(f"The {name} '{value}' is not a valid CIDR block.") from None


def _port_range(value: Any, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    low = value.get("FromPort")
    high = value.get("ToPort")
    low = 0 if low is None else int(low)
    high = 65535 if high is None else int(high)
    if not 0 <= low <= high <= 65535:
        raise _invalid(f"The {name} {low}-{high} is invalid. Ports are 0-65535 and FromPort <= ToPort.")
    return (low, high)


def _check_ports_need_tcp_udp(rule: FilterRule) -> None:
    if (rule.source_ports or rule.destination_ports) and rule.protocol not in _PORT_PROTOCOLS:
        raise _invalid(
            "Port ranges can only be specified for the TCP (6) and UDP (17) protocols; "
            f"the rule's protocol is {rule.protocol if rule.protocol is not None else 'all protocols'}."
        )


def _check_rule_number_free(backend: Any, rule: FilterRule) -> None:
    for other in _state(backend).rules_of(rule.filter_id):
        if other.id != rule.id and other.direction == rule.direction and other.rule_number == rule.rule_number:
            raise _error(
                "TrafficMirrorFilterRuleAlreadyExists",
                f"A traffic mirror filter rule with rule number {rule.rule_number} and direction "
                f"{rule.direction} already exists in traffic mirror filter '{rule.filter_id}' "
                f"('{other.id}').",
            )


@_locked
def create_traffic_mirror_filter_rule(self: Any) -> ActionResult:
    action, backend = "CreateTrafficMirrorFilterRule", self.ec2_backend
    state = _state(backend)
    replay = _replay(self, action, state.rules.get)
    if replay is not None:
        return ActionResult({"TrafficMirrorFilterRule": replay, "ClientToken": self._get_param("ClientToken")})

    mirror_filter = _get_filter(backend, _required(self, "TrafficMirrorFilterId"))
    rule = FilterRule(
        id=random_id("tmfr"),
        filter_id=mirror_filter.id,
        direction=_direction(_required(self, "TrafficDirection")),
        rule_number=_rule_number(_required(self, "RuleNumber")),
        action=_rule_action(_required(self, "RuleAction")),
        protocol=_protocol(self._get_param("Protocol")),
        source_cidr=_cidr(_required(self, "SourceCidrBlock"), "source CIDR block"),
        destination_cidr=_cidr(_required(self, "DestinationCidrBlock"), "destination CIDR block"),
        source_ports=_port_range(self._get_param("SourcePortRange"), "source port range"),
        destination_ports=_port_range(self._get_param("DestinationPortRange"), "destination port range"),
        description=self._get_param("Description"),
    )
    _check_ports_need_tcp_udp(rule)
    _check_rule_number_free(backend, rule)
    if len(state.rules_of(mirror_filter.id)) >= RULES_PER_FILTER:
        raise _error(
            "TrafficMirrorFilterRuleLimitExceeded",
            f"The maximum number of traffic mirror filter rules ({RULES_PER_FILTER}) for traffic mirror "
            f"filter '{mirror_filter.id}' has been exceeded.",
        )
    tags = _tag_specifications(self, "traffic-mirror-filter-rule")
    state.rules[rule.id] = rule
    _apply_tags(backend, rule.id, tags)
    _remember(self, action, rule)
    return ActionResult(
        {"TrafficMirrorFilterRule": rule.to_dict(backend), "ClientToken": self._get_param("ClientToken")}
    )


@_locked
def modify_traffic_mirror_filter_rule(self: Any) -> ActionResult:
    backend = self.ec2_backend
    rule = _get_rule(backend, _required(self, "TrafficMirrorFilterRuleId"))
    changed = dataclasses.replace(rule, seq=rule.seq)
    remove = list(self._get_param("RemoveFields") or [])
    for name in remove:
        if name not in _RULE_FIELDS:
            raise _invalid(f"The field '{name}' cannot be removed. Valid values: {', '.join(_RULE_FIELDS)}.")

    if self._get_param("TrafficDirection") is not None:
        changed.direction = _direction(self._get_param("TrafficDirection"))
    if self._get_param("RuleNumber") is not None:
        changed.rule_number = _rule_number(self._get_param("RuleNumber"))
    if self._get_param("RuleAction") is not None:
        changed.action = _rule_action(self._get_param("RuleAction"))
    if self._get_param("SourceCidrBlock") is not None:
        changed.source_cidr = _cidr(self._get_param("SourceCidrBlock"), "source CIDR block")
    if self._get_param("DestinationCidrBlock") is not None:
        changed.destination_cidr = _cidr(self._get_param("DestinationCidrBlock"), "destination CIDR block")
    if self._get_param("Description") is not None:
        changed.description = self._get_param("Description")
    new_ports = {
        "source": _port_range(self._get_param("SourcePortRange"), "source port range"),
        "destination": _port_range(self._get_param("DestinationPortRange"), "destination port range"),
    }
    protocol_sent = self._get_param("Protocol") is not None
    if any(new_ports.values()) and not protocol_sent:
        # The Terraform trap: AWS refuses a new port range unless the protocol comes in the same request,
        # even when the rule already has TCP or UDP.
        raise _invalid("Protocol must be specified in the same request as a source or destination port range.")
    if protocol_sent:
        changed.protocol = _protocol(self._get_param("Protocol"))
    if new_ports["source"] is not None:
        changed.source_ports = new_ports["source"]
    if new_ports["destination"] is not None:
        changed.destination_ports = new_ports["destination"]

    if "destination-port-range" in remove:
        changed.destination_ports = None
    if "source-port-range" in remove:
        changed.source_ports = None
    if "protocol" in remove:
        changed.protocol = None
    if "description" in remove:
        changed.description = None

    _check_ports_need_tcp_udp(changed)
    _check_rule_number_free(backend, changed)
    _state(backend).rules[rule.id] = changed
    return ActionResult({"TrafficMirrorFilterRule": changed.to_dict(backend)})


@_locked
def delete_traffic_mirror_filter_rule(self: Any) -> ActionResult:
    backend = self.ec2_backend
    rule = _get_rule(backend, _required(self, "TrafficMirrorFilterRuleId"))
    del _state(backend).rules[rule.id]
    _forget(backend, rule.id)
    return ActionResult({"TrafficMirrorFilterRuleId": rule.id})


@_locked
def describe_traffic_mirror_filter_rules(self: Any) -> ActionResult:
    backend = self.ec2_backend
    rules: Iterable[FilterRule] = _state(backend).rules.values()
    filter_id = self._get_param("TrafficMirrorFilterId")
    if filter_id:
        rules = _state(backend).rules_of(_get_filter(backend, filter_id).id)
    found, token = _describe(self, FilterRule, rules, "TrafficMirrorFilterRuleIds", "filter rule")
    return ActionResult({"TrafficMirrorFilterRules": found, "NextToken": token})


# ---------------------------------------------------------------------------------------------------------
# API: CreateTrafficMirrorSession / DescribeTrafficMirrorSessions / ModifyTrafficMirrorSession /
# DeleteTrafficMirrorSession. Here AWS checks everything the other calls let through: the source's
# instance type, the target's (behind the switch), the target's instance state, the quotas.
# ---------------------------------------------------------------------------------------------------------
_SESSION_FIELDS = ("packet-length", "description", "virtual-network-id")


@_locked
def create_traffic_mirror_session(self: Any) -> ActionResult:
    action, backend = "CreateTrafficMirrorSession", self.ec2_backend
    replay = _replay(self, action, backend.traffic_mirror_sessions.get)
    if replay is not None:
        return ActionResult({"TrafficMirrorSession": replay, "ClientToken": self._get_param("ClientToken")})

    eni_id = _required(self, "NetworkInterfaceId")
    _eni(backend, eni_id)
    target = _get_target(backend, _required(self, "TrafficMirrorTargetId"))
    mirror_filter = _get_filter(backend, _required(self, "TrafficMirrorFilterId"))
    number = int(_required(self, "SessionNumber"))
    vni = _optional_int(self, "VirtualNetworkId")
    if vni is not None:
        _check_vni(vni)
    packet_length = _check_packet_length(_optional_int(self, "PacketLength"), target)

    _check_source(backend, eni_id)
    _check_target_usable(backend, target)
    _check_session_number(backend, eni_id, number, ignore=None)
    on_interface = [s for s in backend.traffic_mirror_sessions.values() if s.network_interface_id == eni_id]
    if len(on_interface) >= SESSIONS_PER_INTERFACE:
        raise _error(
            "TrafficMirrorSessionsPerInterfaceLimitExceeded",
            f"The allowed number of traffic mirror sessions ({SESSIONS_PER_INTERFACE}) for network "
            f"interface '{eni_id}' has been exceeded.",
        )
    _check_target_capacity(backend, target, eni_id, ignore=None)

    tags = _tag_specifications(self, "traffic-mirror-session")
    session = MirrorSession(
        id=random_id("tms"),
        owner_id=backend.account_id,
        network_interface_id=eni_id,
        traffic_mirror_target_id=target.id,
        traffic_mirror_filter_id=mirror_filter.id,
        session_number=number,
        virtual_network_id=vni if vni is not None else _random_vni(backend),
        packet_length=packet_length,
        description=self._get_param("Description"),
    )
    backend.traffic_mirror_sessions[session.id] = session
    _apply_tags(backend, session.id, tags)
    _remember(self, action, session)
    return ActionResult(
        {"TrafficMirrorSession": session.to_dict(backend), "ClientToken": self._get_param("ClientToken")}
    )


@_locked
def describe_traffic_mirror_sessions(self: Any) -> ActionResult:
    found, token = _describe(
        self,
        MirrorSession,
        self.ec2_backend.traffic_mirror_sessions.values(),
        "TrafficMirrorSessionIds",
        "session",
    )
    return ActionResult({"TrafficMirrorSessions": found, "NextToken": token})


@_locked
def modify_traffic_mirror_session(self: Any) -> ActionResult:
    backend = self.ec2_backend
    session = _get_session(backend, _required(self, "TrafficMirrorSessionId"))
    remove = list(self._get_param("RemoveFields") or [])
    for name in remove:
        if name not in _SESSION_FIELDS:
            raise _invalid(f"The field '{name}' cannot be removed. Valid values: {', '.join(_SESSION_FIELDS)}.")
    changed = dataclasses.replace(session, seq=session.seq)

    target_id = self._get_param("TrafficMirrorTargetId")
    target = _get_target(backend, target_id or session.traffic_mirror_target_id)
    if target_id and target_id != session.traffic_mirror_target_id:
        # Re-pointing a session is where a replaced target is first used: same checks as at create.
        _check_target_usable(backend, target)
        _check_target_capacity(backend, target, session.network_interface_id, ignore=session.id)
        changed.traffic_mirror_target_id = target.id
    filter_id = self._get_param("TrafficMirrorFilterId")
    if filter_id:
        changed.traffic_mirror_filter_id = _get_filter(backend, filter_id).id
    number = _optional_int(self, "SessionNumber")
    if number is not None:
        _check_session_number(backend, session.network_interface_id, number, ignore=session.id)
        changed.session_number = number
    vni = _optional_int(self, "VirtualNetworkId")
    if vni is not None:
        _check_vni(vni)
        changed.virtual_network_id = vni
    length = _optional_int(self, "PacketLength")
    if length is not None or changed.traffic_mirror_target_id != session.traffic_mirror_target_id:
        changed.packet_length = _check_packet_length(length if length is not None else session.packet_length, target)
    if self._get_param("Description") is not None:
        changed.description = self._get_param("Description")

    # A removed property goes back to its default [API reference, RemoveFields].
    if "packet-length" in remove:
        changed.packet_length = _check_packet_length(None, target)
    if "description" in remove:
        changed.description = None
    if "virtual-network-id" in remove:
        changed.virtual_network_id = _random_vni(backend)

    backend.traffic_mirror_sessions[session.id] = changed
    return ActionResult({"TrafficMirrorSession": changed.to_dict(backend)})


@_locked
def delete_traffic_mirror_session(self: Any) -> ActionResult:
    backend = self.ec2_backend
    session = _get_session(backend, _required(self, "TrafficMirrorSessionId"))
    del backend.traffic_mirror_sessions[session.id]
    _forget(backend, session.id)
    return ActionResult({"TrafficMirrorSessionId": session.id})


# ---------------------------------------------------------------------------------------------------------
# Fix: ModifyInstanceAttribute InstanceType. moto changes the type of a running instance; AWS changes it
# only while stopped, which is the stop/modify/start path tests (and users) take.
# ---------------------------------------------------------------------------------------------------------
_MOTO_MODIFY_INSTANCE_ATTRIBUTE = EC2Response.modify_instance_attribute


def modify_instance_attribute(self: Any) -> ActionResult:
    changes_type = self._get_param("InstanceType.Value") is not None or (
        str(self._get_param("Attribute") or "").lower() == "instancetype"
    )
    if changes_type:
        instance_id = self._get_param("InstanceId")
        instance = self.ec2_backend.get_instance(instance_id)
        if instance.state != "stopped":
            raise _error("IncorrectInstanceState", f"The instance '{instance_id}' is not in the 'stopped' state.")
    return _MOTO_MODIFY_INSTANCE_ATTRIBUTE(self)


# ---------------------------------------------------------------------------------------------------------
# Installation: patch moto's EC2 response class (each request instantiates it, so class attributes reach
# every request, in server mode and in-process alike), fix the ID prefixes, and teach CreateTags and the
# tagging API about the new resources.
# ---------------------------------------------------------------------------------------------------------
_HANDLERS: tuple[Callable[[Any], ActionResult], ...] = (
    create_traffic_mirror_target,
    describe_traffic_mirror_targets,
    delete_traffic_mirror_target,
    create_traffic_mirror_filter,
    describe_traffic_mirror_filters,
    delete_traffic_mirror_filter,
    modify_traffic_mirror_filter_network_services,
    create_traffic_mirror_filter_rule,
    modify_traffic_mirror_filter_rule,
    delete_traffic_mirror_filter_rule,
    describe_traffic_mirror_filter_rules,
    create_traffic_mirror_session,
    describe_traffic_mirror_sessions,
    modify_traffic_mirror_session,
    delete_traffic_mirror_session,
    modify_instance_attribute,
)

# AWS's prefixes; moto 5.2 used "traf-mir-fil" and "traf-mir-tar".
_PREFIXES = {
    "traffic-mirror-filter": "tmf",
    "traffic-mirror-filter-rule": "tmfr",
    "traffic-mirror-session": "tms",
    "traffic-mirror-target": "tmt",
}

_installed = False


# ---------------------------------------------------------------------------------------------------------
# Network interfaces: what the operator asks of them for pod and node sources.
# ---------------------------------------------------------------------------------------------------------
_INTERFACE_TYPES = ("interface", "efa", "efa-only", "branch", "trunk")


def _addresses_filter(moto_get_all: Callable[..., Any]) -> Callable[..., Any]:
    """AWS's `addresses.private-ip-address` matches an ENI holding any of the values among any of its
    private addresses, secondary ones included (moto compares the primary address only, and a list of
    values as a set); with the VPC CNI a pod's IP is a secondary address."""

    def get_all_network_interfaces(backend: Any, eni_ids: list[str] | None = None, filters: Any = None) -> Any:
        wanted = None
        if filters and "addresses.private-ip-address" in filters:
            filters = dict(filters)
            values = filters.pop("addresses.private-ip-address")
            wanted = {values} if isinstance(values, str) else set(values)
        found = moto_get_all(backend, eni_ids, filters or None)
        if wanted is None:
            return found
        return [eni for eni in found if wanted & _eni_addresses(eni)]

    return get_all_network_interfaces


def _eni_addresses(eni: Any) -> set[str]:
    """Every private IPv4 address of a moto ENI, the primary and the secondary ones."""
    return {
        str(address)
        for address in (
            eni.private_ip_address,
            *(a.get("PrivateIpAddress") for a in eni.private_ip_addresses if isinstance(a, dict)),
        )
        if address
    }


def _free_private_ip(cidr: str | None = None, ipv6: bool = False) -> str:
    """A private IPv4 address of the subnet that no ENI holds, as AWS hands out. moto picks any address
    of the CIDR at random (the network address included) and checks only the ENI's own list, so two
    ENIs of a subnet end up with one address: a pod's address then seems to be on two ENIs.
    AWS reserves the first four addresses of a subnet and the last one."""
    if ipv6 or cidr is None:
        return moto_random_private_ip(cidr, ipv6=ipv6)
    network = ipaddress.IPv4Network(cidr)
    used = {
        address
        for account in ec2_backends.values()
        for region_backend in account.values()
        for eni in region_backend.enis.values()
        for address in _eni_addresses(eni)
    }
    first, last = int(network.network_address) + 4, int(network.broadcast_address) - 1
    for _ in range(64):
        candidate = str(ipaddress.IPv4Address(mock_random.randint(first, last)))
        if candidate not in used:
            return candidate
    free = [a for n in range(first, last + 1) if (a := str(ipaddress.IPv4Address(n))) not in used]
    if not free:
        raise _error(
            "InsufficientFreeAddressesInSubnet",
            "The specified subnet does not have enough free addresses to satisfy the request.",
        )
    return mock_random.choice(free)


def _create_network_interface(moto_create: Callable[[Any], ActionResult]) -> Callable[[Any], ActionResult]:
    """InterfaceType (branch, trunk, efa, ...) as AWS takes it; moto makes every ENI an `interface`."""

    def create_network_interface(self: Any) -> ActionResult:
        interface_type = self._get_param("InterfaceType") or "interface"
        if interface_type not in _INTERFACE_TYPES:
            raise _error("InvalidParameterValue", f"Value ({interface_type}) for parameter InterfaceType is invalid")
        result = moto_create(self)
        payload: Any = result.result
        eni = payload.get("NetworkInterface") if isinstance(payload, dict) else None
        if eni is not None:
            eni.interface_type = interface_type
        return result

    create_network_interface.__name__ = "create_network_interface"
    return create_network_interface


def _own_tags(resource: Any) -> list[dict[str, str]]:
    """A resource's tags, as moto's `TaggedEC2Resource.get_tags` answers them, from its own entry.

    moto finds them by filtering every tag of the region (`describe_tags` with a resource-id filter), so a
    Describe of N resources costs N times all tags: with 10,000 sessions the emulator spent more than half
    its time there and paced the whole benchmark, where AWS's cost does not grow with the account.
    """
    resource_id = getattr(resource, "id", None)
    if not resource_id:
        return []
    kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
    tags = resource.ec2_backend.tags.get(resource_id) or {}
    return [{"resource_id": resource_id, "key": k, "value": v, "resource_type": kind} for k, v in tags.items()]


def install() -> None:
    """Install the extension into moto's EC2 backend. Idempotent."""
    global _installed
    if _installed:
        return
    setattr(  # noqa: B010  (a patch, said plainly)
        NetworkInterfaceBackend,
        "get_all_network_interfaces",
        _addresses_filter(NetworkInterfaceBackend.get_all_network_interfaces),
    )
    setattr(  # noqa: B010
        EC2Response, "create_network_interface", _create_network_interface(EC2Response.create_network_interface)
    )
    for handler in _HANDLERS:
        setattr(EC2Response, handler.__name__, handler)
    _correct_instance_type_data()
    setattr(TaggedEC2Resource, "get_tags", _own_tags)  # noqa: B010  (a patch, said plainly)
    moto_enis.random_private_ip = _free_private_ip  # type: ignore[assignment]

    for resource_type, prefix in _PREFIXES.items():
        old = EC2_RESOURCE_TO_PREFIX.get(resource_type)
        if old is not None and EC2_PREFIX_TO_RESOURCE.get(old) == resource_type:
            del EC2_PREFIX_TO_RESOURCE[old]
        EC2_RESOURCE_TO_PREFIX[resource_type] = prefix  # the dicts are shared by reference across moto
        EC2_PREFIX_TO_RESOURCE[prefix] = resource_type

    moto_do_resources_exist = EC2Backend.do_resources_exist
    moto_iter_tagged_resources = EC2Backend.iter_tagged_resources

    def do_resources_exist(backend: Any, resource_ids: list[str]) -> bool:
        lookups: dict[str, Callable[[Any, str], Any]] = {
            "tmf": _get_filter,
            "tmfr": _get_rule,
            "tms": _get_session,
            "tmt": _get_target,
        }
        others = []
        for resource_id in resource_ids:
            lookup = lookups.get(resource_id.partition("-")[0])
            if lookup is None:
                others.append(resource_id)
            else:
                lookup(backend, resource_id)
        return bool(moto_do_resources_exist(backend, others)) if others else True

    def iter_tagged_resources(backend: Any) -> Iterator[Any]:
        yield from moto_iter_tagged_resources(backend)
        extra = {
            "traffic-mirror-filter": backend.traffic_mirror_filters.values(),
            "traffic-mirror-target": backend.traffic_mirror_targets.values(),
        }
        from moto.core.resource_tagging import TaggedResource

        for type_part, resources in extra.items():
            for resource in resources:
                yield TaggedResource(
                    arn=f"arn:{backend.partition}:ec2:{backend.region_name}:{backend.account_id}:"
                    f"{type_part}/{resource.id}",
                    tags=dict(backend.tags.get(resource.id, {})),
                    resource_type=f"ec2:{type_part}",
                )

    setattr(EC2Backend, "do_resources_exist", do_resources_exist)  # noqa: B010  (a patch, said plainly)
    setattr(EC2Backend, "iter_tagged_resources", iter_tagged_resources)  # noqa: B010
    _installed = True


# ---------------------------------------------------------------------------------------------------------
# Server: moto's whole dispatcher (EC2, S3, and every other service moto has) behind a small WSGI layer
# that answers the control endpoints.
# ---------------------------------------------------------------------------------------------------------
class _ControlApp:
    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == CONTROL_PATH:
            if method == "GET":
                return self._json(start_response, 200, CONFIG.as_dict())
            if method == "POST":
                try:
                    length = int(environ.get("CONTENT_LENGTH") or 0)
                    changes = json.loads(environ["wsgi.input"].read(length) or b"{}")
                    if not isinstance(changes, dict):
                        raise ValueError("the body must be a JSON object")
                    with _LOCK:
                        CONFIG.update(changes)
                except ValueError as exc:
                    return self._json(start_response, 400, {"error": str(exc)})
                return self._json(start_response, 200, CONFIG.as_dict())
        if path == RESET_PATH and method == "POST":
            with _LOCK:
                from moto.moto_api._internal.models import moto_api_backend

                moto_api_backend.reset()
                CONFIG.update(_STARTUP_CONFIG.as_dict())
            return self._json(start_response, 200, CONFIG.as_dict())
        if path in (CONTROL_PATH, RESET_PATH):
            return self._json(start_response, 405, {"error": f"{method} not allowed on {path}"})
        return self.app(environ, start_response)  # type: ignore[no-any-return]

    @staticmethod
    def _json(start_response: Callable[..., Any], status: int, body: dict[str, Any]) -> list[bytes]:
        reasons = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed"}
        data = json.dumps(body).encode()
        start_response(
            f"{status} {reasons[status]}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
        )
        return [data]


def _exit_with_parent(parent_pid: int) -> None:
    # A pytest run killed with SIGKILL cannot stop its emulator; the orphan notices and leaves.
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trafficmirror_testbed.emulator",
        description="moto server with the trafficmirror extension (EC2 Traffic Mirroring as AWS answers it).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port (printed on the ready line)")
    parser.add_argument(
        "--target-type-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="refuse a session whose TARGET ENI is on an unsupported instance type (field report; on)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log every request")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone (used by Emulator)")
    args = parser.parse_args(argv)
    if args.parent_pid:
        _exit_with_parent(args.parent_pid)

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    install()
    _STARTUP_CONFIG.target_type_check = args.target_type_check
    CONFIG.update(_STARTUP_CONFIG.as_dict())
    if args.quiet:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    app = _ControlApp(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    os.environ["MOTO_PORT"] = str(server.server_port)  # moto builds some URLs (SQS, presigned S3) from it

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"{READY_MARKER}http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


# ---------------------------------------------------------------------------------------------------------
# The handle pytest fixtures (and the demo) use: start the server as a subprocess, wait until it answers,
# switch it, reset it, stop it.
# ---------------------------------------------------------------------------------------------------------
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class Emulator:
    """The emulator as a subprocess. `port=0` lets the server pick a free port (no race)."""

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        target_type_check: bool = True,
        region: str = "us-east-1",
        log_path: str | Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.region = region
        self.target_type_check = target_type_check
        self.log_path = Path(log_path) if log_path else None
        self._own_log = log_path is None  # a log we named ourselves is removed on stop
        self.process: subprocess.Popen[bytes] | None = None
        self.endpoint_url = ""

    def start(self, timeout: float = 60.0) -> Emulator:
        if self.process is not None:
            raise RuntimeError("emulator already started")
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="trafficmirror-emulator-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        operator_dir = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (operator_dir, env.get("PYTHONPATH")) if p)
        check = "--target-type-check" if self.target_type_check else "--no-target-type-check"
        command = [sys.executable, "-m", "trafficmirror_testbed.emulator", "--host", self.host]
        command += ["--port", str(self.port), check, "--parent-pid", str(os.getpid())]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None and self.log_path is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"emulator exited with {self.process.returncode}:\n{self.log_tail()}")
            match = re.search(re.escape(READY_MARKER) + r"(http://\S+)", self.log_path.read_text(errors="replace"))
            if match:
                self.endpoint_url = match.group(1)
                self.port = int(self.endpoint_url.rsplit(":", 1)[1])
                try:
                    self.config()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"emulator not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        if self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def __enter__(self) -> Emulator:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- talking to it -----------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Environment for a process (the operator, the demo) that should reach this emulator as AWS."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def client(self, service: str = "ec2", region: str | None = None) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 2})
        make_client: Any = boto3.client  # any service name; boto3-stubs overloads only literal ones
        return make_client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=region or self.region,
            config=config,
            aws_access_key_id=DUMMY_CREDENTIALS["aws_access_key_id"],
            aws_secret_access_key=DUMMY_CREDENTIALS["aws_secret_access_key"],
        )

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.endpoint_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read() or b"{}")  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise ValueError(f"{method} {path}: HTTP {exc.code}: {detail}") from None

    def config(self) -> dict[str, Any]:
        return self._request("GET", CONTROL_PATH)

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change switches at run time, e.g. `configure(target_type_check=False)`. Returns the new config."""
        return self._request("POST", CONTROL_PATH, settings)

    def reset(self) -> dict[str, Any]:
        """Forget every resource in every moto service and restore the start-up configuration."""
        return self._request("POST", RESET_PATH, {})


def start_emulator(port: int = 0, **kwargs: Any) -> Emulator:
    """Start an emulator subprocess and wait until it answers; call `.stop()` (or use it as a context)."""
    return Emulator(port, **kwargs).start()


if __name__ == "__main__":
    raise SystemExit(main())
