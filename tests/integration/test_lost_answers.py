"""A write whose answer is lost: the apiserver made it, the operator saw the connection drop.

An apiserver that restarts can apply a PATCH and close the connection before it answers. kopf retries the
write, and the retry meets the object already changed. For its finalizer (a JSON patch that tests the
resourceVersion) the retry is refused as a conflict; kopf keeps "add the finalizer" for its next cycle,
and the next event (the one of the write that was made) has the finalizer already: that cycle has nothing
to write and runs no handler either, and no later event comes. In a full test run under load, three
sessions of a restart test stayed without a status for the test's four minutes that way.

Here every write of the operator loses its first answer on purpose, once per object, kind of write and
subresource (`trafficmirror_testbed.kubeproxy.KubeFaultProxy`): kopf's finalizer, its status and progress
patches, and the operator's own create-intent annotation. Every object must still become Ready, with one
create per AWS resource and no mutating call at steady state; and, losing answers again while they are
deleted, every object must go and leave nothing in AWS.
"""

from __future__ import annotations

import threading
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
    delete_all,
    mirror_objects,
    mutating_calls,
    phase,
    shared_operator_frozen,
    wait_all_ready,
)
from trafficmirror.handlers.startup import FOLLOW_SECONDS, UNHANDLED_SECONDS
from trafficmirror_testbed.kubeproxy import KubeFaultProxy

SESSIONS = 8  # one target, one filter of 3 rules


class FirstWriteOfEach:
    """Loses the answer of the first write of each (object, subresource, kind of patch) of the test's objects."""

    def __init__(self, namespace: str) -> None:
        self.prefix = f"/namespaces/{namespace}/"
        self.seen: set[tuple[str, str]] = set()
        self.lock = threading.Lock()

    def __call__(self, method: str, path: str, content_type: str) -> bool:
        if method != "PATCH" or self.prefix not in path or "/apis/trafficmirror.io/" not in path:
            return False
        with self.lock:
            key = (path, content_type)
            first = key not in self.seen
            self.seen.add(key)
            return first


def test_every_write_losing_its_first_answer_still_converges(bed: FaultBed, tmp_path: Path) -> None:  # noqa: F811
    first_writes = FirstWriteOfEach(bed.namespace)
    losing = KubeFaultProxy(bed.control_plane, lose_answer=first_writes).start()
    try:
        bed.operator(KUBECONFIG=str(losing.kubeconfig(tmp_path / "losing-kubeconfig")))
        objects = mirror_objects(bed, "lost", sessions=SESSIONS)
        bed.proxy.reset_counters()
        started = time.monotonic()
        apply_all(bed, objects)
        # An object kopf dropped is nudged by the resync once untouched for UNHANDLED_SECONDS (checked every
        # follow period); its reconcile then takes what any reconcile does: 60 s of slack for a busy machine.
        bound = UNHANDLED_SECONDS + FOLLOW_SECONDS + 60
        ready = wait_all_ready(bed, "lost", len(objects), timeout=bound)
        print(f"{len(objects)} objects Ready in {time.monotonic() - started:.0f} s; answers lost: {len(losing.lost)}")
        # Every object lost the answer of kopf's finalizer patch (a JSON patch), and every one was picked up
        # by the resync as dropped, not by luck.
        finalizer_patches = {path for _, path, kind in losing.lost if kind == "application/json-patch+json"}
        assert {path.rsplit("/", 1)[-1] for path in finalizer_patches} == {o["metadata"]["name"] for o in objects}
        log = bed.cluster.operator.log.read_text(errors="replace")
        stalled = {
            o["metadata"]["name"]
            for o in objects
            if f"stalled: {o['kind']} {bed.namespace}/{o['metadata']['name']} (generation" in log
        }
        assert stalled == {o["metadata"]["name"] for o in objects}, f"not nudged as dropped: {stalled}"

        created = mutating_calls(bed)
        assert created == Counter(
            {
                "CreateTrafficMirrorTarget": 1,
                "CreateTrafficMirrorFilter": 1,
                "CreateTrafficMirrorFilterRule": 3,
                SESSION_CREATE: SESSIONS,
            }
        ), f"an object was created more than once: {dict(created)}"
        assert_one_aws_resource_per_object(bed, ready)

        bed.proxy.reset_counters()
        time.sleep(2 * RESYNC_SECONDS)
        steady = mutating_calls(bed)
        assert not steady, f"mutating calls at steady state: {dict(steady)}"
        assert all(phase(o) == "Ready" for o in cluster_objects(bed, "lost"))

        # Deleting: the first write of each object from here on loses its answer too. Every object must
        # go, and nothing be left in AWS.
        with first_writes.lock:
            first_writes.seen.clear()
        lost_before = len(losing.lost)
        delete_all(bed)
        assert len(losing.lost) > lost_before, "no answer of a delete-time write was lost"
        assert not cluster_objects(bed, "lost")
    finally:
        for running in bed.operators:
            running.stop()
        bed.operator()
        losing.stop()
