"""Updates, deletion, orphaning, adoption and drift: AWS follows the spec and nothing is left behind."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import Cluster, fresh_instance, ready_condition
from trafficmirror_testbed.seed import World


def _filter(name: str, ports: tuple[int, int] = (443, 443), **spec: Any) -> dict[str, Any]:
    rule = {
        "ruleNumber": 10,
        "protocol": 6,
        "destinationPortRange": {"fromPort": ports[0], "toPort": ports[1]},
    }
    return {"kind": "MirrorFilter", "metadata": {"name": name}, "spec": {"ingressRules": [rule], **spec}}


def _target(name: str, eni: str, **spec: Any) -> dict[str, Any]:
    return {"kind": "MirrorTarget", "metadata": {"name": name}, "spec": {"networkInterfaceId": eni, **spec}}


def _session(name: str, source_eni: str, **spec: Any) -> dict[str, Any]:
    return {
        "kind": "MirrorSession",
        "metadata": {"name": name},
        "spec": {
            "source": {"networkInterfaceId": source_eni},
            "targetRef": {"name": "capture"},
            "filterRef": {"name": "https"},
            **spec,
        },
    }


def _aws_session(ec2: Any, session_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ec2.describe_traffic_mirror_sessions(TrafficMirrorSessionIds=[session_id])[
        "TrafficMirrorSessions"
    ][0]
    return found


def _owned(ec2: Any, uid: str) -> list[str]:
    """Every AWS mirror resource tagged with this owner UID."""
    found = []
    for call, key, id_key in (
        (ec2.describe_traffic_mirror_sessions, "TrafficMirrorSessions", "TrafficMirrorSessionId"),
        (ec2.describe_traffic_mirror_targets, "TrafficMirrorTargets", "TrafficMirrorTargetId"),
        (ec2.describe_traffic_mirror_filters, "TrafficMirrorFilters", "TrafficMirrorFilterId"),
    ):
        for item in call()[key]:
            if {"Key": "trafficmirror.io/owner-uid", "Value": uid} in item.get("Tags", []):
                found.append(item[id_key])
    return found


@pytest.fixture
def source_eni(ec2: Any, world: World) -> str:
    return fresh_instance(ec2, world)[1]


@pytest.fixture
def mirrored(cluster: Cluster, world: World, source_eni: str) -> dict[str, Any]:
    cluster.apply(_filter("https"))
    cluster.apply(_target("capture", world.eni("capture")))
    cluster.apply(_session("web", source_eni))
    return cluster.wait_phase("mirrorsession", "web", "Ready")


def test_rule_edits_are_applied_rule_by_rule_on_the_same_filter(cluster: Cluster, mirrored: Any, ec2: Any) -> None:
    before = cluster.wait_phase("mirrorfilter", "https", "Ready")["status"]
    cluster.apply(_filter("https", ports=(8000, 8443), egressRules=[{"ruleNumber": 20, "protocol": 17}]))
    after = cluster.wait_for(
        "mirrorfilter",
        "https",
        lambda o: "egress/20" in o["status"].get("ruleIds", {}) and o["status"]["phase"] == "Ready",
    )["status"]
    assert after["trafficMirrorFilterId"] == before["trafficMirrorFilterId"]
    assert after["ruleIds"]["ingress/10"] == before["ruleIds"]["ingress/10"]  # modified in place
    aws_filter = ec2.describe_traffic_mirror_filters(TrafficMirrorFilterIds=[after["trafficMirrorFilterId"]])[
        "TrafficMirrorFilters"
    ][0]
    (ingress,) = aws_filter["IngressFilterRules"]
    assert ingress["DestinationPortRange"] == {"FromPort": 8000, "ToPort": 8443}
    assert [r["Protocol"] for r in aws_filter["EgressFilterRules"]] == [17]


def test_session_number_and_packet_length_are_modified_in_place(
    cluster: Cluster, mirrored: Any, source_eni: str, ec2: Any
) -> None:
    session_id = mirrored["status"]["trafficMirrorSessionId"]
    cluster.apply(_session("web", source_eni, sessionNumber=2, packetLength=128))
    cluster.wait_for(
        "mirrorsession",
        "web",
        lambda o: o["status"].get("observedGeneration") == 2 and o["status"]["phase"] == "Ready",
    )
    described = _aws_session(ec2, session_id)
    assert (described["SessionNumber"], described["PacketLength"]) == (2, 128)


def test_a_replaced_target_gets_the_sessions_before_the_old_one_goes(
    cluster: Cluster, mirrored: Any, world: World, ec2: Any
) -> None:
    old_target = cluster.get("mirrortarget", "capture")["status"]["trafficMirrorTargetId"]
    cluster.apply(_target("capture", fresh_instance(ec2, world, "c5.large")[1]))
    session = cluster.wait_for(
        "mirrorsession",
        "web",
        lambda o: o["status"].get("trafficMirrorTargetId") not in (None, old_target),
        timeout=60,
    )
    new_target = session["status"]["trafficMirrorTargetId"]
    assert _aws_session(ec2, session["status"]["trafficMirrorSessionId"])["TrafficMirrorTargetId"] == new_target
    cluster.wait_for("mirrortarget", "capture", lambda o: not o["status"].get("previousTargetIds"), timeout=60)
    remaining = [t["TrafficMirrorTargetId"] for t in ec2.describe_traffic_mirror_targets()["TrafficMirrorTargets"]]
    assert old_target not in remaining and new_target in remaining


def test_deleting_everything_leaves_nothing_in_aws(cluster: Cluster, mirrored: Any, ec2: Any) -> None:
    uids = [
        cluster.get(kind, name)["metadata"]["uid"]
        for kind, name in (("mirrorsession", "web"), ("mirrortarget", "capture"), ("mirrorfilter", "https"))
    ]
    # Deleting the target first: it waits for its session instead of failing in AWS.
    cluster.delete("mirrortarget", "capture", wait=False)
    waiting = cluster.wait_for(
        "mirrortarget", "capture", lambda o: ready_condition(o)["reason"] == "WaitingForSessions"
    )
    assert "web" in ready_condition(waiting)["message"]
    cluster.delete("mirrorsession", "web")
    cluster.delete("mirrorfilter", "https")
    for uid in uids:
        deadline_ok = _wait_gone(cluster, ec2, uid)
        assert deadline_ok, f"AWS still holds {_owned(ec2, uid)} for {uid}"


def _wait_gone(cluster: Cluster, ec2: Any, uid: str) -> bool:
    import time

    for _ in range(100):
        if not _owned(ec2, uid):
            return True
        time.sleep(0.3)
    return False


def test_orphan_policy_leaves_aws_alone_and_adoption_takes_it_back(
    cluster: Cluster, mirrored: Any, source_eni: str, ec2: Any
) -> None:
    session_id = mirrored["status"]["trafficMirrorSessionId"]
    cluster.apply(_session("web", source_eni, deletionPolicy="Orphan"))
    cluster.wait_for("mirrorsession", "web", lambda o: o["status"].get("observedGeneration") == 2)
    cluster.delete("mirrorsession", "web")
    assert _aws_session(ec2, session_id)["TrafficMirrorSessionId"] == session_id

    cluster.apply(_session("adopted", source_eni, adoptId=session_id))
    adopted = cluster.wait_phase("mirrorsession", "adopted", "Ready")
    assert adopted["status"]["trafficMirrorSessionId"] == session_id
    cluster.delete("mirrorsession", "adopted")
    assert (
        ec2.describe_traffic_mirror_sessions(Filters=[{"Name": "traffic-mirror-session-id", "Values": [session_id]}])[
            "TrafficMirrorSessions"
        ]
        == []
    )


def test_out_of_band_deletion_and_changes_are_repaired(cluster: Cluster, mirrored: Any, ec2: Any) -> None:
    session_id = mirrored["status"]["trafficMirrorSessionId"]
    ec2.modify_traffic_mirror_session(TrafficMirrorSessionId=session_id, SessionNumber=7)
    cluster.wait_for("mirrorsession", "web", lambda o: _aws_session(ec2, session_id)["SessionNumber"] == 1, timeout=30)

    ec2.delete_traffic_mirror_session(TrafficMirrorSessionId=session_id)
    recreated = cluster.wait_for(
        "mirrorsession",
        "web",
        lambda o: (
            o["status"].get("trafficMirrorSessionId") not in (None, session_id) and o["status"]["phase"] == "Ready"
        ),
        timeout=30,
    )
    assert _aws_session(ec2, recreated["status"]["trafficMirrorSessionId"])["SessionNumber"] == 1

    filter_id = cluster.get("mirrorfilter", "https")["status"]["trafficMirrorFilterId"]
    rule_id = cluster.get("mirrorfilter", "https")["status"]["ruleIds"]["ingress/10"]
    ec2.delete_traffic_mirror_filter_rule(TrafficMirrorFilterRuleId=rule_id)
    cluster.wait_for(
        "mirrorfilter",
        "https",
        lambda o: (
            len(
                ec2.describe_traffic_mirror_filters(TrafficMirrorFilterIds=[filter_id])["TrafficMirrorFilters"][0][
                    "IngressFilterRules"
                ]
            )
            == 1
        ),
        timeout=30,
    )
