"""Pod selector sessions against the real apiserver and the AWS emulator: AWS sessions follow pods as
they are created, scaled, moved and deleted, and nodes as they go; nothing is left in AWS.

No kubelet runs here: each Pod is created with `spec.nodeName` set, and the test writes
`status.podIP` itself, standing in for the kubelet. The pod's address is a secondary private IP of
its node's ENI in the emulator, as the VPC CNI assigns it. Nodes are Node objects whose providerID
names an emulator instance.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import time
from typing import Any

import pytest

from trafficmirror.reconcile.workload import child_name
from trafficmirror_testbed.seed import World

from .conftest import RESYNC_SECONDS, Cluster, condition, fresh_instance

TIMEOUT = 90.0


class Workload:
    """Nodes and pods of one test, and what AWS holds for them."""

    def __init__(self, cluster: Cluster, ec2: Any, world: World) -> None:
        self.cluster, self.ec2, self.world = cluster, ec2, world
        self.suffix = secrets.token_hex(3)
        self.nodes: dict[str, tuple[str, str]] = {}  # node name → (instance, primary ENI)

    def add_node(self, role: str, instance_type: str = "t3.small") -> str:
        instance, eni = fresh_instance(self.ec2, self.world, instance_type)
        name = f"{role}-{self.suffix}"
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                "spec": {"providerID": f"aws:///us-east-1a/{instance}"}}  # fmt: skip
        self.cluster.control_plane.kubectl("apply", "-f", "-", input=json.dumps(node))
        self.nodes[name] = (instance, eni)
        return name

    def delete_node(self, name: str) -> None:
        """The node goes, its instance is terminated (its ENI with it); the node's pods are deleted."""
        self.cluster.control_plane.kubectl("delete", "node", name, "--wait=true")
        instance, _eni = self.nodes.pop(name)
        self.ec2.terminate_instances(InstanceIds=[instance])

    def add_pod(self, name: str, node: str, eni: str | None = None, **extra: Any) -> str:
        """A pod on `node` whose IP is a new secondary address of the node's ENI (or of `eni`)."""
        eni = eni or self.nodes[node][1]
        before = self._addresses(eni)
        self.ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, SecondaryPrivateIpAddressCount=1)
        (address,) = self._addresses(eni) - before
        labels = extra.pop("labels", {"app": "web"})
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels, **extra},
            "spec": {"nodeName": node, "containers": [{"name": "web", "image": "web:1"}]},
        }  # fmt: skip
        kubectl = self.cluster.control_plane.kubectl
        kubectl("apply", "-n", self.cluster.namespace, "-f", "-", input=json.dumps(pod))
        # Standing in for the kubelet: the pod is running with its address.
        status = {"status": {"phase": "Running", "podIP": address, "podIPs": [{"ip": address}]}}
        kubectl("patch", "pod", name, "-n", self.cluster.namespace, "--subresource=status", "--type=merge",
                "-p", json.dumps(status))  # fmt: skip
        return address

    def delete_pod(self, name: str, address: str, eni: str) -> None:
        # No kubelet confirms a graceful deletion here: the pod is removed at once.
        self.cluster.control_plane.kubectl(
            "delete", "pod", name, "-n", self.cluster.namespace, "--grace-period=0", "--force"
        )
        self.ec2.unassign_private_ip_addresses(NetworkInterfaceId=eni, PrivateIpAddresses=[address])

    def _addresses(self, eni: str) -> set[str]:
        raw = self.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"][0]
        return {a["PrivateIpAddress"] for a in raw["PrivateIpAddresses"]}

    def aws_sessions(self, enis: set[str]) -> dict[str, dict[str, Any]]:
        """Source ENI → its AWS session, for the ENIs of this test."""
        sessions = self.ec2.describe_traffic_mirror_sessions()["TrafficMirrorSessions"]
        return {s["NetworkInterfaceId"]: s for s in sessions if s["NetworkInterfaceId"] in enis}

    def filter_rules(self, filter_id: str) -> dict[str, set[str]]:
        found = self.ec2.describe_traffic_mirror_filters(TrafficMirrorFilterIds=[filter_id])["TrafficMirrorFilters"][0]
        return {
            "ingress": {r["DestinationCidrBlock"] for r in found.get("IngressFilterRules", [])},
            "egress": {r["SourceCidrBlock"] for r in found.get("EgressFilterRules", [])},
        }

    def wait_aws(self, enis: set[str], expected: dict[str, set[str]], timeout: float = TIMEOUT) -> float:
        """Wait until AWS mirrors exactly the ENIs of `expected` (of those in `enis`), each through a filter
        whose rules are the pods' /32s; the seconds it took."""
        start = time.monotonic()
        last: Any = None
        while time.monotonic() - start < timeout:
            sessions = self.aws_sessions(enis)
            if set(sessions) == set(expected):
                rules = {eni: self.filter_rules(s["TrafficMirrorFilterId"]) for eni, s in sessions.items()}
                wanted = {eni: {f"{a}/32" for a in addresses} for eni, addresses in expected.items()}
                if all(rules[e]["ingress"] == rules[e]["egress"] == wanted[e] for e in expected):
                    return time.monotonic() - start
                last = rules
            else:
                last = sorted(sessions)
            time.sleep(0.2)
        raise AssertionError(f"AWS never matched {expected}: last {last}\n{self.cluster.operator.log_tail()}")


