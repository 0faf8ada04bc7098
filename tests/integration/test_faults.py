"""Faults: the operator killed mid-create, AWS answers lost, the apiserver restarted, EC2 throttling.

Each test runs its OWN operator process, restricted to the test's namespace and standalone (no peering), whose
AWS endpoint is a fault injector (`trafficmirror_testbed.faultproxy.FaultProxy`) in front of the emulator. The
session-wide operator is frozen through kopf's peering for the duration (a higher-priority peer record, as
`kopf freeze` writes), so only the operator under test touches the objects. AWS is always checked by asking the
emulator directly, never through the proxy.

Scale: the kill test creates 200 sessions (plus 25 targets and 25 filters, 250 objects); the apiserver-restart
and throttling tests 40 sessions (50 objects), to keep the module within a few minutes on a 2-core machine.
Every session has its own source ENI and at most 8 sessions share a target (the emulator's sources-per-target
quota is 10).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import RESYNC_SECONDS, Cluster, OperatorProcess
from trafficmirror_testbed.ec2_throttling import mutates
from trafficmirror_testbed.emulator import Emulator
from trafficmirror_testbed.faultproxy import FaultProxy
from trafficmirror_testbed.kube import ControlPlane, free_port
from trafficmirror_testbed.seed import World

SESSIONS = 40
CRASH_SESSIONS = 200  # the issue's 200 creates: the kills land among them
SESSIONS_PER_TARGET = 8
PLURALS = {"MirrorSession": "mirrorsessions", "MirrorTarget": "mirrortargets", "MirrorFilter": "mirrorfilters"}
SESSION_CREATE = "CreateTrafficMirrorSession"
CREATE_ACTIONS = {
    SESSION_CREATE,
    "CreateTrafficMirrorTarget",
    "CreateTrafficMirrorFilter",
    "CreateTrafficMirrorFilterRule",
}
OWNER_UID_TAG = "trafficmirror.io/owner-uid"
OWNER_TAG = "trafficmirror.io/owner"
PEERING = "trafficmirror"
FREEZE_IDENTITY = "trafficmirror-fault-tests"
CONVERGE_SECONDS = 240.0


# --------------------------------------------------------------------------------------------------------------
# The operator under test: its own process, through the fault proxy, watching only the test's namespace.
# --------------------------------------------------------------------------------------------------------------
class ProxiedOperator(OperatorProcess):
    def __init__(
        self,
        control_plane: ControlPlane,
        emulator: Emulator,
        log: Path,
        *,
        endpoint_url: str,
        namespace: str,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(control_plane, emulator, log)
        self.endpoint_url = endpoint_url
        self.namespace = namespace
        self.extra_env = env or {}
        self.kills = 0

    def start(self) -> None:
        env = {
            **self.control_plane.env(),
            **self.emulator.env(),
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "TRAFFICMIRROR_RESYNC_SECONDS": str(RESYNC_SECONDS),
            "TRAFFICMIRROR_METRICS_PORT": str(self.metrics_port),
            "TRAFFICMIRROR_CLUSTER_NAME": "testbed",
            **self.extra_env,
        }
        command = [sys.executable, "-m", "trafficmirror.cli", "operator", "--standalone", "--log-format", "full"]
        command += ["--namespace", self.namespace, "--liveness", f"http://127.0.0.1:{free_port()}/healthz"]
        self.process = subprocess.Popen(command, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        self._wait_started()

    def _wait_started(self, timeout: float = 90) -> None:
        """Its startup handler has run once its metrics endpoint answers."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"operator exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise AssertionError(f"operator not started after {timeout}s:\n{self.log_tail()}")

    def kill_and_restart(self) -> None:
        self.stop(kill=True)
        self.kills += 1
        self.start()


def _patch_peering(control_plane: ControlPlane, status: dict[str, Any]) -> None:
    control_plane.kubectl(
        "patch", "clusterkopfpeering", PEERING, "--type", "merge", "-p", json.dumps({"status": status})
    )


