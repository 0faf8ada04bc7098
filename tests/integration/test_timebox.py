"""Time-boxed captures against the real apiserver and the AWS emulator: at the end the AWS session is
deleted, the phase is Completed with the cost, and nothing brings it back (resyncs, an operator
restart, a spec edit); a stop time already past at creation creates nothing at all.

Figures printed (run with -s): how long after status.stopAt the session was Completed.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.conftest import (
    RESYNC_SECONDS,
    TIMEBOX_REFRESH_SECONDS,
    Cluster,
    OperatorProcess,
    condition,
    fresh_instance,
)
from trafficmirror_testbed.seed import World

MUTATING_SESSION = ("CreateTrafficMirrorSession", "ModifyTrafficMirrorSession", "DeleteTrafficMirrorSession")
STEADY_SECONDS = 3 * RESYNC_SECONDS  # three resync periods


def _filter() -> dict[str, Any]:
    return {
        "kind": "MirrorFilter",
        "metadata": {"name": "https"},
        "spec": {"ingressRules": [{"ruleNumber": 10, "protocol": 6}]},
    }


def _target(eni: str) -> dict[str, Any]:
    return {"kind": "MirrorTarget", "metadata": {"name": "capture"}, "spec": {"networkInterfaceId": eni}}


def _session(name: str, source_eni: str, **time_box: Any) -> dict[str, Any]:
    return {
        "kind": "MirrorSession",
        "metadata": {"name": name},
        "spec": {
            "source": {"networkInterfaceId": source_eni},
            "targetRef": {"name": "capture"},
            "filterRef": {"name": "https"},
            **time_box,
        },
    }


def _aws_sessions(ec2: Any, uid: str) -> list[str]:
    """The AWS sessions that carry this object's owner tag."""
    return [
        s["TrafficMirrorSessionId"]
        for s in ec2.describe_traffic_mirror_sessions()["TrafficMirrorSessions"]
        if {"Key": "trafficmirror.io/owner-uid", "Value": uid} in s.get("Tags", [])
    ]


