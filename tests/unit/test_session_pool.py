"""A MirrorSession with targetSelector against the in-memory AWS (which applies the sources-per-target
quota of each target's instance type): the choice reaches AWS and status, a full target moves the
source to the next one instead of failing, and a settled session makes no call that changes AWS."""

from __future__ import annotations

from tests.unit.fake_aws import FakeAws, FakeRegion
from tests.unit.reconcile_harness import Obj, context
from trafficmirror.aws.ec2 import SessionParams
from trafficmirror.reconcile.kinds import FILTER, SESSION, TARGET
from trafficmirror.reconcile.seam import ClusterFacts, Dependency

AZ_A, AZ_B = "us-east-1a", "us-east-1b"
POOL = {"trafficmirror.io/pool": "capture"}


class PoolWorld:
    def __init__(self) -> None:
        self.aws = FakeAws()
        self.region: FakeRegion = self.aws.region(None)
        self.ctx = context(self.aws)
        self.targets: list[Obj] = []
        self.filter = Obj(FILTER, {"ingressRules": [{"ruleNumber": 1}]}, name="all", uid="uid-filter")
        self.filter.reconcile(self.ctx)

    def add_target(self, name: str, zone: str, instance_type: str = "c5.large") -> Obj:
        _, eni = self.region.add_instance(instance_type, zone)
        target = Obj(TARGET, {"networkInterfaceId": eni}, name=name, uid=f"uid-{name}")
        assert target.reconcile(self.ctx).phase.value == "Ready"
        assert target.status["availabilityZone"] == zone
        self.targets.append(target)
        return target

    def pool(self) -> tuple[Dependency, ...]:
        return tuple(
            Dependency(
                t.name,
                t.status.get("phase"),
                t.status.get("trafficMirrorTargetId"),
                network_interface_id=t.status.get("networkInterfaceId"),
                endpoint_type=t.status.get("endpointType"),
                instance_type=t.status.get("instanceType"),
                availability_zone=t.status.get("availabilityZone"),
                labels=tuple(POOL.items()),
            )
            for t in self.targets
        )

    def session(self, name: str, zone: str) -> Obj:
        _, eni = self.region.add_instance("t3.small", zone)
        return Obj(
            SESSION,
            {
                "source": {"networkInterfaceId": eni},
                "targetSelector": {"matchLabels": POOL},
                "filterRef": {"name": "all"},
            },
            name=name,
            uid=f"uid-{name}",
        )

    def reconcile(self, session: Obj) -> str:
        session.facts = ClusterFacts(
            target=None,
            mirror_filter=Dependency("all", "Ready", self.filter.status["trafficMirrorFilterId"]),
            pool=self.pool(),
        )
        return session.reconcile(self.ctx).phase.value

    def fill(self, target: Obj, sources: int) -> None:
        """Sessions AWS holds that no MirrorSession of this cluster shows (another tool, another cluster)."""
        filter_id = self.filter.status["trafficMirrorFilterId"]
        for _ in range(sources):
            _, eni = self.region.add_instance("t3.small")
            params = SessionParams(eni, target.status["trafficMirrorTargetId"], filter_id, 1, None, None, "other")
            self.region.create_session(params, client_token=f"other-{eni}", tags={})


def test_a_pooled_session_goes_to_a_target_in_its_own_zone_and_says_why() -> None:
    world = PoolWorld()
    world.add_target("capture-b", AZ_B)
    near = world.add_target("capture-a", AZ_A)
    session = world.session("web", AZ_A)
    assert world.reconcile(session) == "Ready"
    assert session.status["targetName"] == "capture-a"
    assert session.status["trafficMirrorTargetId"] == near.status["trafficMirrorTargetId"]
    [aws_session] = world.region.sessions.values()
    assert aws_session.target_id == near.status["trafficMirrorTargetId"]
    chosen = session.condition("TargetChosen")
    assert chosen is not None and chosen["status"] == "True" and chosen["reason"] == "SameZone"
    assert "1 of 10 sources" in chosen["message"]
    # Settled: the next pass changes nothing in AWS.
    before = world.region.mutating_calls()
    assert world.reconcile(session) == "Ready"
    assert world.region.mutating_calls() == before