def _setup(cluster: Cluster, ec2: Any, world: World) -> None:
    _capture_instance, capture_eni = fresh_instance(ec2, world, "c5.large")
    cluster.apply({"kind": "MirrorTarget", "metadata": {"name": "capture"},
                   "spec": {"networkInterfaceId": capture_eni}})  # fmt: skip
    cluster.apply({"kind": "MirrorFilter", "metadata": {"name": "all"},
                   "spec": {"ingressRules": [{"ruleNumber": 1}], "egressRules": [{"ruleNumber": 1}]}})  # fmt: skip
    cluster.apply({
        "kind": "MirrorSession", "metadata": {"name": "web"},
        "spec": {"source": {"podSelector": {"matchLabels": {"app": "web"}}},
                 "targetRef": {"name": "capture"}, "filterRef": {"name": "all"}},
    })  # fmt: skip


MUTATING = (
    "CreateTrafficMirrorSession", "DeleteTrafficMirrorSession", "ModifyTrafficMirrorSession",
    "CreateTrafficMirrorFilter", "DeleteTrafficMirrorFilter", "CreateTrafficMirrorFilterRule",
    "ModifyTrafficMirrorFilterRule", "DeleteTrafficMirrorFilterRule", "CreateTags", "DeleteTags",
)  # fmt: skip


def _mutating_by_operation(cluster: Cluster) -> dict[str, float]:
    return {name: cluster.operator.aws_calls(name) for name in MUTATING}


def _mutating_calls(cluster: Cluster) -> float:
    return sum(_mutating_by_operation(cluster).values())