def _mutating(operator: OperatorProcess) -> float:
    return sum(operator.aws_calls(op) for op in MUTATING_SESSION)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _wait_metrics(operator: OperatorProcess, timeout: float = 120) -> None:
    """The operator's startup handler has run once its metrics endpoint answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise AssertionError(f"the operator did not start:\n{operator.log_tail()}")


@pytest.fixture
def ready_dependencies(cluster: Cluster, world: World) -> None:
    cluster.apply(_filter())
    cluster.apply(_target(world.eni("capture")))
    cluster.wait_phase("mirrorfilter", "https", "Ready")
    cluster.wait_phase("mirrortarget", "capture", "Ready")


def _completed(cluster: Cluster, name: str, timeout: float = 120) -> dict[str, Any]:
    return cluster.wait_phase("mirrorsession", name, "Completed", timeout=timeout)


def _assert_completed_status(session: dict[str, Any]) -> None:
    status = session["status"]
    assert status["completedAt"] and status["stopAt"]
    assert _time(status["completedAt"]) >= _time(status["stopAt"]), "ended before its time"
    assert "trafficMirrorSessionId" not in status
    cost = status["estimatedCost"]
    assert cost["usdPerEniHour"] == 0.015 and "aws.amazon.com/vpc/pricing" in cost["priceSource"]
    assert cost["usd"] == pytest.approx(cost["eniHours"] * cost["usdPerEniHour"], abs=1e-6)
    done = condition(session, "Completed")
    assert done is not None and done["status"] == "True" and done["reason"] == "TimeUp"


@pytest.mark.testbed
def test_a_five_second_capture_is_completed_soon_after_with_nothing_left_in_aws_and_no_call_after(
    cluster: Cluster, ready_dependencies: None, world: World, ec2: Any
) -> None:
    _, source_eni = fresh_instance(ec2, world)
    cluster.apply(_session("five-seconds", source_eni, duration="5s"))

    session = _completed(cluster, "five-seconds")

    _assert_completed_status(session)
    uid = session["metadata"]["uid"]
    assert _aws_sessions(ec2, uid) == []
    created = _time(session["metadata"]["creationTimestamp"])
    assert _time(session["status"]["stopAt"]) == created + timedelta(seconds=5)
    lag = (_time(session["status"]["completedAt"]) - _time(session["status"]["stopAt"])).total_seconds()
    print(f"\n5 s capture: Completed {lag:.0f} s after stopAt (second resolution; shared, loaded machine)")
    assert lag <= 30, f"ended {lag} s after its time: the end is not being woken up for"
    before = _mutating(cluster.operator)
    time.sleep(STEADY_SECONDS)
    assert _mutating(cluster.operator) == before, "mutating session calls after completion"
    assert _aws_sessions(ec2, uid) == []
    assert cluster.get("mirrorsession", "five-seconds")["status"]["phase"] == "Completed"  # type: ignore[index]

    # a Completed session uses no target or filter: both may go while it stays to be read
    cluster.delete("mirrortarget", "capture")
    cluster.delete("mirrorfilter", "https")
    assert cluster.get("mirrortarget", "capture") is None and cluster.get("mirrorfilter", "https") is None
    assert cluster.get("mirrorsession", "five-seconds")["status"]["phase"] == "Completed"  # type: ignore[index]


@pytest.mark.testbed
def test_a_capture_mirrors_until_its_end_and_no_restart_edit_or_delete_brings_it_back(
    cluster: Cluster, ready_dependencies: None, world: World, ec2: Any
) -> None:
    _, source_eni = fresh_instance(ec2, world)
    cluster.apply(_session("quarter-minute", source_eni, duration="15s"))
    ready = cluster.wait_phase("mirrorsession", "quarter-minute", "Ready", timeout=15)
    uid = ready["metadata"]["uid"]
    mirroring = ready["status"]["trafficMirrorSessionId"]
    assert _aws_sessions(ec2, uid) == [mirroring]
    running = condition(ready, "Completed")
    assert running is not None and running["status"] == "False" and "left at" in running["message"]
    assert ready["status"]["stopAt"]

    session = _completed(cluster, "quarter-minute")

    _assert_completed_status(session)
    assert _aws_sessions(ec2, uid) == [], "the AWS session outlived the capture"
    assert mirroring in condition(session, "Completed")["message"]  # type: ignore[index]
    assert session["status"]["estimatedCost"]["eniHours"] > 0
    reasons = [e["reason"] for e in cluster.events("quarter-minute")]
    assert "Created" in reasons and "Completed" in reasons

    # an operator restart: the Completed session is resumed without a call, nothing is re-created
    operator = cluster.operator
    operator.stop()
    operator.start()
    _wait_metrics(operator)
    time.sleep(STEADY_SECONDS)
    assert _mutating(operator) == 0, "the restarted operator changed AWS"
    assert _aws_sessions(ec2, uid) == []

    # an edit of the spec does not restart it, and an Event says so
    cluster.apply(_session("quarter-minute", source_eni, duration="1h"))
    cluster.wait_for(
        "mirrorsession",
        "quarter-minute",
        lambda o: "AlreadyCompleted" in [e["reason"] for e in cluster.events(o["metadata"]["name"])],
    )
    edited = cluster.wait_for("mirrorsession", "quarter-minute", lambda o: o["status"]["observedGeneration"] == 2)
    assert (
        edited["status"]["phase"] == "Completed" and edited["status"]["completedAt"] == session["status"]["completedAt"]
    )
    time.sleep(STEADY_SECONDS)
    assert _aws_sessions(ec2, uid) == [] and _mutating(operator) == 0

    # deleting it leaves nothing in AWS and asks AWS for nothing
    cluster.delete("mirrorsession", "quarter-minute")
    assert cluster.get("mirrorsession", "quarter-minute") is None
    assert _aws_sessions(ec2, uid) == [] and _mutating(operator) == 0


@pytest.mark.testbed
def test_a_stop_time_already_past_at_creation_completes_without_creating_an_aws_session(
    cluster: Cluster, ready_dependencies: None, world: World, ec2: Any
) -> None:
    _, source_eni = fresh_instance(ec2, world)
    creates = cluster.operator.aws_calls("CreateTrafficMirrorSession")
    past = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.apply(_session("too-late", source_eni, stopAt=past))

    session = _completed(cluster, "too-late")

    assert session["status"]["stopAt"] == past
    assert session["status"]["estimatedCost"]["eniHours"] == 0
    assert "nothing was left in AWS" in condition(session, "Completed")["message"]  # type: ignore[index]
    assert _aws_sessions(ec2, session["metadata"]["uid"]) == []
    assert (
        ec2.describe_traffic_mirror_sessions(Filters=[{"Name": "network-interface-id", "Values": [source_eni]}])[
            "TrafficMirrorSessions"
        ]
        == []
    )
    assert cluster.operator.aws_calls("CreateTrafficMirrorSession") == creates


def _left_seconds(message: str) -> int:
    """Seconds in "…: 1m5s left at …"."""
    left = message.rsplit(": ", 1)[1].split(" left at ")[0]
    parts = dict((unit, int(n)) for n, unit in re.findall(r"(\d+)([hms])", left))
    return parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0)


@pytest.mark.testbed
def test_a_running_capture_says_how_long_it_has_left_and_its_cost_so_far_as_time_passes(
    cluster: Cluster, ready_dependencies: None, world: World, ec2: Any
) -> None:
    _, source_eni = fresh_instance(ec2, world)
    cluster.apply(_session("two-minutes", source_eni, duration="2m"))
    first = cluster.wait_phase("mirrorsession", "two-minutes", "Ready")
    said = condition(first, "Completed")
    assert said is not None and said["status"] == "False" and said["reason"] == "Running"

    later = cluster.wait_for(
        "mirrorsession",
        "two-minutes",
        lambda o: _left_seconds(condition(o, "Completed")["message"]) < _left_seconds(said["message"]),  # type: ignore[index]
        timeout=10 * TIMEBOX_REFRESH_SECONDS,
    )

    assert later["status"]["phase"] == "Ready"
    assert [c["type"] for c in later["status"]["conditions"]] == [c["type"] for c in first["status"]["conditions"]]
    stop = _time(later["status"]["stopAt"])
    message = condition(later, "Completed")["message"]  # type: ignore[index]
    as_of = _time(message.rsplit(" left at ", 1)[1])
    assert as_of + timedelta(seconds=_left_seconds(message)) == stop  # the time left adds up to the end
    cost = later["status"]["estimatedCost"]
    assert _time(cost["asOf"]) == as_of and cost["eniHours"] > 0
    hours = (as_of - _time(later["status"]["mirroringSince"])).total_seconds() / 3600
    assert cost["eniHours"] == pytest.approx(hours, abs=1 / 3600)  # times in status are to the second
    uid = later["metadata"]["uid"]
    cluster.delete("mirrorsession", "two-minutes")  # before its end: the ordinary delete
    assert _aws_sessions(ec2, uid) == []


@pytest.mark.testbed
def test_a_time_boxed_pod_selector_session_ends_with_every_child_and_aws_session_gone(
    cluster: Cluster, world: World, ec2: Any
) -> None:
    """Two pods on two nodes (the test writes each pod's status.podIP, standing in for the kubelet),
    mirrored through two child sessions until the parent's time is over; then no child, no AWS session,
    the cost of both ENIs on the parent, and a pod added later gets nothing."""
    from tests.integration.test_workload_sources import Workload

    workload = Workload(cluster, ec2, world)
    nodes = [workload.add_node("time-a"), workload.add_node("time-b")]
    try:
        _time_boxed_selector_story(cluster, ec2, world, workload, nodes)
    finally:
        # Nodes are cluster-wide and the emulator's addresses outlive the namespace: leave neither
        # behind (another test's pod could be given an address these ENIs still hold).
        for name in list(workload.nodes):
            workload.delete_node(name)


def _time_boxed_selector_story(cluster: Cluster, ec2: Any, world: World, workload: Any, nodes: list[str]) -> None:
    enis = {workload.nodes[n][1] for n in nodes}
    for index, node in enumerate(nodes):
        workload.add_pod(f"web-{index}", node)
    cluster.apply(_filter())
    cluster.apply(_target(fresh_instance(ec2, world, "c5.large")[1]))
    cluster.apply(
        {
            "kind": "MirrorSession",
            "metadata": {"name": "web"},
            "spec": {
                "source": {"podSelector": {"matchLabels": {"app": "web"}}},
                "targetRef": {"name": "capture"},
                "filterRef": {"name": "https"},
                "duration": "40s",
            },
        }
    )
    mirroring = cluster.wait_for(
        "mirrorsession",
        "web",
        lambda o: [s.get("state") for s in o.get("status", {}).get("sources", [])] == ["Mirroring"] * 2,
    )
    assert set(workload.aws_sessions(enis)) == enis and mirroring["status"]["stopAt"]

    ended = _completed(cluster, "web")

    status = ended["status"]
    assert _time(status["completedAt"]) >= _time(status["stopAt"])
    assert status["estimatedCost"]["eniHours"] > 0 and "2 child sessions" in condition(ended, "Completed")["message"]  # type: ignore[index]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and workload.aws_sessions(enis):
        time.sleep(0.5)
    assert workload.aws_sessions(enis) == {}, "an AWS session outlived the capture"
    children = cluster.control_plane.kubectl(
        "get", "mirrorsessions", "-n", cluster.namespace, "-l", "trafficmirror.io/parent-session=web", "-o", "name"
    )
    assert children.stdout.strip() == ""
    # churn after the end: a new pod gets no child and no AWS session
    workload.add_pod("web-late", nodes[0])
    time.sleep(STEADY_SECONDS)
    assert workload.aws_sessions(enis) == {}
    assert cluster.get("mirrorsession", "web")["status"]["phase"] == "Completed"  # type: ignore[index]
