"""Each reconcile_* entry point against the in-memory AWS: tables named after the user's story.

The in-memory AWS (tests/unit/fake_aws.py) counts every call, so a table can say "and nothing was
changed in AWS" as plainly as "it is Ready".
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.fake_aws import FakeAws, FakeRegion, error
from tests.unit.reconcile_harness import Obj, context
from trafficmirror.aws.errors import ErrorClass
from trafficmirror.reconcile.common import OWNER_TAG, OWNER_UID_TAG, RECHECKED_AT_RESYNC, Outcome
from trafficmirror.reconcile.context import RetryLater, outcome_for_aws_error
from trafficmirror.reconcile.kinds import FILTER, SESSION, TARGET
from trafficmirror.reconcile.observed import Observed, observe
from trafficmirror.reconcile.seam import ClusterFacts, Dependency, parse_request

NLB = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/capture/0123456789abcdef"
RULE = {"ruleNumber": 10, "protocol": 6, "destinationPortRange": {"fromPort": 443, "toPort": 443}}


class World:
    """One region with a web instance (source) and a capture instance (target), and the three objects."""

    def __init__(self, region: str | None = None, capture_type: str = "c5.large") -> None:
        self.aws = FakeAws()
        self.region_name = region
        self.region: FakeRegion = self.aws.region(region)
        self.web_instance, self.web_eni = self.region.add_instance("t3.small")
        self.capture_instance, self.capture_eni = self.region.add_instance(capture_type)
        extra = {"region": region} if region else {}
        self.target = Obj(TARGET, {"networkInterfaceId": self.capture_eni, **extra}, name="capture", uid="uid-target")
        self.filter = Obj(FILTER, {"ingressRules": [RULE], **extra}, name="https", uid="uid-filter")
        self.session = Obj(
            SESSION,
            {
                "source": {"networkInterfaceId": self.web_eni},
                "targetRef": {"name": "capture"},
                "filterRef": {"name": "https"},
                **extra,
            },
            name="web",
            uid="uid-session",
        )
        self.ctx = context(self.aws)

    def dependencies(self) -> ClusterFacts:
        def of(obj: Obj, id_field: str) -> Dependency:
            return Dependency(
                obj.name,
                obj.status.get("phase"),
                obj.status.get(id_field),
                network_interface_id=obj.status.get("networkInterfaceId"),
                endpoint_type=obj.status.get("endpointType"),
            )

        return ClusterFacts(of(self.target, "trafficMirrorTargetId"), of(self.filter, "trafficMirrorFilterId"))

    def converge(self) -> None:
        for obj in (self.target, self.filter):
            obj.reconcile(self.ctx)
        self.session.facts = self.dependencies()
        self.session.reconcile(self.ctx)

    def observed(self, obj: Obj) -> Observed[Any] | None:
        found = {
            "MirrorTarget": self.region.targets,
            "MirrorFilter": self.region.filters,
            "MirrorSession": self.region.sessions,
        }[obj.reconciler.kind].get(obj.reconciler.observed_id(obj.request().status) or "")
        return Observed(found) if found is not None else None


def test_target_filter_and_session_become_ready_and_a_second_pass_changes_nothing() -> None:
    world = World()
    world.converge()
    assert [o.status["phase"] for o in (world.target, world.filter, world.session)] == ["Ready"] * 3
    before = world.aws.mutating_calls()
    world.converge()
    assert world.aws.mutating_calls() == before
    for obj in (world.target, world.filter, world.session):
        assert obj.reconciler.in_sync(obj.request(), world.observed(obj)), obj.reconciler.kind


# --- defect class: a recorded resource deleted outside --------------------------------------------


@pytest.mark.parametrize("kind", ["MirrorTarget", "MirrorFilter", "MirrorSession"])
def test_any_recorded_resource_deleted_outside_is_recreated_with_a_new_token(kind: str) -> None:
    """EC2 answers a used ClientToken with what it made, even deleted: a new token, or the status
    would record a dead ID forever (found with targets; the class is every kind)."""
    world = World()
    world.converge()
    obj = {"MirrorTarget": world.target, "MirrorFilter": world.filter, "MirrorSession": world.session}[kind]
    store: dict[str, Any] = {
        "MirrorTarget": world.region.targets,
        "MirrorFilter": world.region.filters,
        "MirrorSession": world.region.sessions,
    }[kind]
    if kind != "MirrorSession":  # AWS deletes a target or filter only after its sessions
        world.region.sessions.clear()
    old_id = obj.reconciler.observed_id(obj.request().status)
    del store[old_id]
    assert not obj.reconciler.in_sync(obj.request(), world.observed(obj))

    obj.reconcile(world.ctx)
    new_id = obj.reconciler.observed_id(obj.request().status)
    assert obj.status["phase"] == "Ready" and new_id != old_id and new_id in store
    assert obj.reconciler.in_sync(obj.request(), world.observed(obj))
    assert any(e.reason == "Recreating" for o in obj.outcomes for e in o.events)
    # Deleted a second time: again a new one, not the first replacement back.
    del store[new_id]
    obj.reconcile(world.ctx)
    assert obj.reconciler.observed_id(obj.request().status) not in (old_id, new_id)


# --- defect class: every call in the object's region, every failure in status -------------------


@pytest.mark.parametrize("source", ["networkInterfaceId", "instanceId", "nodeName"])
def test_objects_in_another_region_make_every_call_there(source: str) -> None:
    world = World(region="us-west-2")
    world.ctx.node_provider_ids = {
        "capture-node": f"aws:///us-west-2a/{world.capture_instance}",
        "web-node": f"aws:///us-west-2a/{world.web_instance}",
    }
    value = {
        "networkInterfaceId": (world.capture_eni, world.web_eni),
        "instanceId": (world.capture_instance, world.web_instance),
        "nodeName": ("capture-node", "web-node"),
    }[source]
    world.target.spec = {source: value[0], "region": "us-west-2"}
    world.session.spec["source"] = {source: value[1]}
    world.converge()
    assert [o.status["phase"] for o in (world.target, world.filter, world.session)] == ["Ready"] * 3
    assert world.aws.region(None).calls == {}, "a call went to the operator's own region"


OPERATIONS = {
    "MirrorTarget": ["describe_network_interfaces", "describe_instances", "describe_targets", "create_target"],
    "MirrorFilter": ["describe_filters", "create_filter", "create_filter_rule"],
    "MirrorSession": ["describe_network_interfaces", "describe_sessions", "create_session"],
}
ERRORS = {
    ErrorClass.RETRYABLE: "RequestLimitExceeded",
    ErrorClass.TERMINAL: "UnauthorizedOperation",
    ErrorClass.NOT_FOUND: "InvalidNetworkInterfaceID.NotFound",
    ErrorClass.QUOTA: "TrafficMirrorTargetLimitExceeded",
    ErrorClass.UNSUPPORTED_INSTANCE: "NetworkInterfaceNotSupported",
    ErrorClass.NOT_RUNNING: "InvalidTrafficMirrorTarget",
}
# The words that tell one class from another where AWS uses one code for both.
MESSAGES = {
    ErrorClass.NOT_RUNNING: "The traffic mirror target 'tmt-0123456789abcdef0' is not valid: network interface "
    "'eni-0123456789abcdef0' is attached to instance 'i-0123456789abcdef0', which is stopped, not running.",
}
# Errors that are facts of the world (they change without a spec change): Failed, looked at again.
WORLD_FACTS = {ErrorClass.QUOTA, ErrorClass.UNSUPPORTED_INSTANCE, ErrorClass.NOT_RUNNING}


# NotFound from the Describe of the recorded resource is no failure: it was deleted outside, and is
# recreated (test_any_recorded_resource_deleted_outside_is_recreated_with_a_new_token).
OWN = ("targets", "filters", "sessions")
FAILURES = [
    (kind, operation, error_class)
    for kind, operations in OPERATIONS.items()
    for operation in operations
    for error_class in ERRORS
    if not (error_class is ErrorClass.NOT_FOUND and operation.startswith("describe_") and operation[9:] in OWN)
]


@pytest.mark.parametrize(("kind", "operation", "error_class"), FAILURES, ids=lambda v: str(getattr(v, "value", v)))
def test_every_aws_failure_reaches_status(kind: str, operation: str, error_class: ErrorClass) -> None:
    """No AWS error escapes as a traceback with nothing on the object: Failed, or Pending saying what is retried."""
    world = World()
    world.converge()
    obj = {"MirrorTarget": world.target, "MirrorFilter": world.filter, "MirrorSession": world.session}[kind]
    if operation == "create_filter_rule":  # a new rule, so that its create is sent
        obj.spec = {"ingressRules": [RULE, {"ruleNumber": 20}]}
    elif operation.startswith("create"):  # a new object, so that the create is sent
        obj.status.clear()
        obj.annotations.clear()
        obj.uid = f"{obj.uid}-new"
    world.region.fail[operation] = error("Op", ERRORS[error_class], MESSAGES.get(error_class, ""))
    outcome = obj.reconcile(world.ctx)
    assert world.region.calls[operation] >= 1, "the failing call was never made"
    assert outcome.phase.value in ("Failed", "Pending") and obj.reason and outcome.conditions[0].message


# --- defect class: tags -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["MirrorTarget", "MirrorFilter", "MirrorSession"])
def test_tags_follow_the_spec_and_are_restored_when_changed_outside(kind: str) -> None:
    world = World()
    world.converge()
    obj = {"MirrorTarget": world.target, "MirrorFilter": world.filter, "MirrorSession": world.session}[kind]
    store: dict[str, Any] = {
        "MirrorTarget": world.region.targets,
        "MirrorFilter": world.region.filters,
        "MirrorSession": world.region.sessions,
    }[kind]
    aws_id = obj.reconciler.observed_id(obj.request().status)

    obj.spec["tags"] = {"team": "netops", "cost": "1"}
    assert not obj.reconciler.in_sync(obj.request(), world.observed(obj))
    obj.reconcile(world.ctx)
    assert {"team": "netops", "cost": "1"}.items() <= store[aws_id].tags.items()

    # Outside: one removed, one changed, one added, and an AWS-managed key.
    found = store[aws_id]
    outside = {k: v for k, v in found.tags.items() if k != "team"} | {"cost": "2", "stray": "x", "aws:cfn": "s"}
    store[aws_id] = type(found)(**{**found.__dict__, "tags": outside})
    assert not obj.reconciler.in_sync(obj.request(), world.observed(obj))
    obj.reconcile(world.ctx)
    tags = store[aws_id].tags
    assert tags["team"] == "netops" and tags["cost"] == "1" and "stray" not in tags and tags["aws:cfn"] == "s"
    assert tags[OWNER_UID_TAG] == obj.uid
    assert obj.reconciler.in_sync(obj.request(), world.observed(obj))
    before = world.aws.mutating_calls()
    obj.reconcile(world.ctx)
    assert world.aws.mutating_calls() == before


def test_a_253_character_name_gives_an_owner_tag_within_aws_limit_and_the_uid_exact() -> None:
    world = World()
    world.filter.name = "n" * 253
    world.filter.reconcile(world.ctx)
    (made,) = world.region.filters.values()
    assert all(len(v) <= 256 for v in made.tags.values())
    assert made.tags[OWNER_UID_TAG] == world.filter.uid
    other = Obj(FILTER, world.filter.spec, name="n" * 252 + "m", uid="uid-2")
    assert other.owner.name != world.filter.owner.name
    world.filter.spec = {"ingressRules": [RULE]}
    from trafficmirror.reconcile.common import owner_tags

    assert owner_tags(other.owner, None)[OWNER_TAG] != made.tags[OWNER_TAG]


# --- defect class: no spec yields a modify every resync ----------------------------------------------


def _random_rule(rng: Any, number: int) -> dict[str, Any]:
    v6 = rng.random() < 0.3
    if v6:
        spellings = ["::/0", "2001:DB8::/32", "2001:db8:0:0::/64", "fd00:0000::/8", "2001:0db8:0000::/48"]
        source, destination = rng.choice(spellings), rng.choice(spellings)
    else:
        source = rng.choice(["0.0.0.0/0", "10.0.0.0/8", "192.168.1.0/24", "172.16.0.0/12"])
        destination = rng.choice(["0.0.0.0/0", "10.1.0.0/16", "10.1.2.3/32"])
    rule: dict[str, Any] = {"ruleNumber": number, "sourceCidrBlock": source, "destinationCidrBlock": destination}
    if rng.random() < 0.5:
        rule["action"] = rng.choice(["accept", "reject"])
    protocol = rng.choice([None, 1, 6, 17])
    if protocol is not None:
        rule["protocol"] = protocol
    if protocol in (6, 17) and rng.random() < 0.6:
        low = rng.randint(0, 65535)
        rule["destinationPortRange"] = {"fromPort": low, "toPort": rng.randint(low, 65535)}
    if rng.random() < 0.3:
        rule["description"] = rng.choice(["", "web", "dns traffic"])
    return rule


def test_no_filter_spec_yields_a_modify_every_resync() -> None:
    """Seeded: random rules in every spelling AWS normalises (IPv6 case and zeros, defaults, empty
    descriptions). After one reconcile, the next makes no mutating call and in_sync holds."""
    import random

    seed = 8_2026_1130
    rng = random.Random(seed)
    for case in range(150):
        world = World()
        numbers = rng.sample(range(1, 500), rng.randint(1, 5))
        world.filter.spec = {"ingressRules": [_random_rule(rng, n) for n in numbers]}
        if rng.random() < 0.5:
            world.filter.spec["egressRules"] = [_random_rule(rng, 7)]
        world.filter.reconcile(world.ctx)
        before = world.aws.mutating_calls()
        world.filter.reconcile(world.ctx)
        assert world.aws.mutating_calls() == before, f"seed {seed} case {case}: {world.filter.spec}"
        assert FILTER.in_sync(world.filter.request(), world.observed(world.filter)), f"seed {seed} case {case}"


def test_no_session_spec_yields_a_modify_every_resync() -> None:
    """Seeded: every modifiable field with and without a value, to an ENI target and to an NLB
    target (where AWS applies 8500 bytes when the spec has no packetLength)."""
    import random

    seed = 5_2026_1130
    rng = random.Random(seed)
    for case in range(120):
        world = World()
        if rng.random() < 0.5:
            world.target.spec = {"networkLoadBalancerArn": NLB}
        spec = world.session.spec
        for name, values in {
            "packetLength": [None, 1, 128, 8500, 9001 if "networkInterfaceId" in world.target.spec else 100],
            "sessionNumber": [None, 1, 2, 32766],
            "virtualNetworkId": [None, 0, 7, 16777215],
            "description": [None, "", "web tier"],
        }.items():
            value = rng.choice(values)
            if value is not None:
                spec[name] = value
        world.converge()
        assert world.session.status["phase"] == "Ready", f"seed {seed} case {case}: {world.session.status}"
        before = world.aws.mutating_calls()
        world.converge()
        assert world.aws.mutating_calls() == before, f"seed {seed} case {case}: {spec} {world.target.spec}"
        assert SESSION.in_sync(world.session.request(), world.observed(world.session)), f"seed {seed} case {case}"


# --- the hot delete loop -----------------------------------------------------------------------------


def test_a_replaced_target_that_sessions_cannot_leave_is_never_deleted_in_a_loop() -> None:
    """A target moved to a t2.micro ENI: AWS refuses to move the session to it, so the old target stays
    used. Waiting costs a read, never a failing DeleteTrafficMirrorTarget, and slows to the resync."""
    world = World()
    world.converge()
    _, t2_eni = world.region.add_instance("t2.micro")
    world.target.spec = {"networkInterfaceId": t2_eni}
    for _ in range(20):
        outcome = world.target.reconcile(world.ctx)
    assert world.region.calls["delete_target"] == 0
    assert world.target.status["previousTargetIds"] and world.target.condition("Replaced")["status"] == "False"
    # After the patience, the wait is the resync's: no fast retry any more.
    replaced = world.target.condition("Replaced")
    replaced["lastTransitionTime"] = "2000-01-01T00:00:00Z"
    outcome = world.target.reconcile(world.ctx)
    assert outcome.retry_after is None


def test_a_session_aws_refused_to_move_to_a_t2_target_asks_again_only_when_the_type_changes() -> None:
    world = World()
    world.converge()
    _, t2_eni = world.region.add_instance("t2.micro")
    world.target.spec = {"networkInterfaceId": t2_eni}
    world.target.reconcile(world.ctx)
    world.session.facts = world.dependencies()
    world.session.reconcile(world.ctx)
    assert world.session.reason == "UnsupportedInstanceType"
    assert world.session.status["rejectedNetworkInterfaceId"] == t2_eni
    modifies = world.region.calls["modify_session"]
    for _ in range(5):  # the resync looks again: no modify AWS already refused
        world.session.reconcile(world.ctx)
    assert world.region.calls["modify_session"] == modifies and world.session.reason == "UnsupportedInstanceType"
    t2_instance = world.region.interfaces[t2_eni].instance_id
    assert t2_instance is not None
    world.region.instances[t2_instance] = "c5.large"  # stopped, resized, started
    world.session.reconcile(world.ctx)
    assert world.session.status["phase"] == "Ready"
    assert (
        world.region.sessions[world.session.status["trafficMirrorSessionId"]].target_id
        == (world.target.status["trafficMirrorTargetId"])
    )


def test_the_replaced_condition_is_cleared_once_the_old_target_is_gone() -> None:
    world = World()
    world.converge()
    _, new_eni = world.region.add_instance("c5.large")
    world.target.spec = {"networkInterfaceId": new_eni}
    world.target.reconcile(world.ctx)
    assert world.target.condition("Replaced") is not None
    world.session.facts = world.dependencies()
    world.session.reconcile(world.ctx)  # the session moves to the new target
    world.target.reconcile(world.ctx)
    assert world.target.condition("Replaced") is None and "previousTargetIds" not in world.target.status
    assert len(world.region.targets) == 1


# --- adoption -----------------------------------------------------------------------------------------


def test_adopting_a_filter_another_live_object_manages_fails_naming_that_owner() -> None:
    world = World()
    world.filter.reconcile(world.ctx)
    filter_id = world.filter.status["trafficMirrorFilterId"]
    adopter = Obj(FILTER, {"ingressRules": [{"ruleNumber": 99}], "adoptId": filter_id}, name="thief", uid="uid-b")
    live = {world.filter.uid: "MirrorFilter default/https", adopter.uid: "MirrorFilter default/thief"}
    ctx = context(world.aws, live_owners=live.get)
    before = world.aws.mutating_calls()
    outcome = adopter.reconcile(ctx)
    assert outcome.phase.value == "Failed" and adopter.reason == "OwnedByAnother"
    assert "MirrorFilter default/https" in outcome.conditions[0].message
    assert world.aws.mutating_calls() == before
    assert adopter.delete(ctx) is None and filter_id in world.region.filters  # nothing of it was ours


def test_adopting_a_resource_whose_owner_is_gone_takes_it_over() -> None:
    world = World()
    world.filter.reconcile(world.ctx)
    filter_id = world.filter.status["trafficMirrorFilterId"]
    adopter = Obj(FILTER, {"ingressRules": [RULE], "adoptId": filter_id}, name="heir", uid="uid-c")
    outcome = adopter.reconcile(context(world.aws, live_owners={}.get))
    assert outcome.phase.value == "Ready"
    assert world.region.filters[filter_id].tags[OWNER_UID_TAG] == "uid-c"


# --- facts of the world are looked at again --------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "TrafficMirrorSessionsPerInterfaceLimitExceeded",
        "TrafficMirrorTargetLimitExceeded",
        "TrafficMirrorSourcesPerTargetLimitExceeded",
        "TrafficMirrorFilterRuleLimitExceeded",
        "NetworkInterfaceNotSupported",
    ],
)
def test_every_world_fact_failure_is_rechecked_at_resync(code: str) -> None:
    outcome = outcome_for_aws_error(error("CreateTrafficMirrorSession", code))
    assert outcome.phase.value == "Failed" and outcome.ready_reason in RECHECKED_AT_RESYNC


def test_every_failed_reason_is_either_the_specs_or_rechecked() -> None:
    """A Failed the spec cannot cause must be looked at again; the rest wait for a spec change."""
    spec_facts = {"AwsRejected", "InvalidSpec", "NoSource"}
    for error_class, code in ERRORS.items():
        try:
            raised = error("Op", code, MESSAGES.get(error_class, ""))
            assert raised.error_class is error_class
            outcome = outcome_for_aws_error(raised)
        except RetryLater:
            continue
        assert outcome.ready_reason in RECHECKED_AT_RESYNC | spec_facts, (error_class, outcome.ready_reason)
        if error_class in WORLD_FACTS:
            assert outcome.ready_reason in RECHECKED_AT_RESYNC, error_class
    every_class = set(ErrorClass) - {ErrorClass.RETRYABLE, ErrorClass.NOT_FOUND, ErrorClass.IN_USE}
    assert every_class <= set(ERRORS), "a new error class needs a row here"


def test_a_session_over_the_source_quota_is_created_once_a_slot_frees_and_costs_one_read_meanwhile() -> None:
    world = World()
    world.converge()
    for number in (2, 3):
        other = Obj(SESSION, {**world.session.spec, "sessionNumber": number}, name=f"other{number}", uid=f"u{number}")
        other.facts = world.dependencies()
        other.reconcile(world.ctx)
    fourth = Obj(SESSION, {**world.session.spec, "sessionNumber": 4}, name="fourth", uid="u4")
    fourth.facts = world.dependencies()
    fourth.reconcile(world.ctx)
    assert fourth.reason == "QuotaExceeded"
    creates = world.region.calls["create_session"]
    fourth.reconcile(world.ctx)  # the resync: still full
    assert world.region.calls["create_session"] == creates and fourth.reason == "QuotaExceeded"
    world.region.sessions.pop(world.session.status["trafficMirrorSessionId"])
    fourth.reconcile(world.ctx)
    assert fourth.status["phase"] == "Ready"


# --- stale status --------------------------------------------------------------------------------------


def test_a_resized_target_instance_updates_the_type_and_drops_the_warning() -> None:
    world = World(capture_type="t2.micro")
    world.target.reconcile(world.ctx)
    assert world.target.status["instanceType"] == "t2.micro"
    assert world.target.condition("InstanceTypeSupported")["reason"] == "DoubtfulInstanceType"
    world.region.instances[world.capture_instance] = "c5.large"
    observed = world.observed(world.target)
    assert observed is not None
    resized = Observed(observed.resource, instance_type="c5.large", instance_type_known=True)
    assert not TARGET.in_sync(world.target.request(), resized)
    world.target.reconcile(world.ctx)
    assert world.target.status["instanceType"] == "c5.large"
    assert world.target.condition("InstanceTypeSupported")["status"] == "True"
    assert TARGET.in_sync(world.target.request(), resized)


def test_a_target_switched_to_a_load_balancer_loses_its_instance_type_condition() -> None:
    world = World()
    world.target.reconcile(world.ctx)
    world.target.spec = {"networkLoadBalancerArn": NLB}
    world.target.reconcile(world.ctx)
    assert world.target.condition("InstanceTypeSupported") is None
    assert "instanceType" not in world.target.status and world.target.status["endpointType"] == "NetworkLoadBalancer"


@pytest.mark.parametrize("kind", ["MirrorTarget", "MirrorFilter"])
def test_a_delete_that_waits_for_sessions_stays_deleting(kind: str) -> None:
    world = World()
    world.converge()
    obj = world.target if kind == "MirrorTarget" else world.filter
    obj.facts = ClusterFacts(users=("web",))
    outcome = obj.delete(world.ctx)
    assert outcome is not None and outcome.phase.value == "Deleting" and obj.reason == "WaitingForSessions"
    obj.facts = ClusterFacts()  # the MirrorSession is gone, its AWS session not yet
    outcome = obj.delete(world.ctx)
    assert outcome is not None and outcome.phase.value == "Deleting"
    world.session.delete(world.ctx)
    assert obj.delete(world.ctx) is None


# --- the stored spec no longer validates ------------------------------------------------------------


def test_an_invalid_stored_spec_becomes_a_clear_failed_naming_the_field() -> None:
    world = World()
    parsed = parse_request(FILTER, world.filter.owner, {"ingressRules": [{"ruleNumber": 0}]}, {})
    assert isinstance(parsed, Outcome) and parsed.phase.value == "Failed" and parsed.ready_reason == "InvalidSpec"
    assert "spec.ingressRules[0].ruleNumber" in parsed.conditions[0].message


def test_the_batched_observation_sees_a_resized_source_and_target_and_drift_follows() -> None:
    """observe(): one Describe per kind plus two batched lookups; a stop/resize/start of the source or
    the target instance makes the object out of sync, and the reconcile records the new type."""
    world = World()
    world.converge()
    sessions, targets = observe(world.region, "sessions"), observe(world.region, "targets")
    assert SESSION.in_sync(world.session.request(), sessions[world.session.status["trafficMirrorSessionId"]])
    assert TARGET.in_sync(world.target.request(), targets[world.target.status["trafficMirrorTargetId"]])
    world.region.instances[world.web_instance] = "t2.micro"
    world.region.instances[world.capture_instance] = "t2.micro"
    sessions, targets = observe(world.region, "sessions"), observe(world.region, "targets")
    assert not SESSION.in_sync(world.session.request(), sessions[world.session.status["trafficMirrorSessionId"]])
    assert not TARGET.in_sync(world.target.request(), targets[world.target.status["trafficMirrorTargetId"]])
    world.target.reconcile(world.ctx)
    world.session.reconcile(world.ctx)
    assert world.target.status["instanceType"] == "t2.micro"
    assert world.session.status["phase"] == "Failed" and world.session.reason == "UnsupportedInstanceType"


@pytest.mark.parametrize("target_spec", [{}, {"networkLoadBalancerArn": NLB}], ids=["eni target", "nlb target"])
def test_a_session_in_sync_stays_so_without_the_cluster_facts_and_a_vni_changed_outside_is_recorded(
    target_spec: dict[str, Any],
) -> None:
    """The resync may compare without the target's and filter's index entries: it then judges by the
    IDs and packet length recorded in status, and still sees nothing to do."""
    world = World()
    if target_spec:
        world.target.spec = target_spec
    world.converge()
    session_id = world.session.status["trafficMirrorSessionId"]
    bare = Obj(SESSION, world.session.spec, name="web", uid=world.session.uid, status=world.session.status)
    assert SESSION.in_sync(bare.request(), world.observed(world.session))
    found = world.region.sessions[session_id]
    world.region.sessions[session_id] = type(found)(**{**found.__dict__, "virtual_network_id": 99})
    assert not SESSION.in_sync(world.session.request(), world.observed(world.session))
    world.session.reconcile(world.ctx)
    assert world.session.status["virtualNetworkId"] == 99
    assert SESSION.in_sync(world.session.request(), world.observed(world.session))