def test_aws_sessions_follow_a_deployment_scaled_moved_and_its_node_deleted(
    cluster: Cluster, ec2: Any, world: World
) -> None:
    load = Workload(cluster, ec2, world)
    node_a, node_b = load.add_node("wa"), load.add_node("wb")
    eni_a, eni_b = load.nodes[node_a][1], load.nodes[node_b][1]
    enis = {eni_a, eni_b}
    _setup(cluster, ec2, world)
    pods = {
        "web-1": (load.add_pod("web-1", node_a), eni_a),
        "web-2": (load.add_pod("web-2", node_a), eni_a),
        "web-3": (load.add_pod("web-3", node_b), eni_b),
    }

    def expected() -> dict[str, set[str]]:
        by_eni: dict[str, set[str]] = {}
        for address, eni in pods.values():
            by_eni.setdefault(eni, set()).add(address)
        return by_eni

    # 3 pods over 2 nodes: 2 AWS sessions, each narrowed to its pods' addresses.
    load.wait_aws(enis, expected(), timeout=180)
    parent = cluster.wait_for(
        "mirrorsession", "web",
        lambda o: len(o["status"].get("sources") or []) == 2
        and all(s["state"] == "Mirroring" for s in o["status"]["sources"]),
    )  # fmt: skip
    assert parent["status"]["phase"] == "Ready"
    for source in parent["status"]["sources"]:
        assert source["narrowed"] is True and source["trafficMirrorSessionId"].startswith("tms-")
        assert {p["ip"] for p in source["pods"]} == expected()[source["networkInterfaceId"]]
        assert source["virtualNetworkId"] is not None
    children = json.loads(
        cluster.control_plane.kubectl(
            "get", "mirrorsessions", "-n", cluster.namespace, "-l", "trafficmirror.io/parent-session=web", "-o", "json"
        ).stdout
    )["items"]
    assert len(children) == 2
    for child in children:
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["name"], owner["controller"], owner["blockOwnerDeletion"]) == ("web", True, True)

    latencies: list[float] = []
    calls: list[float] = []

    def step(change: Any) -> None:
        before = _mutating_calls(cluster)
        start = time.monotonic()
        change()
        load.wait_aws(enis, expected())
        latencies.append(time.monotonic() - start)
        time.sleep(1.0)  # let the status writes settle before counting
        calls.append(_mutating_calls(cluster) - before)

    # Scale to 5: the new pods' addresses join the rules; no session is re-created.
    sessions_before = {e: s["TrafficMirrorSessionId"] for e, s in load.aws_sessions(enis).items()}
    step(lambda: pods.update({"web-4": (load.add_pod("web-4", node_a), eni_a)}))
    step(lambda: pods.update({"web-5": (load.add_pod("web-5", node_b), eni_b)}))
    assert {e: s["TrafficMirrorSessionId"] for e, s in load.aws_sessions(enis).items()} == sessions_before

    # Scale to 1: node b's pods go, and with them its session.
    def scale_down() -> None:
        for name in ("web-2", "web-3", "web-4", "web-5"):
            address, eni = pods.pop(name)
            load.delete_pod(name, address, eni)

    step(scale_down)

    # Move the last pod to node b.
    def move() -> None:
        address, eni = pods.pop("web-1")
        load.delete_pod("web-1", address, eni)
        pods["web-1b"] = (load.add_pod("web-1b", node_b), eni_b)

    step(move)

    # Node b goes (its instance terminated, its pod deleted): nothing is mirrored, the session stays Ready.
    def node_gone() -> None:
        address, eni = pods.pop("web-1b")
        load.delete_pod("web-1b", address, eni)
        load.delete_node(node_b)

    step(node_gone)
    parent = cluster.wait_for(
        "mirrorsession", "web", lambda o: (condition(o, "SourcesFound") or {}).get("reason") == "NoMatch"
    )
    assert parent["status"]["phase"] == "Ready" and parent["status"]["sources"] == []

    # A new pod, then the parent deleted: the garbage collector takes the children, their finalizers AWS.
    pods["web-6"] = (load.add_pod("web-6", node_a), eni_a)
    load.wait_aws(enis, expected())
    cluster.delete("mirrorsession", "web")
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and (load.aws_sessions(enis) or _children(cluster)):
        time.sleep(0.5)
    assert load.aws_sessions(enis) == {} and _children(cluster) == []
    print(
        f"churn: pod change -> AWS change {', '.join(f'{s:.1f}' for s in latencies)} s; "
        f"mutating EC2 calls per change {', '.join(f'{c:.0f}' for c in calls)}"
    )
    assert max(calls) <= 12  # a step changes at most two ENIs: their session and filter rules, nothing else


def _wait_no_child_deleting(cluster: Cluster, timeout: float = 120.0) -> None:
    """Until no child MirrorSession or generated MirrorFilter is being deleted: a filter's delete waits for
    its session's (retried a few seconds later), the last of a step's work, not the steady state."""
    deadline = time.monotonic() + timeout
    deleting = ""
    while time.monotonic() < deadline:
        deleting = cluster.control_plane.kubectl(
            "get", "mirrorsessions,mirrorfilters", "-n", cluster.namespace, "-l", "trafficmirror.io/parent-session",
            "-o", "jsonpath={range .items[?(@.metadata.deletionTimestamp)]}{.kind}/{.metadata.name} {end}",
        ).stdout.strip()  # fmt: skip
        if not deleting:
            return
        time.sleep(0.5)
    raise AssertionError(f"still deleting after {timeout} s: {deleting}\n{cluster.operator.log_tail()}")


