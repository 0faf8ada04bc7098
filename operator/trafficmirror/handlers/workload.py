"""Pod and node selector sessions, glue: kopf watches Pods, Nodes, Namespaces, MirrorSessions and
MirrorFilters into in-memory indexes; every change of one of them wakes one loop, which asks
`reconcile.workload` what each selector session's children should be and applies the difference
(create, patch or delete child MirrorSessions and their generated MirrorFilters, then the parent's
status). Watch-driven: a pod that starts, moves or goes away is followed within a second or two;
nothing polls. A session whose inputs did not change since its last pass costs nothing: no AWS
call, no write.

A selector session gets no finalizer of its own: its children carry an ownerReference to it
(controller, blockOwnerDeletion), so deleting it lets Kubernetes' garbage collector delete the
children, whose own finalizers delete their AWS sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from kopf._cogs.clients import api
from kopf._cogs.clients.errors import APIConflictError, APINotFoundError
from kopf._cogs.clients.patching import patch_obj
from pydantic import ValidationError

from trafficmirror.api import API_VERSION, GROUP, VERSION, MirrorFilterSpec, MirrorSessionSpec
from trafficmirror.aws.errors import AwsError
from trafficmirror.handlers import onloop
from trafficmirror.reconcile import timebox
from trafficmirror.reconcile.context import ReconcileContext
from trafficmirror.reconcile.ports import WorkloadAws
from trafficmirror.reconcile.workload import (
    GENERATED_FOR_LABEL,
    PARENT_LABEL,
    POD_ENI_ANNOTATION,
    ChildFact,
    NodeFact,
    Parent,
    PodFact,
    WorkloadPlan,
    parent_label_value,
    plan,
    selected_pods,
)

SESSIONS = (GROUP, VERSION, "mirrorsessions")
FILTERS = (GROUP, VERSION, "mirrorfilters")
DEBOUNCE_SECONDS = 0.2  # events arriving together (a scale-up) make one pass
RETRY_SECONDS = 5.0
_SESSION_RESOURCE = kopf.Resource(
    GROUP, VERSION, "mirrorsessions", kind="MirrorSession", namespaced=True, subresources=frozenset({"status"})
)
_FILTER_RESOURCE = kopf.Resource(
    GROUP, VERSION, "mirrorfilters", kind="MirrorFilter", namespaced=True, subresources=frozenset({"status"})
)


def is_selector(spec: Mapping[str, Any]) -> bool:
    source = spec.get("source") or {}
    return bool(source.get("podSelector") is not None or source.get("nodeSelector") is not None)


def is_child(labels: Mapping[str, str]) -> bool:
    return PARENT_LABEL in labels


# --- indexes -----------------------------------------------------------------------------------
@onloop.index("pods")
def workload_pods(
    namespace: str, name: str, labels: kopf.Labels, annotations: kopf.Annotations, spec: kopf.Spec,
    status: kopf.Status, meta: kopf.Meta, **_: Any,
) -> dict[tuple[str, str], PodFact]:  # fmt: skip
    return {
        (namespace, name): PodFact(
            namespace=namespace,
            name=name,
            labels=tuple(sorted(labels.items())),
            ip=status.get("podIP") or None,
            node_name=spec.get("nodeName") or None,
            host_network=bool(spec.get("hostNetwork")),
            branch_interface=POD_ENI_ANNOTATION in annotations,
            phase=status.get("phase"),
            deleting=bool(meta.get("deletionTimestamp")),
        )
    }


@onloop.index("nodes")
def workload_nodes(name: str, labels: kopf.Labels, spec: kopf.Spec, **_: Any) -> dict[str, NodeFact]:
    return {name: NodeFact(name=name, labels=tuple(sorted(labels.items())), provider_id=spec.get("providerID", ""))}


@onloop.index("namespaces")
def namespace_labels(name: str, labels: kopf.Labels, **_: Any) -> dict[str, tuple[tuple[str, str], ...]]:
    return {name: tuple(sorted(labels.items()))}


@dataclass(frozen=True)
class ParentRecord:
    parent: Parent | None  # None: the stored spec does not validate
    raw_status: Mapping[str, Any]
    deleting: bool


@onloop.index(*SESSIONS, when=lambda spec, **_: is_selector(spec))
def selector_sessions(
    namespace: str, name: str, uid: str, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, **_: Any
) -> dict[tuple[str, str], ParentRecord]:
    try:
        typed: MirrorSessionSpec | None = MirrorSessionSpec.model_validate(dict(spec))
    except ValidationError:
        typed = None
    parent = (
        Parent(
            namespace,
            name,
            uid,
            typed,
            status.get("phase"),
            int(meta.get("generation", 1)),
            created_at=timebox.parse_time(meta.get("creationTimestamp")),
        )
        if typed is not None
        else None
    )
    return {(namespace, name): ParentRecord(parent, dict(status), bool(meta.get("deletionTimestamp")))}


@dataclass(frozen=True)
class ChildRecord:
    fact: ChildFact
    raw_spec: Mapping[str, Any]
    labels: Mapping[str, str]
    controller_uid: str | None  # the parent that owns it; a session merely carrying the label is not a child


@onloop.index(*SESSIONS, when=lambda labels, **_: is_child(labels))
def child_sessions(
    namespace: str, name: str, uid: str, labels: kopf.Labels, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta,
    **_: Any,
) -> dict[tuple[str, str], ChildRecord]:  # fmt: skip
    addresses = status.get("sourceAddresses")
    ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    fact = ChildFact(
        name=name,
        uid=uid,
        network_interface_id=str((spec.get("source") or {}).get("networkInterfaceId", "")),
        filter_name=str((spec.get("filterRef") or {}).get("name", "")),
        phase=status.get("phase"),
        reason=ready.get("reason"),
        message=ready.get("message"),
        traffic_mirror_session_id=status.get("trafficMirrorSessionId"),
        virtual_network_id=status.get("virtualNetworkId"),
        source_addresses=tuple(addresses) if addresses is not None else None,
        target_name=status.get("targetName"),
        mirroring_since=status.get("mirroringSince"),
    )
    controller = next((o.get("uid") for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    return {(namespace, labels[PARENT_LABEL]): ChildRecord(fact, dict(spec), dict(labels), controller)}


@onloop.index(*FILTERS)
def filter_specs(namespace: str, name: str, spec: kopf.Spec, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    """(namespace, name) → the filter's spec; generated filters also under ("generated", namespace, child name)."""
    found: dict[Any, Any] = {(namespace, name): dict(spec)}
    if GENERATED_FOR_LABEL in labels:
        found[("generated", namespace, labels[GENERATED_FOR_LABEL])] = dict(spec)
    return found


