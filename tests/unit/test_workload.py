"""Selector sessions' decisions (reconcile.workload): which ENIs, which children, which pods skipped
and why, narrowed filter rules; tables, and a seeded property test over random pod and node churn.

AWS is an in-memory stand-in of the three lookups a selector session makes (pure unit tables)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trafficmirror.api import MirrorFilterSpec, MirrorSessionSpec
from trafficmirror.aws.ec2 import AwsSession, NetworkInterface
from trafficmirror.reconcile.common import OWNER_TAG
from trafficmirror.reconcile.workload import (
    RULES_PER_FILTER,
    ChildFact,
    NodeFact,
    Parent,
    PodFact,
    child_name,
    matches,
    narrow_rules,
    plan,
)

ACCEPT_ALL = MirrorFilterSpec.model_validate(
    {
        "ingressRules": [{"ruleNumber": 10, "action": "accept"}],
        "egressRules": [{"ruleNumber": 10, "action": "accept"}],
    }
)


@dataclass
class FakeWorkloadAws:
    """Instances with ENIs holding addresses; sessions of other owners per ENI; every call counted."""

    interfaces: dict[str, NetworkInterface] = field(default_factory=dict)
    foreign_sessions: dict[str, int] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def add_instance(self, instance_id: str, enis: int = 1, interface_type: str = "interface") -> list[str]:
        ids = []
        for index in range(enis):
            eni = f"eni-{abs(hash((instance_id, index))) % 16**12:012x}"
            base = f"10.{len(self.interfaces) // 200}.{len(self.interfaces) % 200}"
            self.interfaces[eni] = NetworkInterface(
                eni, instance_id, f"{base}.1", interface_type, "us-east-1a", (f"{base}.1",), index
            )
            ids.append(eni)
        return ids

    def add_address(self, eni: str, address: str) -> None:
        interface = self.interfaces[eni]
        self.interfaces[eni] = replace(interface, private_ip_addresses=(*interface.private_ip_addresses, address))

    def remove_address(self, address: str) -> None:
        for eni, interface in self.interfaces.items():
            kept = tuple(a for a in interface.private_ip_addresses if a != address)
            self.interfaces[eni] = replace(interface, private_ip_addresses=kept)

    def interfaces_by_address(
        self, addresses: list[str], refresh: frozenset[str] = frozenset()
    ) -> dict[str, NetworkInterface]:
        self.calls.append("DescribeNetworkInterfaces")
        return {a: i for i in self.interfaces.values() for a in i.private_ip_addresses if a in addresses}

    def instance_network_interfaces(self, instance_id: str) -> tuple[NetworkInterface, ...]:
        self.calls.append("DescribeNetworkInterfaces")
        found = [i for i in self.interfaces.values() if i.instance_id == instance_id]
        return tuple(sorted(found, key=lambda i: i.device_index or 0))

    def sessions_on(self, network_interface_ids: list[str]) -> dict[str, list[AwsSession]]:
        self.calls.append("DescribeTrafficMirrorSessions")
        return {
            eni: [
                AwsSession(f"tms-{eni[4:]}{n}", eni, "tmt-1", "tmf-1", n + 1, n, None, "", {OWNER_TAG: "someone"})
                for n in range(self.foreign_sessions.get(eni, 0))
            ]
            for eni in network_interface_ids
        }


def parent(source: dict[str, object], **spec: object) -> Parent:
    body = {"source": source, "targetRef": {"name": "capture"}, "filterRef": {"name": "accept-all"}, **spec}
    return Parent("shop", "web", "uid-web", MirrorSessionSpec.model_validate(body))


def node(name: str, instance: str, **labels: str) -> NodeFact:
    return NodeFact(name, tuple(sorted(labels.items())), f"aws:///us-east-1a/{instance}")


def pod(name: str, ip: str | None, node_name: str, namespace: str = "shop", **extra: object) -> PodFact:
    labels = tuple(sorted({"app": "web", **extra.pop("labels", {})}.items()))  # type: ignore[dict-item]
    return PodFact(namespace, name, labels, ip, node_name, phase="Running", **extra)  # type: ignore[arg-type]


def ready_children(decided_children: dict[str, dict[str, object]]) -> dict[str, ChildFact]:
    return {
        name: ChildFact(name, f"uid-{name}", spec["source"]["networkInterfaceId"], spec["filterRef"]["name"], "Ready")  # type: ignore[index]
        for name, spec in decided_children.items()
    }


def test_three_pods_on_two_nodes_make_two_children_with_the_pods_narrowed_rules() -> None:
    aws = FakeWorkloadAws()
    (eni_a,) = aws.add_instance("i-0000000000000000a")
    (eni_b,) = aws.add_instance("i-0000000000000000b")
    for eni, address in ((eni_a, "10.1.0.11"), (eni_a, "10.1.0.12"), (eni_b, "10.1.0.21")):
        aws.add_address(eni, address)
    nodes = {"a": node("a", "i-0000000000000000a"), "b": node("b", "i-0000000000000000b")}
    pods = [pod("web-1", "10.1.0.11", "a"), pod("web-2", "10.1.0.12", "a"), pod("web-3", "10.1.0.21", "b")]
    pods.append(pod("db-1", "10.1.0.13", "a", labels={"app": "db"}))
    decided = plan(
        parent({"podSelector": {"matchLabels": {"app": "web"}}}),
        pods=pods, nodes=nodes, namespace_labels={}, children={}, parent_filter=ACCEPT_ALL, aws=aws,
    )  # fmt: skip
    assert {spec["source"]["networkInterfaceId"] for spec in decided.children.values()} == {eni_a, eni_b}
    name_a = child_name("web", eni_a)
    assert decided.children[name_a]["filterRef"] == {"name": name_a}
    ingress = [r["destinationCidrBlock"] for r in decided.filters[name_a]["ingressRules"]]
    egress = [r["sourceCidrBlock"] for r in decided.filters[name_a]["egressRules"]]
    assert ingress == egress == ["10.1.0.11/32", "10.1.0.12/32"]
    assert decided.status["phase"] == "Pending"  # no child is Ready yet
    assert [c["status"] for c in decided.status["conditions"] if c["type"] == "SourcesFound"] == ["True"]
    source_a = next(s for s in decided.status["sources"] if s["networkInterfaceId"] == eni_a)
    assert [p["name"] for p in source_a["pods"]] == ["web-1", "web-2"] and source_a["narrowed"] is True


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ({"annotated": True}, "BranchNetworkInterface"),
        ({"fargate": True}, "Fargate"),
        ({"ip": None}, "NoAddress"),
        ({"ip": "10.9.9.9"}, "AddressNotFound"),
        ({"branch_eni": True}, "BranchNetworkInterface"),
    ],
)
def test_a_pod_aws_cannot_mirror_is_skipped_with_its_reason(case: dict[str, object], reason: str) -> None:
    aws = FakeWorkloadAws()
    (eni,) = aws.add_instance("i-0000000000000000a", interface_type="branch" if case.get("branch_eni") else "interface")
    aws.add_address(eni, "10.1.0.11")
    labels = {"eks.amazonaws.com/compute-type": "fargate"} if case.get("fargate") else {}
    nodes = {"a": node("a", "i-0000000000000000a", **labels)}
    ip = case.get("ip", "10.1.0.11")
    the_pod = pod("web-1", ip, "a", branch_interface=bool(case.get("annotated")))  # type: ignore[arg-type]
    decided = plan(
        parent({"podSelector": {"matchLabels": {"app": "web"}}}),
        pods=[the_pod], nodes=nodes, namespace_labels={}, children={}, parent_filter=ACCEPT_ALL, aws=aws,
    )  # fmt: skip
    assert decided.children == {}
    assert [(s["name"], s["reason"]) for s in decided.status["skippedPods"]] == [("web-1", reason)]
    assert decided.status["phase"] == "Ready"
    found = next(c for c in decided.status["conditions"] if c["type"] == "SourcesFound")
    assert (found["status"], found["reason"]) == ("False", "NoMatch")


def test_a_host_network_pod_is_mirrored_on_its_nodes_primary_eni() -> None:
    aws = FakeWorkloadAws()
    primary, _second = aws.add_instance("i-0000000000000000a", enis=2)
    nodes = {"a": node("a", "i-0000000000000000a")}
    decided = plan(
        parent({"podSelector": {}}),
        pods=[pod("agent", "10.0.0.1", "a", host_network=True)],
        nodes=nodes, namespace_labels={}, children={}, parent_filter=ACCEPT_ALL, aws=aws,
    )  # fmt: skip
    assert [s["source"]["networkInterfaceId"] for s in decided.children.values()] == [primary]
    assert decided.status["sources"][0]["hostNetwork"] is True


def test_an_eni_with_three_sessions_of_others_is_a_conflict_and_gets_no_child() -> None:
    aws = FakeWorkloadAws()
    (eni,) = aws.add_instance("i-0000000000000000a")
    aws.add_address(eni, "10.1.0.11")
    aws.foreign_sessions[eni] = 3
    decided = plan(
        parent({"podSelector": {"matchLabels": {"app": "web"}}}),
        pods=[pod("web-1", "10.1.0.11", "a")], nodes={"a": node("a", "i-0000000000000000a")},
        namespace_labels={}, children={}, parent_filter=ACCEPT_ALL, aws=aws,
    )  # fmt: skip
    assert decided.children == {}
    (source,) = decided.status["sources"]
    assert source["state"] == "Conflict" and "3 traffic mirror sessions" in source["message"]


def test_too_many_pods_for_ten_rules_mirror_the_eni_through_the_parents_filter() -> None:
    aws = FakeWorkloadAws()
    (eni,) = aws.add_instance("i-0000000000000000a")
    pods = []
    for n in range(6):  # an accept-all rule each way: 12 rules
        aws.add_address(eni, f"10.1.0.{100 + n}")
        pods.append(pod(f"web-{n}", f"10.1.0.{100 + n}", "a"))
    decided = plan(
        parent({"podSelector": {"matchLabels": {"app": "web"}}}),
        pods=pods, nodes={"a": node("a", "i-0000000000000000a")}, namespace_labels={}, children={},
        parent_filter=ACCEPT_ALL, aws=aws,
    )  # fmt: skip
    (spec,) = decided.children.values()
    assert spec["filterRef"] == {"name": "accept-all"} and decided.filters == {}
    (source,) = decided.status["sources"]
    assert source["narrowed"] is False and "exceed AWS's 10 rules per filter" in source["message"]


def test_node_selector_takes_the_primary_or_all_enis_and_leaves_fargate_out() -> None:
    aws = FakeWorkloadAws()
    enis_a = aws.add_instance("i-0000000000000000a", enis=2)
    aws.add_instance("i-0000000000000000f")
    nodes = {
        "a": node("a", "i-0000000000000000a", role="web"),
        "f": node("f", "i-0000000000000000f", role="web", **{"eks.amazonaws.com/compute-type": "fargate"}),
    }
    for interfaces, expected in ((None, enis_a[:1]), ("all", enis_a)):
        source: dict[str, object] = {"nodeSelector": {"matchLabels": {"role": "web"}}}
        if interfaces:
            source["interfaces"] = interfaces
        decided = plan(
            parent(source), pods=[], nodes=nodes, namespace_labels={}, children={}, parent_filter=ACCEPT_ALL, aws=aws
        )
        assert sorted(s["source"]["networkInterfaceId"] for s in decided.children.values()) == sorted(expected)


def test_at_steady_state_a_pass_asks_aws_nothing_about_sessions() -> None:
    aws = FakeWorkloadAws()
    (eni,) = aws.add_instance("i-0000000000000000a")
    aws.add_address(eni, "10.1.0.11")
    args = {
        "pods": [pod("web-1", "10.1.0.11", "a")],
        "nodes": {"a": node("a", "i-0000000000000000a")},
        "namespace_labels": {},
        "parent_filter": ACCEPT_ALL,
        "aws": aws,
    }
    first = plan(parent({"podSelector": {}}), children={}, **args)  # type: ignore[arg-type]
    aws.calls.clear()
    plan(parent({"podSelector": {}}), children=ready_children(first.children), **args)  # type: ignore[arg-type]
    assert "DescribeTrafficMirrorSessions" not in aws.calls


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {}, True),
        ({"matchLabels": {"app": "web"}}, {"app": "web", "x": "y"}, True),
        ({"matchLabels": {"app": "web"}}, {"app": "db"}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}, {"tier": "b"}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, {"tier": "a"}, False),
        ({"matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]}, {"canary": ""}, False),
        ({"matchExpressions": [{"key": "canary", "operator": "Exists"}]}, {"canary": ""}, True),
    ],
)
def test_label_selectors_follow_kubernetes(selector: dict[str, object], labels: dict[str, str], expected: bool) -> None:
    from trafficmirror.api.session import LabelSelector

    assert matches(LabelSelector.model_validate(selector), labels) is expected


def test_narrowing_keeps_rule_order_and_drops_rules_that_cannot_match_the_pod() -> None:
    spec = MirrorFilterSpec.model_validate(
        {
            "ingressRules": [
                {
                    "ruleNumber": 5,
                    "action": "reject",
                    "protocol": 6,
                    "destinationPortRange": {"fromPort": 22, "toPort": 22},
                },
                {"ruleNumber": 9, "destinationCidrBlock": "10.2.0.0/16"},
                {"ruleNumber": 7, "action": "accept"},
            ]
        }
    )
    narrowed = narrow_rules(spec, ["10.1.0.11"])
    assert narrowed is not None
    ordered = sorted(narrowed["ingress"], key=lambda r: r.rule_number)
    assert [(r.action, r.destination_cidr_block) for r in ordered] == [
        ("reject", "10.1.0.11/32"),
        ("accept", "10.1.0.11/32"),
    ]
    assert narrowed["egress"] == []
    # Another pod adds its own rules and leaves the first pod's numbers as they were.
    more = narrow_rules(spec, ["10.1.0.11", "10.1.0.7"])
    assert more is not None
    numbers = {r.rule_number for r in narrowed["ingress"]}
    assert numbers < {r.rule_number for r in more["ingress"]} and len(more["ingress"]) == 4
    by_number = {r.rule_number: r for r in more["ingress"]}
    assert [by_number[n].action for n in sorted(by_number)] == ["reject", "reject", "accept", "accept"]


# --- property: random pod and node churn ---------------------------------------------------------------
@dataclass
class World:
    rng: random.Random
    aws: FakeWorkloadAws = field(default_factory=FakeWorkloadAws)
    nodes: dict[str, NodeFact] = field(default_factory=dict)
    node_enis: dict[str, list[str]] = field(default_factory=dict)
    pods: dict[str, PodFact] = field(default_factory=dict)
    serial: int = 0

    def add_node(self) -> None:
        self.serial += 1
        name, instance = f"n{self.serial}", f"i-{self.serial:017x}"
        self.node_enis[name] = self.aws.add_instance(instance, enis=2)
        self.nodes[name] = node(name, instance)
        if self.rng.random() < 0.3:
            self.aws.foreign_sessions[self.node_enis[name][0]] = self.rng.choice([1, 2, 3])

    def add_pod(self) -> None:
        if not self.nodes:
            return
        self.serial += 1
        node_name = self.rng.choice(sorted(self.nodes))
        address = f"10.200.{self.serial // 250}.{self.serial % 250 + 1}"
        eni = self.rng.choice(self.node_enis[node_name])
        self.aws.add_address(eni, address)
        roll = self.rng.random()
        self.pods[f"p{self.serial}"] = pod(
            f"p{self.serial}",
            None if roll < 0.05 else address,
            node_name,
            labels={"app": "web" if self.rng.random() < 0.8 else "db"},
            host_network=0.05 <= roll < 0.1,
            branch_interface=0.1 <= roll < 0.15,
        )

    def delete_pod(self) -> None:
        if self.pods:
            gone = self.pods.pop(self.rng.choice(sorted(self.pods)))
            if gone.ip:
                self.aws.remove_address(gone.ip)

    def move_pod(self) -> None:
        if self.pods:
            name = self.rng.choice(sorted(self.pods))
            self.delete_pod_named(name)
            self.add_pod()

    def delete_pod_named(self, name: str) -> None:
        gone = self.pods.pop(name)
        if gone.ip:
            self.aws.remove_address(gone.ip)

    def delete_node(self) -> None:
        if self.nodes:
            name = self.rng.choice(sorted(self.nodes))
            del self.nodes[name]
            for pod_name in [p.name for p in self.pods.values() if p.node_name == name]:
                self.delete_pod_named(pod_name)
            for eni in self.node_enis.pop(name):
                del self.aws.interfaces[eni]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(5, 40))
def test_children_follow_random_pod_and_node_churn(seed: int, steps: int) -> None:
    world = World(random.Random(seed))
    for _ in range(2):
        world.add_node()
    the_parent = parent({"podSelector": {"matchLabels": {"app": "web"}}})
    children: dict[str, ChildFact] = {}
    for _ in range(steps):
        getattr(world, world.rng.choice(["add_pod", "add_pod", "delete_pod", "move_pod", "add_node", "delete_node"]))()
        decided = plan(
            the_parent, pods=list(world.pods.values()), nodes=world.nodes, namespace_labels={}, children=children,
            parent_filter=ACCEPT_ALL, aws=world.aws,
        )  # fmt: skip
        children = {
            name: children.get(name) or fact for name, fact in ready_children(decided.children).items()
        }  # the handlers apply the plan: children created, the others deleted

        selected = [p for p in world.pods.values() if dict(p.labels)["app"] == "web"]
        expected: dict[str, set[str]] = {}
        for p in selected:
            if p.branch_interface or not p.ip:
                continue
            instance = world.nodes[p.node_name or ""].instance_id
            eni = (
                world.aws.instance_network_interfaces(instance or "")[0].network_interface_id
                if p.host_network
                else next(e for e, i in world.aws.interfaces.items() if p.ip in i.private_ip_addresses)
            )
            expected.setdefault(eni, set()).add(p.name)
        held = {e for e in expected if world.aws.foreign_sessions.get(e, 0) < 3}
        # Invariant: one child per mirrorable ENI, none for a full one, nothing else.
        assert {spec["source"]["networkInterfaceId"] for spec in decided.children.values()} == held
        for eni in held:
            assert world.aws.foreign_sessions.get(eni, 0) + 1 <= 3
        # Every selected pod is either on exactly one source or skipped, with a reason.
        listed = [p["name"] for s in decided.status["sources"] for p in s["pods"]]
        skipped = [s["name"] for s in decided.status["skippedPods"]]
        assert sorted(listed + skipped) == sorted(p.name for p in selected)
        # Narrowed rules stay within AWS's budget and cover exactly the ENI's pods.
        for name, spec in decided.filters.items():
            eni = decided.children[name]["source"]["networkInterfaceId"]
            pod_ips = {f"{world.pods[n].ip}/32" for n in expected[eni]}
            for rules, side in (
                (spec["ingressRules"], "destinationCidrBlock"),
                (spec["egressRules"], "sourceCidrBlock"),
            ):
                assert {r[side] for r in rules} == pod_ips
            assert len(spec["ingressRules"]) + len(spec["egressRules"]) <= RULES_PER_FILTER
        for source in decided.status["sources"]:
            # One accept-all rule per direction: narrowed exactly when the ENI's pods fit the budget.
            if source["state"] != "Conflict":
                assert source["narrowed"] is (2 * len({p["ip"] for p in source["pods"]}) <= RULES_PER_FILTER)


def test_a_completed_session_has_no_children_and_leaves_its_phase_alone() -> None:
    aws = FakeWorkloadAws()
    (eni,) = aws.add_instance("i-0000000000000000a")
    aws.add_address(eni, "10.1.0.11")
    done = replace(parent({"podSelector": {}}), phase="Completed")
    decided = plan(
        done, pods=[pod("web-1", "10.1.0.11", "a")], nodes={"a": node("a", "i-0000000000000000a")},
        namespace_labels={}, children={}, parent_filter=ACCEPT_ALL, aws=aws,
    )  # fmt: skip
    assert decided.children == {} and decided.status == {"sources": [], "skippedPods": []}


CIDRS = ("0.0.0.0/0", "10.0.0.0/8", "10.200.0.0/16", "172.16.0.0/12", "192.168.1.0/24", "::/0")


@st.composite
def mirror_filters(draw: st.DrawFn) -> MirrorFilterSpec:
    """Any filter a user may write: rules in either direction whose CIDRs may or may not hold the pods."""

    def rules() -> st.SearchStrategy[list[dict[str, object]]]:
        def rule(number: int) -> st.SearchStrategy[dict[str, object]]:
            return st.sampled_from(CIDRS).flatmap(
                lambda near: st.fixed_dictionaries(
                    {
                        "ruleNumber": st.just(number),
                        "action": st.sampled_from(["accept", "reject"]),
                        "sourceCidrBlock": st.just(near),
                        "destinationCidrBlock": st.sampled_from([c for c in CIDRS if (":" in c) == (":" in near)]),
                    }
                )
            )

        return st.lists(st.integers(1, 500), max_size=5, unique=True).flatmap(
            lambda numbers: st.tuples(*[rule(n) for n in numbers]).map(list)
        )

    body = {"ingressRules": draw(rules()), "egressRules": draw(rules())}
    if draw(st.booleans()):
        body["networkServices"] = ["amazon-dns"]
    if not (body["ingressRules"] or body["egressRules"] or body.get("networkServices")):
        body["ingressRules"] = [{"ruleNumber": 1, "sourceCidrBlock": draw(st.sampled_from(CIDRS[:5]))}]
    return MirrorFilterSpec.model_validate(body)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(mirror_filter=mirror_filters(), pod_count=st.integers(1, 12))
def test_every_generated_filter_is_one_the_apiserver_admits(mirror_filter: MirrorFilterSpec, pod_count: int) -> None:
    """Whatever the parent's filter, the filter generated for a child is valid (admission refuses a filter with no
    rule: a child whose filter cannot be created never converges, and held up its siblings' status once), and it
    mirrors nothing but the pods' addresses: a parent filter none of whose rules can match the pods yields a
    filter that mirrors nothing."""
    aws = FakeWorkloadAws()
    (eni,) = aws.add_instance("i-0000000000000000a")
    pods = []
    for n in range(pod_count):
        address = f"10.200.0.{n + 11}"
        aws.add_address(eni, address)
        pods.append(pod(f"web-{n}", address, "a"))
    decided = plan(
        parent({"podSelector": {}}), pods=pods, nodes={"a": node("a", "i-0000000000000000a")}, namespace_labels={},
        children={}, parent_filter=mirror_filter, aws=aws,
    )  # fmt: skip
    (source,) = decided.status["sources"]
    addresses = {f"{p.ip}/32" for p in pods}
    for spec in decided.filters.values():
        generated = MirrorFilterSpec.model_validate(spec)  # the CRD's CEL rules are generated from this model
        sides = ((generated.ingress_rules, "destination_cidr_block"), (generated.egress_rules, "source_cidr_block"))
        for rules, side in sides:
            for r in rules or []:
                assert getattr(r, side) in addresses or (r.action == "reject" and getattr(r, side) == "0.0.0.0/0")
        narrowed = narrow_rules(mirror_filter, [p.ip for p in pods if p.ip])
        if narrowed is not None and not (narrowed["ingress"] or narrowed["egress"]):
            assert "nothing of theirs is mirrored" in source["message"]
    assert source["narrowed"] is bool(decided.filters)