def _children(cluster: Cluster) -> list[str]:
    out = cluster.control_plane.kubectl(
        "get", "mirrorsessions", "-n", cluster.namespace, "-l", "trafficmirror.io/parent-session", "-o", "name"
    ).stdout
    return out.split()


def test_a_mix_of_supported_t2_micro_and_branch_eni_pods_says_which_are_mirrored_and_why(
    cluster: Cluster, ec2: Any, world: World
) -> None:
    load = Workload(cluster, ec2, world)
    good, legacy = load.add_node("good"), load.add_node("legacy", "t2.micro")
    _setup(cluster, ec2, world)
    load.add_pod("web-good", good)
    load.add_pod("web-legacy", legacy)
    # Security groups for pods: the pod's own branch ENI (the VPC resource controller creates it as such).
    subnet = ec2.describe_network_interfaces(NetworkInterfaceIds=[load.nodes[good][1]])["NetworkInterfaces"][0]
    branch = ec2.create_network_interface(SubnetId=subnet["SubnetId"], InterfaceType="branch")["NetworkInterface"]
    load.add_pod("web-branch", good, eni=branch["NetworkInterfaceId"])
    load.add_pod("web-sgp", good, annotations={"vpc.amazonaws.com/pod-eni": '[{"eniId":"eni-0123456789abcdef0"}]'})
    parent = cluster.wait_for(
        "mirrorsession", "web",
        lambda o: {s.get("state") for s in o.get("status", {}).get("sources") or []} == {"Mirroring", "Failed"}
        and len(o["status"].get("skippedPods") or []) == 2,
        timeout=180,
    )  # fmt: skip
    by_node = {s["nodeName"]: s for s in parent["status"]["sources"]}
    assert by_node[good]["state"] == "Mirroring"
    assert by_node[legacy]["state"] == "Failed" and by_node[legacy]["reason"] == "UnsupportedInstanceType"
    assert "t2.micro" in by_node[legacy]["message"]
    skipped = {p["name"]: p["reason"] for p in parent["status"]["skippedPods"]}
    assert skipped == {"web-branch": "BranchNetworkInterface", "web-sgp": "BranchNetworkInterface"}
    assert parent["status"]["phase"] == "Ready"
    assert set(load.aws_sessions({load.nodes[good][1], load.nodes[legacy][1]})) == {load.nodes[good][1]}


CHURN_SEED = int(os.environ.get("TRAFFICMIRROR_WORKLOAD_SEED", "20261130"))
CHURN_STEPS = int(os.environ.get("TRAFFICMIRROR_WORKLOAD_STEPS", "12"))