# --- triggers: every change that may move a selector session wakes the loop ---------------------------
TRIGGER_ID = "workload-trigger"


class _QuietTriggers(logging.Filter):
    """kopf logs every handler's success at INFO: for a trigger that runs on every pod event of the
    cluster that would be one line per event, and says nothing (the loop logs what it does)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (TRIGGER_ID in message and message.endswith("succeeded."))


logging.getLogger("kopf.objects").addFilter(_QuietTriggers())


def _wake(memo: kopf.Memo) -> None:
    loop: WorkloadLoop | None = getattr(memo, "workload", None)
    if loop is not None:
        loop.wake()


@onloop.event("pods", id=TRIGGER_ID)
def pod_changed(memo: kopf.Memo, **_: Any) -> None:
    _wake(memo)


@onloop.event("nodes", id=TRIGGER_ID)
def node_changed(memo: kopf.Memo, **_: Any) -> None:
    _wake(memo)


@onloop.event("namespaces", id=TRIGGER_ID)
def namespace_changed(memo: kopf.Memo, **_: Any) -> None:
    _wake(memo)


@onloop.event(*SESSIONS, id=TRIGGER_ID)
def session_changed(memo: kopf.Memo, spec: kopf.Spec, labels: kopf.Labels, **_: Any) -> None:
    if is_selector(spec) or is_child(labels):
        _wake(memo)


@onloop.event(*FILTERS, id=TRIGGER_ID)
def filter_changed(memo: kopf.Memo, **_: Any) -> None:
    _wake(memo)


# --- the loop --------------------------------------------------------------------------------------
def _first(index: Any, key: Any) -> Any:
    store = index.get(key)
    return next(iter(store), None) if store is not None else None


def _values(index: Any) -> list[Any]:
    return [value for store in index.values() for value in store]


@dataclass
class WorkloadLoop:
    indexes: Mapping[str, Any]
    memo: kopf.Memo  # the shared ReconcileContext (memo.context) is made by the startup handler
    settings: kopf.OperatorSettings
    logger: logging.Logger
    _event: asyncio.Event = field(default_factory=asyncio.Event)
    _done: dict[tuple[str, str], str] = field(default_factory=dict)  # parent → fingerprint of its last pass

    def wake(self) -> None:
        self._event.set()

    async def run(self) -> None:
        while not hasattr(self.memo, "context") or not hasattr(self.memo, "config"):
            await asyncio.sleep(0.1)  # the startup handler that makes them may run after this one
        period = float(self.memo.config.resync_seconds)
        loop = asyncio.get_running_loop()
        cleared = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout=max(0.1, cleared + period - loop.time()))
                await asyncio.sleep(DEBOUNCE_SECONDS)
            if loop.time() >= cleared + period:
                # Once a period every session is looked at again, however busy the watches: a conflict
                # clears when another owner's session goes, which no watch of ours sees.
                self._done.clear()
                cleared = loop.time()
            self._event.clear()
            await self.pass_once()

    async def pass_once(self) -> None:
        parents = self.indexes["selector_sessions"]
        alive = set()
        for key in list(parents.keys()):
            record: ParentRecord | None = _first(parents, key)
            if record is None or record.parent is None or record.deleting:
                continue
            alive.add(key)
            try:
                await self.reconcile(record)
            except Exception as error:
                self.logger.warning(f"selector session {key[0]}/{key[1]}: {error}; retrying in {RETRY_SECONDS} s")
                if isinstance(error, AwsError):
                    await self._say_retrying(record, error)
                self._done.pop(key, None)
                asyncio.get_running_loop().call_later(RETRY_SECONDS, self.wake)
        for key in list(self._done):
            if key not in alive:
                del self._done[key]

    def _inputs(self, parent: Parent) -> dict[str, Any]:
        pods = _values(self.indexes["workload_pods"])
        nodes = {n.name: n for n in _values(self.indexes["workload_nodes"])}
        namespaces = {
            name: dict(_first(self.indexes["namespace_labels"], name) or ())
            for name in self.indexes["namespace_labels"]
        }
        labelled = self.indexes["child_sessions"].get((parent.namespace, parent_label_value(parent.name)), [])
        # Only the sessions this parent owns: one that merely carries the label is left alone, never deleted.
        children = {r.fact.name: r for r in labelled if r.controller_uid == parent.uid}
        parent_filter_raw = _first(self.indexes["filter_specs"], (parent.namespace, parent.spec.filter_ref.name))
        return {
            "pods": selected_pods(parent, pods, namespaces),
            "nodes": nodes,
            "namespaces": namespaces,
            "children": children,
            "filter": parent_filter_raw,
        }

    async def reconcile(self, record: ParentRecord) -> None:
        parent = record.parent
        assert parent is not None
        key = (parent.namespace, parent.name)
        inputs = self._inputs(parent)
        context: ReconcileContext = self.memo.context
        now = context.clock()
        # The end of a time-boxed session changes the plan with nothing else changing: part of the
        # fingerprint (the time-box daemon's nudge at the end wakes this loop).
        over = timebox.is_over(parent.stop, now)
        fingerprint = _fingerprint(parent, record.raw_status, {**inputs, "over": over})
        if self._done.get(key) == fingerprint:
            return
        try:
            parent_filter = MirrorFilterSpec.model_validate(inputs["filter"]) if inputs["filter"] is not None else None
        except ValidationError:
            parent_filter = None
        aws: WorkloadAws = context.aws_for_region(parent.spec.region)  # type: ignore[assignment]
        children: dict[str, ChildRecord] = inputs["children"]
        decided = await asyncio.to_thread(
            plan,
            parent,
            pods=inputs["pods"],
            nodes=inputs["nodes"],
            namespace_labels=inputs["namespaces"],
            children={name: r.fact for name, r in children.items()},
            parent_filter=parent_filter,
            aws=aws,
            now=now,
            price=context.price,
        )
        await self.apply(parent, record, decided, children)
        self._done[key] = fingerprint

    async def apply(
        self, parent: Parent, record: ParentRecord, decided: WorkloadPlan, children: Mapping[str, ChildRecord]
    ) -> None:
        ns = parent.namespace
        failed: list[Exception] = []
        for name, spec in decided.children.items():
            try:
                await self._apply_child(parent, name, spec, decided, children.get(name))
            except Exception as error:  # one child's write failing leaves the others' and the status to be written
                failed.append(error)
        for name in children:
            if name not in decided.children:
                try:
                    await self._delete(_SESSION_RESOURCE, ns, name)  # its generated filter goes with it (owned)
                except Exception as error:
                    failed.append(error)
                    continue
                eni = children[name].fact.network_interface_id
                self.logger.info(f"selector session {ns}/{parent.name}: deleted {name} ({eni} no longer selected)")
        status = {k: v for k, v in decided.status.items() if k != "conditions"}
        if "conditions" in decided.status:
            status["observedGeneration"] = parent.generation
            status["conditions"] = _merged_conditions(
                record.raw_status.get("conditions") or [], decided.status["conditions"], parent.generation
            )
        changed = {k: v for k, v in status.items() if record.raw_status.get(k) != v}
        if changed:
            await self._patch(_SESSION_RESOURCE, ns, parent.name, {"status": changed})
        if failed:
            raise failed[0]  # the pass is retried

    async def _apply_child(
        self, parent: Parent, name: str, spec: dict[str, Any], decided: WorkloadPlan, current: ChildRecord | None
    ) -> None:
        ns = parent.namespace
        generated = decided.filters.get(name)
        existing = _first(self.indexes["filter_specs"], ("generated", ns, name))
        if current is None and generated is not None and existing is not None:
            # The previous child of this name (its ENI selected again) is going, and its generated filter with
            # it (owned: the garbage collector). A new child naming that filter would wait for it to be ready,
            # the filter for the child to stop using it: the child is created once the filter is gone.
            return
        if current is None:
            uid = await self._create_child(parent, name, spec)
            eni = spec["source"]["networkInterfaceId"]
            self.logger.info(f"selector session {ns}/{parent.name}: created {name} for {eni}")
        else:
            uid = current.fact.uid
            if _differs(spec, current.raw_spec):
                await self._patch(_SESSION_RESOURCE, ns, name, {"spec": _merge(current.raw_spec, spec)})
        if generated is not None and existing is None:
            await self._create_filter(parent, name, uid, generated)
        elif generated is not None and _differs(generated, existing):
            await self._patch(_FILTER_RESOURCE, ns, name, {"spec": _merge(existing, generated)})
        elif generated is None and existing is not None:
            await self._delete(_FILTER_RESOURCE, ns, name)

    async def _say_retrying(self, record: ParentRecord, error: AwsError) -> None:
        """An AWS error while finding the sources: the session says so (its sources stay as they were)."""
        parent = record.parent
        assert parent is not None
        wanted = [{"type": "Ready", "status": "False", "reason": "AwsRetrying", "message": f"{error}; retrying"}]
        conditions = _merged_conditions(record.raw_status.get("conditions") or [], wanted, parent.generation)
        if conditions != record.raw_status.get("conditions"):
            with contextlib.suppress(APINotFoundError):
                await self._patch(
                    _SESSION_RESOURCE, parent.namespace, parent.name, {"status": {"conditions": conditions}}
                )

    async def _create_child(self, parent: Parent, name: str, spec: dict[str, Any]) -> str:
        body = {
            "apiVersion": API_VERSION,
            "kind": "MirrorSession",
            "metadata": {
                "name": name,
                "namespace": parent.namespace,
                "labels": {PARENT_LABEL: parent_label_value(parent.name)},
                "ownerReferences": [_owner_reference("MirrorSession", parent.name, parent.uid)],
            },
            "spec": spec,
        }
        try:
            created = await api.post(
                _SESSION_RESOURCE.get_url(namespace=parent.namespace), payload=body, settings=self.settings,
                logger=self.logger,
            )  # fmt: skip
        except APIConflictError:
            found = await api.get(
                _SESSION_RESOURCE.get_url(namespace=parent.namespace, name=name), settings=self.settings,
                logger=self.logger,
            )  # fmt: skip
            return str(found["metadata"]["uid"])
        return str(created["metadata"]["uid"])

    async def _create_filter(self, parent: Parent, name: str, child_uid: str, spec: dict[str, Any]) -> None:
        body = {
            "apiVersion": API_VERSION,
            "kind": "MirrorFilter",
            "metadata": {
                "name": name,
                "namespace": parent.namespace,
                "labels": {GENERATED_FOR_LABEL: name, PARENT_LABEL: parent_label_value(parent.name)},
                "ownerReferences": [_owner_reference("MirrorSession", name, child_uid)],
            },
            "spec": spec,
        }
        try:
            await api.post(
                _FILTER_RESOURCE.get_url(namespace=parent.namespace), payload=body, settings=self.settings,
                logger=self.logger,
            )  # fmt: skip
        except APIConflictError:
            await self._patch(_FILTER_RESOURCE, parent.namespace, name, {"spec": spec})

    async def _patch(self, resource: kopf.Resource, namespace: str, name: str, patch: dict[str, Any]) -> None:
        await patch_obj(
            settings=self.settings, resource=resource, namespace=namespace, name=name, patch=kopf.Patch(patch),
            logger=self.logger,
        )  # fmt: skip

    async def _delete(self, resource: kopf.Resource, namespace: str, name: str) -> None:
        with contextlib.suppress(APINotFoundError):
            await api.delete(
                resource.get_url(namespace=namespace, name=name),
                payload={"propagationPolicy": "Background"},
                settings=self.settings,
                logger=self.logger,
            )


def _owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _differs(desired: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Whether a field we set differs (fields the apiserver defaulted and we did not set are left alone)."""
    return any(current.get(k) != v for k, v in desired.items()) or any(
        k in current for k in ("ingressRules", "egressRules", "networkServices", "targetRef", "targetSelector",
                               "packetLength", "description", "tags", "region")
        if k not in desired and current.get(k) not in (None, [], {})
    )  # fmt: skip


