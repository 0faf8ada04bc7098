"""A watch that runs late: the operator must never act on a body older than its own last write.

With thousands of objects changing at once, the watch brought each object's events more than 5 s after they
were written (kopf's default wait for the version of its own PATCH). kopf then took an older event for the
current state: the body of the operator's create-intent patch, without kopf's record of the handler that had
just run, so the object was created a second time (a second Create call for every target and filter of a
10,000-object burst), and an edit could be undone by its stale event and redone by the next.

Here the lag is made on purpose, on a small cluster: the operator under test talks to the apiserver through
`trafficmirror_testbed.kubeproxy.KubeFaultProxy`, which passes every watch stream on LAG_SECONDS late and every
other request at once. Counted at the EC2 fault proxy: one create per AWS resource, exactly the modify calls
the edits need, and no mutating call at steady state.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from tests.integration.conftest import RESYNC_SECONDS
from tests.integration.test_faults import (  # noqa: F401
    SESSION_CREATE,
    FaultBed,
    apply_all,
    assert_one_aws_resource_per_object,
    bed,
    cluster_objects,
    mirror_objects,
    mutating_calls,
    phase,
    shared_operator_frozen,
    wait_all_ready,
)
from trafficmirror_testbed.kubeproxy import KubeFaultProxy

LAG_SECONDS = 8.0  # past kopf's default wait for its own write (5 s), well within the operator's (60 s)
SESSIONS = 16  # two targets and two filters of 3 rules each


def wait_generation(faults: FaultBed, prefix: str, generation: int, kinds: set[str], timeout: float = 240) -> None:
    """Every object of `kinds` Ready with a status written for `generation`."""
    deadline = time.monotonic() + timeout
    pending: list[str] = []
    while time.monotonic() < deadline:
        seen = [o for o in cluster_objects(faults, prefix) if o["kind"] in kinds]
        pending = [
            o["metadata"]["name"]
            for o in seen
            if not (
                o["metadata"]["generation"] == generation
                and o.get("status", {}).get("observedGeneration") == generation
                and phase(o) == "Ready"
            )
        ]
        if seen and not pending:
            return
        time.sleep(1)
    raise AssertionError(f"not Ready at generation {generation}: {pending}\n{faults.cluster.operator.log_tail(80)}")


def test_a_watch_late_by_8_seconds_costs_no_extra_aws_call(bed: FaultBed, tmp_path: Path) -> None:  # noqa: F811
    lagging = KubeFaultProxy(bed.control_plane, lag=LAG_SECONDS).start()
    try:
        bed.operator(KUBECONFIG=str(lagging.kubeconfig(tmp_path / "lagging-kubeconfig")))
        objects = mirror_objects(bed, "lag", sessions=SESSIONS)
        targets = sum(o["kind"] == "MirrorTarget" for o in objects)
        filters = sum(o["kind"] == "MirrorFilter" for o in objects)
        bed.proxy.reset_counters()
        started = time.monotonic()
        apply_all(bed, objects)
        ready = wait_all_ready(bed, "lag", len(objects))
        created = mutating_calls(bed)
        print(f"{len(objects)} objects Ready in {time.monotonic() - started:.0f} s, watch {LAG_SECONDS:.0f} s late")
        print(f"mutating calls to create them: {dict(created)}")
        assert lagging.watch_bytes > 0, "the operator's watches did not go through the lagging proxy"
        assert created == Counter(
            {
                "CreateTrafficMirrorTarget": targets,
                "CreateTrafficMirrorFilter": filters,
                "CreateTrafficMirrorFilterRule": 3 * filters,
                SESSION_CREATE: SESSIONS,
            }
        ), "an object was created more than once (handled again from a body older than the operator's own write)"
        assert_one_aws_resource_per_object(bed, ready)

        # An edit of every filter (one rule's port) and every session (its packet length): one modify each.
        bed.proxy.reset_counters()
        for o in ready:
            name = o["metadata"]["name"]
            if o["kind"] == "MirrorFilter":
                change = [
                    {"op": "replace", "path": "/spec/ingressRules/0/destinationPortRange/fromPort", "value": 8443},
                    {"op": "replace", "path": "/spec/ingressRules/0/destinationPortRange/toPort", "value": 8443},
                ]
            elif o["kind"] == "MirrorSession":
                change = [{"op": "add", "path": "/spec/packetLength", "value": 128}]
            else:
                continue
            bed.control_plane.kubectl(
                "patch", o["kind"].lower(), name, "-n", bed.namespace, "--type", "json", "-p", json.dumps(change)
            )
        wait_generation(bed, "lag", 2, {"MirrorFilter", "MirrorSession"})
        # Stale events of the edits arrive LAG_SECONDS late; one resync period more for what they could undo.
        time.sleep(LAG_SECONDS + RESYNC_SECONDS)
        edited = mutating_calls(bed)
        print(f"mutating calls for the edits: {dict(edited)}")
        assert edited == Counter({"ModifyTrafficMirrorFilterRule": filters, "ModifyTrafficMirrorSession": SESSIONS}), (
            "an edit was undone and redone (a stale body taken for the current one)"
        )

        # Steady state: two resync periods without a mutating call.
        bed.proxy.reset_counters()
        time.sleep(2 * RESYNC_SECONDS)
        steady = mutating_calls(bed)
        assert not steady, f"mutating calls at steady state: {dict(steady)}"
        final = cluster_objects(bed, "lag")
        assert all(phase(o) == "Ready" for o in final)
        assert_one_aws_resource_per_object(bed, final)
    finally:
        # The teardown deletes through a healthy operator that talks to the apiserver directly.
        for running in bed.operators:
            running.stop()
        bed.operator()
        lagging.stop()