def _wait_log(operator: OperatorProcess, offset: int, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if operator.process is None or operator.process.poll() is not None:
            return  # nothing running that could still act
        with operator.log.open("rb") as log:
            log.seek(offset)
            if text.encode() in log.read():
                return
        time.sleep(0.2)
    raise AssertionError(f"the shared operator never logged {text!r}:\n{operator.log_tail()}")


@pytest.fixture
def shared_operator_frozen(control_plane: ControlPlane, operator_process: OperatorProcess) -> Iterator[None]:
    """Pause the session's operator with a higher-priority peer record (what `kopf freeze` does), then resume it."""
    # kopf starts paused until it has read the peering; it says so only when it leaves a pause it logged.
    _wait_log(operator_process, 0, "Resuming operations after the pause")
    offset = operator_process.log.stat().st_size
    peer = {"priority": 1000, "lifetime": 900, "lastseen": datetime.now(UTC).isoformat()}
    _patch_peering(control_plane, {FREEZE_IDENTITY: peer})
    try:
        _wait_log(operator_process, offset, "Pausing operations in favour of")
        yield
    finally:
        offset = operator_process.log.stat().st_size
        _patch_peering(control_plane, {FREEZE_IDENTITY: None})
        _wait_log(operator_process, offset, "Resuming operations after the pause")


@dataclass
class FaultBed:
    control_plane: ControlPlane
    ec2: Any  # the emulator itself, not through the proxy
    world: World
    proxy: FaultProxy
    cluster: Cluster
    make_operator: Callable[..., ProxiedOperator]
    operators: list[ProxiedOperator] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return self.cluster.namespace

    def operator(self, **env: str) -> ProxiedOperator:
        running = self.make_operator(env)
        self.operators.append(running)
        self.cluster.operator = running  # so waits print this operator's log
        running.start()
        return running


@pytest.fixture
def bed(
    control_plane: ControlPlane,
    emulator: Emulator,
    ec2: Any,
    world: World,
    namespace: str,
    shared_operator_frozen: None,
    tmp_path: Path,
) -> Iterator[FaultBed]:
    proxy = FaultProxy(emulator.endpoint_url, seed=20261126).start()
    log = tmp_path / "operator.log"

    def make_operator(env: dict[str, str]) -> ProxiedOperator:
        return ProxiedOperator(
            control_plane, emulator, log, endpoint_url=proxy.endpoint_url, namespace=namespace, env=env
        )

    placeholder = make_operator({})
    faults = FaultBed(control_plane, ec2, world, proxy, Cluster(control_plane, namespace, placeholder), make_operator)
    try:
        yield faults
    finally:
        # Whatever happened, the objects go (through a healthy operator) and every process of this test ends.
        proxy.heal()
        try:
            last = faults.operators[-1] if faults.operators else None
            if last is None or last.process is None or last.process.poll() is not None:
                faults.operator()
            delete_all(faults)
        finally:
            for running in faults.operators:
                running.stop(kill=True)
            proxy.stop()


# --------------------------------------------------------------------------------------------------------------
# The objects, and what the cluster and AWS say of them.
# --------------------------------------------------------------------------------------------------------------
def launch(ec2: Any, world: World, count: int, instance_type: str) -> list[str]:
    """Primary ENIs of `count` new instances, launched in one call."""
    reservation = ec2.run_instances(
        ImageId=world.image_id,
        InstanceType=instance_type,
        MinCount=count,
        MaxCount=count,
        SubnetId=world.subnet_ids["a"],
    )
    return [i["NetworkInterfaces"][0]["NetworkInterfaceId"] for i in reservation["Instances"]]


def mirror_objects(bed: FaultBed, prefix: str, sessions: int = SESSIONS) -> list[dict[str, Any]]:
    """`sessions` sessions, each on its own new source, in groups of 8 sharing a target and a filter of 3 rules."""
    groups = -(-sessions // SESSIONS_PER_TARGET)
    target_enis = launch(bed.ec2, bed.world, groups, "c5.large")
    source_enis = launch(bed.ec2, bed.world, sessions, "t3.small")
    rules = {
        "ingressRules": [
            {"ruleNumber": 10, "protocol": 6, "destinationPortRange": {"fromPort": 443, "toPort": 443}},
            {"ruleNumber": 20, "protocol": 17, "destinationPortRange": {"fromPort": 53, "toPort": 53}},
        ],
        "egressRules": [{"ruleNumber": 10, "action": "accept"}],
    }
    objects: list[dict[str, Any]] = []
    for group, eni in enumerate(target_enis):
        objects.append({"kind": "MirrorFilter", "metadata": {"name": f"{prefix}-filter-{group}"}, "spec": rules})
        objects.append(
            {
                "kind": "MirrorTarget",
                "metadata": {"name": f"{prefix}-target-{group}"},
                "spec": {"networkInterfaceId": eni},
            }
        )
    for index, eni in enumerate(source_enis):
        group = index // SESSIONS_PER_TARGET
        objects.append(
            {
                "kind": "MirrorSession",
                "metadata": {"name": f"{prefix}-session-{index:02d}"},
                "spec": {
                    "source": {"networkInterfaceId": eni},
                    "targetRef": {"name": f"{prefix}-target-{group}"},
                    "filterRef": {"name": f"{prefix}-filter-{group}"},
                },
            }
        )
    return [{**o, "apiVersion": "trafficmirror.io/v1alpha1"} for o in objects]


def apply_all(bed: FaultBed, objects: list[dict[str, Any]]) -> None:
    manifest = {"apiVersion": "v1", "kind": "List", "items": objects}
    bed.control_plane.kubectl("apply", "-n", bed.namespace, "-f", "-", input=json.dumps(manifest))


def cluster_objects(bed: FaultBed, prefix: str = "") -> list[dict[str, Any]]:
    result = bed.control_plane.kubectl(
        "get", ",".join(PLURALS.values()), "-n", bed.namespace, "-o", "json", "--request-timeout=20s", check=False
    )
    if result.returncode != 0:
        return []  # the apiserver is (re)starting: ask again
    items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return [o for o in items if o["metadata"]["name"].startswith(prefix)]


def phase(obj: dict[str, Any]) -> str:
    return str(obj.get("status", {}).get("phase") or "-")


def ready_count(bed: FaultBed, prefix: str = "") -> int:
    return sum(phase(o) == "Ready" for o in cluster_objects(bed, prefix))


def wait_all_ready(
    bed: FaultBed, prefix: str, expected: int, timeout: float = CONVERGE_SECONDS
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = cluster_objects(bed, prefix)
        if len(seen) == expected and all(phase(o) == "Ready" for o in seen):
            return seen
        failed = [o for o in seen if phase(o) == "Failed"]
        if failed:
            raise AssertionError(f"terminal failures: {_summary(failed)}\n{bed.cluster.operator.log_tail(80)}")
        time.sleep(1)
    not_ready = [o for o in seen if phase(o) != "Ready"]
    raise AssertionError(
        f"{len(not_ready)} of {len(seen)} objects not Ready after {timeout}s: {_summary(not_ready)[:3000]}\n"
        f"operator log:\n{bed.cluster.operator.log_tail(80)}"
    )


def _summary(objects: list[dict[str, Any]]) -> str:
    def reason(o: dict[str, Any]) -> str:
        ready: dict[str, Any] = next((c for c in o.get("status", {}).get("conditions", []) if c["type"] == "Ready"), {})
        return f"{o['kind']}/{o['metadata']['name']}={phase(o)}:{ready.get('reason')}:{ready.get('message')}"

    return "; ".join(reason(o) for o in objects)


def delete_all(bed: FaultBed) -> None:
    """Sessions first (targets and filters wait for them), then the rest; waits until every finalizer ran."""
    for plurals in ("mirrorsessions", "mirrortargets,mirrorfilters"):
        bed.control_plane.kubectl("delete", plurals, "--all", "-n", bed.namespace, "--wait=true", "--timeout=180s")
    leftovers = aws_resources(bed)
    assert not leftovers, f"AWS still holds resources of deleted objects: {leftovers}"


@dataclass(frozen=True)
class AwsResource:
    kind: str  # the owning object's kind: MirrorSession, MirrorTarget, MirrorFilter
    aws_id: str
    owner_uid: str
    owner: str  # Kind/namespace/name


def aws_resources(bed: FaultBed) -> list[AwsResource]:
    """Every mirror resource in the emulator whose owner tag names an object of this test's namespace."""
    found = []
    for kind, operation, key, id_key in (
        ("MirrorSession", "describe_traffic_mirror_sessions", "TrafficMirrorSessions", "TrafficMirrorSessionId"),
        ("MirrorTarget", "describe_traffic_mirror_targets", "TrafficMirrorTargets", "TrafficMirrorTargetId"),
        ("MirrorFilter", "describe_traffic_mirror_filters", "TrafficMirrorFilters", "TrafficMirrorFilterId"),
    ):
        for page in bed.ec2.get_paginator(operation).paginate():
            for item in page[key]:
                tags = {t["Key"]: t["Value"] for t in item.get("Tags", [])}
                owner = tags.get(OWNER_TAG, "")
                if owner.split("/")[1:2] == [bed.namespace]:
                    found.append(AwsResource(kind, item[id_key], tags.get(OWNER_UID_TAG, ""), owner))
    return found


def mutating_calls(bed: FaultBed) -> Counter[str]:
    """The EC2 calls that change something, by action, counted at the fault proxy since its last reset."""
    return Counter({action: n for action, n in bed.proxy.counters()["calls"].items() if n and mutates(action)})


def assert_one_aws_resource_per_object(bed: FaultBed, objects: list[dict[str, Any]]) -> None:
    """0 duplicates (two resources for one owner UID) and 0 orphans (a resource whose owner UID has no object)."""
    by_uid = {o["metadata"]["uid"]: o for o in objects}
    owned: dict[str, list[AwsResource]] = defaultdict(list)
    for resource in aws_resources(bed):
        owned[resource.owner_uid].append(resource)
    orphans = [r for uid, resources in owned.items() if uid not in by_uid for r in resources]
    duplicates = {uid: [r.aws_id for r in resources] for uid, resources in owned.items() if len(resources) > 1}
    missing = [by_uid[uid]["metadata"]["name"] for uid in by_uid if uid not in owned]
    assert (orphans, duplicates, missing) == ([], {}, []), (
        f"orphans: {orphans}\nduplicates: {duplicates}\nmissing: {missing}"
    )
    id_field = {"MirrorSession": "trafficMirrorSessionId", "MirrorTarget": "trafficMirrorTargetId"}
    id_field["MirrorFilter"] = "trafficMirrorFilterId"
    for uid, (resource,) in owned.items():
        obj = by_uid[uid]
        assert resource.kind == obj["kind"]
        assert resource.aws_id == obj["status"][id_field[obj["kind"]]], f"{obj['metadata']['name']}: {resource}"
    # Rules have no tags: a duplicated rule create would show as a filter with more rules than its spec.
    filter_ids = [o["status"]["trafficMirrorFilterId"] for o in objects if o["kind"] == "MirrorFilter"]
    if filter_ids:
        described = bed.ec2.describe_traffic_mirror_filters(TrafficMirrorFilterIds=filter_ids)["TrafficMirrorFilters"]
        assert {
            f["TrafficMirrorFilterId"]: (len(f["IngressFilterRules"]), len(f["EgressFilterRules"])) for f in described
        } == {i: (2, 1) for i in filter_ids}


def faults_seen(proxy: FaultProxy, counter: str, actions: set[str]) -> int:
    """How many calls of these actions the proxy saw ("calls"), or answered for them with a fault."""
    counted = proxy.counters()[counter]
    return sum(counted.get(action, 0) for action in actions)


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------------------------------------------
# The tests.
# --------------------------------------------------------------------------------------------------------------
def test_kills_and_lost_create_responses_leave_no_duplicate_and_no_orphan(bed: FaultBed) -> None:
    """Half of all create responses are lost after the emulator did the create, and the operator is SIGKILLed
    4 times at seeded-random points of the creates: some right after a lost answer (AWS has the resource, the
    operator has not recorded it), the others after a random number of further create calls. botocore's own
    retry is off (TRAFFICMIRROR_AWS_MAX_ATTEMPTS=0) so every lost answer reaches the operator's reconcile."""
    objects = mirror_objects(bed, "crash", sessions=CRASH_SESSIONS)
    bed.proxy.configure(drop_response_for=CREATE_ACTIONS, drop_ratio=0.5)
    operator = bed.operator(TRAFFICMIRROR_AWS_MAX_ATTEMPTS="0")
    apply_all(bed, objects)

    # The first kill lands while targets and filters are created, the others while the sessions are.
    moments = random.Random(7)
    plan = [("lost", CREATE_ACTIONS - {SESSION_CREATE})]
    plan += [(moments.choice(["lost", "count"]), {SESSION_CREATE}) for _ in range(3)]
    kills: list[str] = []
    for how, actions in plan:
        if how == "lost":
            trigger = f"right after a lost {'/'.join(sorted(actions))} response"
            goal = faults_seen(bed.proxy, "dropped", actions) + 1
        else:
            more = moments.randint(2, 12)
            trigger = f"after {more} more {'/'.join(sorted(actions))} calls"
            goal = faults_seen(bed.proxy, "calls", actions) + more
        counter = "dropped" if how == "lost" else "calls"
        reached = wait_until(lambda: faults_seen(bed.proxy, counter, actions) >= goal, 120)  # noqa: B023
        assert reached, f"the creates stalled before kill {len(kills) + 1} ({trigger}):\n{operator.log_tail()}"
        operator.kill_and_restart()
        kills.append(f"{trigger} ({ready_count(bed, 'crash')} of {len(objects)} Ready)")
    bed.proxy.heal()  # the lost answers were "for a while"; the last restart must now converge

    ready = wait_all_ready(bed, "crash", len(objects))
    faults = bed.proxy.counters()
    print(f"kills: {kills}; lost create responses: {faults['dropped']}; calls: {sum(faults['calls'].values())}")
    assert operator.kills == 4
    assert sum(faults["dropped"].values()) >= 4
    assert_one_aws_resource_per_object(bed, ready)


def test_restarting_the_apiserver_mid_run_converges(bed: FaultBed, control_plane: ControlPlane) -> None:
    objects = mirror_objects(bed, "restart")
    bed.operator()
    apply_all(bed, objects)
    # Mid-run: some objects are done, most are not.
    assert wait_until(lambda: ready_count(bed, "restart") >= 3, 120), bed.cluster.operator.log_tail()
    before = ready_count(bed, "restart")
    control_plane.restart_apiserver()  # returns once /readyz answers
    ready = wait_all_ready(bed, "restart", len(objects))
    print(f"restarted the apiserver with {before} of {len(objects)} Ready")
    assert before < len(objects)
    assert_one_aws_resource_per_object(bed, ready)


def test_throttling_converges_without_a_hot_loop(bed: FaultBed) -> None:
    """The same 50 objects twice with one operator: fault-free, then with 30 % of EC2 calls answered with
    RequestLimitExceeded. The throttled run may cost more calls (retries), but at most 4x the fault-free run's,
    counted by the proxy from the apply until all are Ready and one resync period later."""
    operator = bed.operator()

    def converge(prefix: str) -> tuple[int, dict[str, dict[str, int]], float]:
        objects = mirror_objects(bed, prefix)
        bed.proxy.reset_counters()
        started = time.monotonic()
        apply_all(bed, objects)
        ready = wait_all_ready(bed, prefix, len(objects))
        took = time.monotonic() - started
        # One more resync period: a hot loop would go on after Ready.
        settle = time.monotonic() + RESYNC_SECONDS * 1.5
        while time.monotonic() < settle:
            time.sleep(0.5)
        counters = bed.proxy.counters()
        assert_one_aws_resource_per_object(bed, ready)
        return sum(counters["calls"].values()), counters, took

    calm_calls, calm, calm_took = converge("calm")
    delete_all(bed)
    bed.proxy.configure(throttle_ratio=0.3)
    own_count_before = operator.aws_calls(SESSION_CREATE)
    stormy_calls, stormy, stormy_took = converge("stormy")
    own_count = operator.aws_calls(SESSION_CREATE) - own_count_before
    bed.proxy.heal()
    throttled = sum(stormy["throttled"].values())
    print(
        f"fault-free: {calm_calls} EC2 calls in {calm_took:.0f}s {calm['calls']}\n"
        f"30% throttled: {stormy_calls} EC2 calls ({throttled} throttled) in {stormy_took:.0f}s {stormy['calls']}\n"
        f"{SESSION_CREATE} while throttled: {stormy['calls'][SESSION_CREATE]} seen by the proxy, "
        f"{own_count:.0f} in the operator's trafficmirror_aws_calls_total"
    )
    assert throttled > 0.2 * stormy_calls
    assert stormy_calls <= 4 * calm_calls, f"{stormy_calls} calls throttled vs {calm_calls} fault-free"
    creates = {a: n for a, n in stormy["calls"].items() if a in CREATE_ACTIONS}
    assert sum(creates.values()) <= 4 * sum(n for a, n in calm["calls"].items() if a in CREATE_ACTIONS)