def test_seeded_random_pod_churn_keeps_aws_equal_to_the_pods_enis_and_quiet_at_steady_state(
    cluster: Cluster, ec2: Any, world: World
) -> None:
    """Random pod additions, deletions and moves over three nodes (one of them with a second ENI): after
    each step AWS mirrors exactly the ENIs holding a selected pod, narrowed to their addresses; once
    settled, a resync period passes without a mutating EC2 call; deleting the session leaves nothing.
    Replay with TRAFFICMIRROR_WORKLOAD_SEED=N."""
    rng = random.Random(CHURN_SEED)
    load = Workload(cluster, ec2, world)
    names = [load.add_node(f"c{n}") for n in range(3)]
    node_enis = {name: [load.nodes[name][1]] for name in names}
    instance = load.nodes[names[0]][0]
    subnet = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["SubnetId"]
    second = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
    ec2.attach_network_interface(NetworkInterfaceId=second, InstanceId=instance, DeviceIndex=1)
    node_enis[names[0]].append(second)
    enis = {e for found in node_enis.values() for e in found}
    _setup(cluster, ec2, world)
    pods: dict[str, tuple[str, str, bool]] = {}  # name → (address, ENI, selected)
    serial = 0

    def add() -> None:
        nonlocal serial
        serial += 1
        node = rng.choice(names)
        eni = rng.choice(node_enis[node])
        selected = rng.random() < 0.8
        name = f"p{serial}"
        labels = {"app": "web" if selected else "db"}
        pods[name] = (load.add_pod(name, node, eni=eni, labels=labels), eni, selected)

    def remove() -> None:
        name = rng.choice(sorted(pods))
        address, eni, _selected = pods.pop(name)
        load.delete_pod(name, address, eni)

    def expected() -> dict[str, set[str]]:
        by_eni: dict[str, set[str]] = {}
        for address, eni, selected in pods.values():
            if selected:
                by_eni.setdefault(eni, set()).add(address)
        return by_eni

    for _ in range(3):
        add()
    load.wait_aws(enis, expected(), timeout=180)
    steps = []
    for _ in range(CHURN_STEPS):
        move = rng.choice(["add", "add", "remove", "move"]) if pods else "add"
        if move == "add":
            add()
        elif move == "remove":
            remove()
        else:
            remove()
            add()
        steps.append(move)
        load.wait_aws(enis, expected())
    _wait_no_child_deleting(cluster)
    time.sleep(2.0)  # the last status writes
    before = _mutating_by_operation(cluster)
    time.sleep(RESYNC_SECONDS + 2.0)
    after = _mutating_by_operation(cluster)
    changed = {name: after[name] - before[name] for name in MUTATING if after[name] != before[name]}
    if changed:
        lines = [ln for ln in cluster.operator.log_tail(400).splitlines() if "succeeded." not in ln]
        pytest.fail(f"mutating calls at steady state after {steps}: {changed}\n" + "\n".join(lines[-60:]))
    cluster.delete("mirrorsession", "web")
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and (load.aws_sessions(enis) or _children(cluster)):
        time.sleep(0.5)
    assert load.aws_sessions(enis) == {} and _children(cluster) == []


def test_a_node_selector_follows_node_labels_and_takes_all_enis_when_asked(
    cluster: Cluster, ec2: Any, world: World
) -> None:
    load = Workload(cluster, ec2, world)
    first, second = load.add_node("na"), load.add_node("nb")
    instance = load.nodes[first][0]
    subnet = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["SubnetId"]
    extra = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]["NetworkInterfaceId"]
    ec2.attach_network_interface(NetworkInterfaceId=extra, InstanceId=instance, DeviceIndex=1)
    enis = {load.nodes[first][1], load.nodes[second][1], extra}
    role = f"web-{load.suffix}"
    kubectl = cluster.control_plane.kubectl
    kubectl("label", "node", first, f"role={role}")
    _setup(cluster, ec2, world)
    cluster.apply({
        "kind": "MirrorSession", "metadata": {"name": "web"},
        "spec": {"source": {"nodeSelector": {"matchLabels": {"role": role}}},
                 "targetRef": {"name": "capture"}, "filterRef": {"name": "all"}},
    })  # fmt: skip

    def wait_sources(expected: set[str]) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and set(load.aws_sessions(enis)) != expected:
            time.sleep(0.3)
        assert set(load.aws_sessions(enis)) == expected, cluster.operator.log_tail()

    wait_sources({load.nodes[first][1]})  # the primary ENI only
    kubectl("label", "node", second, f"role={role}")
    wait_sources({load.nodes[first][1], load.nodes[second][1]})
    kubectl("label", "node", first, "role-")
    wait_sources({load.nodes[second][1]})
    kubectl("label", "node", first, f"role={role}")
    spec = cluster.get("mirrorsession", "web")["spec"]  # type: ignore[index]
    spec["source"]["interfaces"] = "all"
    cluster.apply({"kind": "MirrorSession", "metadata": {"name": "web"}, "spec": spec})
    wait_sources(enis)
    for session in load.aws_sessions(enis).values():  # a node source mirrors the whole ENI: the filter as it is
        assert session["TrafficMirrorFilterId"] == cluster.get("mirrorfilter", "all")["status"]["trafficMirrorFilterId"]  # type: ignore[index]
    cluster.delete("mirrorsession", "web")
    wait_sources(set())
    for name in (first, second):
        kubectl("delete", "node", name)