def test_a_target_aws_calls_full_moves_the_source_to_the_next_instead_of_failing() -> None:
    world = PoolWorld()
    full = world.add_target("capture-a", AZ_A)
    world.add_target("capture-b", AZ_B)
    world.fill(full, 10)  # AWS knows 10 sources on it; the cluster does not
    session = world.session("web", AZ_A)
    creates = world.region.calls["create_session"]
    assert world.reconcile(session) == "Ready"
    assert session.status["targetName"] == "capture-b"
    chosen = session.condition("TargetChosen")
    assert chosen is not None and chosen["reason"] == "OtherZone"
    # One refused create on the full target, then the session on the next: no third attempt.
    assert world.region.calls["create_session"] - creates == 2
    sessions_on_full = [
        s for s in world.region.sessions.values() if s.target_id == full.status["trafficMirrorTargetId"]
    ]
    assert len(sessions_on_full) == 10


def test_no_target_with_room_is_pending_and_names_the_targets_then_recovers() -> None:
    world = PoolWorld()
    only = world.add_target("capture-a", AZ_A)
    world.fill(only, 10)
    session = world.session("web", AZ_A)
    assert world.reconcile(session) == "Pending"
    assert session.reason == "WaitingForTarget"
    assert [e.reason for o in session.outcomes for e in o.events if e.reason.startswith("Target")] == ["TargetFull"]
    chosen = session.condition("TargetChosen")
    assert chosen is not None and chosen["status"] == "False" and chosen["reason"] == "NoTargetWithRoom"
    assert not [s for s in world.region.sessions.values() if s.description != "other"]
    # An NLB target joins the pool: the source spills onto it (the full target stays skipped a while).
    nlb = Obj(
        TARGET,
        {"networkLoadBalancerArn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/c/0123abcd"},
        name="capture-nlb",
        uid="uid-nlb",
    )
    assert nlb.reconcile(world.ctx).phase.value == "Ready"
    world.targets.append(nlb)
    assert world.reconcile(session) == "Ready"
    assert session.status["targetName"] == "capture-nlb"
    assert session.condition("TargetChosen")["reason"] == "LoadBalancerOverflow"  # type: ignore[index]
    assert session.status["packetLength"] == 8500


def test_a_deleted_target_moves_its_sources_with_one_modify_each() -> None:
    world = PoolWorld()
    first = world.add_target("capture-a", AZ_A)
    sessions = [world.session(f"web-{i}", AZ_A) for i in range(3)]
    for session in sessions:
        assert world.reconcile(session) == "Ready"
    assert {s.status["targetName"] for s in sessions} == {"capture-a"}
    second = world.add_target("capture-a2", AZ_A)
    first.status["phase"] = "Deleting"  # what the cluster shows of a target being deleted
    modifies = world.region.calls["modify_session"]
    for session in sessions:
        assert world.reconcile(session) == "Ready"
        assert session.status["targetName"] == "capture-a2"
    assert world.region.calls["modify_session"] - modifies == 3
    assert {s.target_id for s in world.region.sessions.values()} == {second.status["trafficMirrorTargetId"]}
    assert first.delete(world.ctx) is None  # nothing uses it in AWS any more: deleted
    assert first.status["trafficMirrorTargetId"] not in world.region.targets


def test_a_session_with_a_target_ref_keeps_its_one_target_and_no_target_chosen_condition() -> None:
    world = PoolWorld()
    target = world.add_target("capture-a", AZ_A)
    _, eni = world.region.add_instance("t3.small", AZ_B)
    session = Obj(
        SESSION,
        {"source": {"networkInterfaceId": eni}, "targetRef": {"name": "capture-a"}, "filterRef": {"name": "all"}},
        name="web",
        uid="uid-web",
    )
    session.facts = ClusterFacts(
        target=world.pool()[0],
        mirror_filter=Dependency("all", "Ready", world.filter.status["trafficMirrorFilterId"]),
    )
    assert session.reconcile(world.ctx).phase.value == "Ready"
    assert session.status["targetName"] == "capture-a"
    assert session.status["trafficMirrorTargetId"] == target.status["trafficMirrorTargetId"]
    assert session.condition("TargetChosen") is None


def test_a_target_aws_refuses_for_its_instance_type_moves_the_source_on() -> None:
    world = PoolWorld()
    world.add_target("capture-t2", AZ_A, "t2.micro")  # AWS accepts the target, then refuses sessions to it
    world.add_target("capture-b", AZ_B)
    session = world.session("web", AZ_A)
    assert world.reconcile(session) == "Ready"
    assert session.status["targetName"] == "capture-b"
    assert "rejectedNetworkInterfaceId" not in session.status
    assert [e.reason for o in session.outcomes for e in o.events if e.reason.startswith("Target")] == ["TargetRefused"]
