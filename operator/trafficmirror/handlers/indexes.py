"""In-memory indexes of what handlers look up: nodes' provider IDs, targets' and filters' states,
and which sessions use which target or filter. kopf keeps them current from its watches."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from trafficmirror.api import GROUP, VERSION, ready_condition
from trafficmirror.handlers import onloop
from trafficmirror.reconcile.seam import ClusterFacts, Dependency

TARGETS = (GROUP, VERSION, "mirrortargets")
FILTERS = (GROUP, VERSION, "mirrorfilters")
SESSIONS = (GROUP, VERSION, "mirrorsessions")


@onloop.index("nodes")
def node_provider_ids(name: str, spec: kopf.Spec, **_: Any) -> dict[str, str]:
    return {name: spec.get("providerID", "")}


@onloop.index("services", when=lambda spec, **_: spec.get("type") == "LoadBalancer")
def service_load_balancers(namespace: str, name: str, status: kopf.Status, **_: Any) -> dict[tuple[str, str], str]:
    """(namespace, name) of a Service of type LoadBalancer → its load balancer's hostname ("" until known)."""
    ingress = (status.get("loadBalancer") or {}).get("ingress") or [{}]
    return {(namespace, name): str(ingress[0].get("hostname") or "")}


def _dependency(name: str, status: kopf.Status, id_field: str, labels: kopf.Labels | None = None) -> Dependency:
    ready = ready_condition(status)
    return Dependency(
        name=name,
        phase=status.get("phase"),
        aws_id=status.get(id_field),
        reason=ready.reason if ready is not None else None,
        network_interface_id=status.get("networkInterfaceId"),
        endpoint_type=status.get("endpointType"),
        instance_type=status.get("instanceType"),
        availability_zone=status.get("availabilityZone"),
        labels=tuple(sorted((labels or {}).items())),
    )


@onloop.index(*TARGETS)
def target_states(
    namespace: str, name: str, status: kopf.Status, labels: kopf.Labels, meta: kopf.Meta, **_: Any
) -> dict[tuple[str, str], Dependency]:
    dependency = _dependency(name, status, "trafficMirrorTargetId", labels)
    if meta.get("deletionTimestamp"):  # a target being deleted takes no new sources; its own move away
        dependency = dataclasses.replace(dependency, phase="Deleting")
    return {(namespace, name): dependency}


@onloop.index(*FILTERS)
def filter_states(namespace: str, name: str, status: kopf.Status, **_: Any) -> dict[tuple[str, str], Dependency]:
    return {(namespace, name): _dependency(name, status, "trafficMirrorFilterId")}


def _completed(status: kopf.Status) -> bool:
    """A Completed session (its time is over) holds nothing in AWS: it uses no target or filter."""
    return bool(status.get("phase") == "Completed")


@onloop.index(*SESSIONS)
def session_users(
    namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[tuple[str, str, str], str]:
    """(namespace, 'target'|'filter', referenced name) → the sessions that reference it."""
    if _completed(status):
        return {}
    return {
        (namespace, "target", spec.get("targetRef", {}).get("name", "")): name,
        (namespace, "filter", spec.get("filterRef", {}).get("name", "")): name,
    }


@onloop.index(*SESSIONS)
def session_placements(uid: str, namespace: str, status: kopf.Status, **_: Any) -> dict[str, tuple[str, str]]:
    """Session UID → (target ID, source ENI) as its status says: the load of each target, for pools."""
    if _completed(status):
        return {}
    return {uid: (str(status.get("trafficMirrorTargetId") or ""), str(status.get("sourceNetworkInterfaceId") or ""))}


@onloop.index(*SESSIONS)
def session_choices(
    uid: str, namespace: str, name: str, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], tuple[str, str]]:
    """(namespace, name) → (UID, status.targetName): the target a pooled session chose last time."""
    return {(namespace, name): (uid, str(status.get("targetName") or ""))}


def pool_of(index: kopf.Index[Any, Any], namespace: str, match_labels: dict[str, str]) -> tuple[Dependency, ...]:
    """The MirrorTargets of `namespace` that carry every label of `match_labels`."""
    members = []
    for (target_namespace, _name), store in index.items():
        dependency = next(iter(store), None)
        if target_namespace != namespace or dependency is None:
            continue
        labels = dict(dependency.labels)
        if all(labels.get(key) == value for key, value in match_labels.items()):
            members.append(dependency)
    return tuple(sorted(members, key=lambda d: d.name))


# UID → "Kind namespace/name": whether the owner an AWS resource's tags name is alive (adoption).
@onloop.index(*TARGETS)
def target_owners(uid: str, namespace: str, name: str, **_: Any) -> dict[str, str]:
    return {uid: f"MirrorTarget {namespace}/{name}"}


@onloop.index(*FILTERS)
def filter_owners(uid: str, namespace: str, name: str, **_: Any) -> dict[str, str]:
    return {uid: f"MirrorFilter {namespace}/{name}"}


@onloop.index(*SESSIONS)
def session_owners(uid: str, namespace: str, name: str, **_: Any) -> dict[str, str]:
    return {uid: f"MirrorSession {namespace}/{name}"}


def one(index: kopf.Index[Any, Any], key: Any) -> Any:
    store = index.get(key)
    return next(iter(store), None) if store is not None else None


def all_of(index: kopf.Index[Any, Any], key: Any) -> list[Any]:
    store = index.get(key)
    return list(store) if store is not None else []


def users_facts(
    referenced_as: str,
) -> Callable[[str, str, Mapping[str, Any], Mapping[str, Any], bool], ClusterFacts]:
    """Facts of a kind that sessions reference ('target' | 'filter'): for a delete, the sessions using it."""

    def facts(
        namespace: str, name: str, spec: Mapping[str, Any], indexes: Mapping[str, Any], deleting: bool
    ) -> ClusterFacts:
        if not deleting:
            return ClusterFacts()
        return ClusterFacts(users=tuple(all_of(indexes["session_users"], (namespace, referenced_as, name))))

    return facts