def test_a_child_the_apiserver_refuses_holds_up_no_other_sources_status(
    cluster: Cluster, ec2: Any, world: World
) -> None:
    """One child's write refused (here by a ValidatingAdmissionPolicy denying its generated MirrorFilter, as a
    namespace's policy or quota may) must not freeze the parent's status: every other source follows its child
    (Mirroring, then a new AWS session ID after its session is deleted out of band) within a few seconds, and the
    refused source converges once the apiserver accepts the write."""
    load = Workload(cluster, ec2, world)
    node_a, node_b = load.add_node("ra"), load.add_node("rb")
    eni_a, eni_b = load.nodes[node_a][1], load.nodes[node_b][1]
    refused = child_name("web", eni_a)
    policy = f"refuse-{refused}-{load.suffix}"
    kubectl = cluster.control_plane.kubectl
    manifests = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": ["trafficmirror.io"], "apiVersions": ["*"], "operations": ["CREATE"],
                    "resources": ["mirrorfilters"],
                }]},
                "validations": [{"expression": f"object.metadata.name != '{refused}'",
                                 "message": "refused by the test's admission policy"}],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy, "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": cluster.namespace}}},
            },
        },
    ]  # fmt: skip
    for manifest in manifests:
        kubectl("apply", "-f", "-", input=json.dumps(manifest))
    try:
        # The policy is enforced once the apiserver has loaded it: a probe filter of the refused name is denied.
        probe = {"apiVersion": "trafficmirror.io/v1alpha1", "kind": "MirrorFilter",
                 "metadata": {"name": refused, "namespace": cluster.namespace},
                 "spec": {"ingressRules": [{"ruleNumber": 1}]}}  # fmt: skip
        deadline = time.monotonic() + TIMEOUT
        while kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False).returncode == 0:
            assert time.monotonic() < deadline, "the admission policy was never enforced"
            time.sleep(0.5)
        load.add_pod("web-a", node_a)
        load.add_pod("web-b", node_b)
        _setup(cluster, ec2, world)

        def source(o: dict[str, Any], eni: str) -> dict[str, Any]:
            return next((s for s in o.get("status", {}).get("sources") or [] if s["networkInterfaceId"] == eni), {})

        def follows_child(o: dict[str, Any]) -> bool:
            child = cluster.get("mirrorsession", child_name("web", eni_b)) or {}
            session_id = child.get("status", {}).get("trafficMirrorSessionId")
            return (
                session_id is not None
                and source(o, eni_b).get("state") == "Mirroring"
                and source(o, eni_b).get("trafficMirrorSessionId") == session_id
                and load.aws_sessions({eni_b}).get(eni_b, {}).get("TrafficMirrorSessionId") == session_id
            )

        parent = cluster.wait_for("mirrorsession", "web", follows_child, timeout=180)
        assert source(parent, eni_a).get("state") == "Pending" and eni_a not in load.aws_sessions({eni_a})
        first_id = source(parent, eni_b)["trafficMirrorSessionId"]
        # The sibling's AWS session deleted behind the operator's back: re-created, and the parent says so.
        ec2.delete_traffic_mirror_session(TrafficMirrorSessionId=first_id)
        parent = cluster.wait_for(
            "mirrorsession", "web",
            lambda o: follows_child(o) and source(o, eni_b)["trafficMirrorSessionId"] != first_id,
            timeout=3 * RESYNC_SECONDS + 30,
        )  # fmt: skip
        assert source(parent, eni_a).get("state") == "Pending"
    finally:
        for manifest in reversed(manifests):
            kubectl("delete", manifest["kind"], policy, "--ignore-not-found")
    # Admitted again: the refused source converges too.
    cluster.wait_for(
        "mirrorsession", "web",
        lambda o: {s["networkInterfaceId"]: s["state"] for s in o.get("status", {}).get("sources") or []}
        == {eni_a: "Mirroring", eni_b: "Mirroring"},
        timeout=TIMEOUT,
    )  # fmt: skip
    cluster.delete("mirrorsession", "web")
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and (load.aws_sessions({eni_a, eni_b}) or _children(cluster)):
        time.sleep(0.5)
    assert load.aws_sessions({eni_a, eni_b}) == {} and _children(cluster) == []