def _merge(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that sets `desired` and removes the optional fields it no longer has."""
    removed = {k: None for k in current if k not in desired and k not in ("deletionPolicy", "sessionNumber")}
    return {**removed, **desired}


def _merged_conditions(
    current: list[dict[str, Any]], wanted: list[dict[str, Any]], generation: int
) -> list[dict[str, Any]]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    by_type = {c.get("type"): c for c in current}
    merged = []
    for condition in wanted:
        old = by_type.get(condition["type"]) or {}
        same = all(old.get(k) == condition[k] for k in ("status", "reason", "message"))
        transition = old.get("lastTransitionTime") if old.get("status") == condition["status"] else None
        if same and old.get("observedGeneration") == generation:
            merged.append(old)
            continue
        merged.append({**condition, "observedGeneration": generation, "lastTransitionTime": transition or now})
    others = [c for c in current if c.get("type") not in {w["type"] for w in wanted}]
    return merged + others


def _fingerprint(parent: Parent, raw_status: Mapping[str, Any], inputs: Mapping[str, Any]) -> str:
    summary = {
        "parent": [parent.uid, parent.generation, parent.phase, parent.spec.model_dump(mode="json")],
        "status": raw_status,
        "pods": [repr(p) for p in inputs["pods"]],
        "nodes": sorted(repr(n) for n in inputs["nodes"].values()),
        "children": sorted(repr((r.fact, sorted(r.raw_spec.items(), key=str))) for r in inputs["children"].values()),
        "filter": inputs["filter"],
        "over": inputs.get("over"),
    }
    return hashlib.sha256(json.dumps(summary, sort_keys=True, default=str).encode()).hexdigest()


@kopf.on.startup()
async def start_workload_loop(
    memo: kopf.Memo, settings: kopf.OperatorSettings, logger: logging.Logger, **indexes: Any
) -> None:
    loop = WorkloadLoop(indexes, memo, settings, logger)
    memo.workload = loop
    memo.workload_task = asyncio.create_task(loop.run(), name="workload sources")


@kopf.on.cleanup()
async def stop_workload_loop(memo: kopf.Memo, **_: Any) -> None:
    task = getattr(memo, "workload_task", None)
    if task is not None:
        task.cancel()
