"""What the batched resync does with an object, by its status: a table."""

from __future__ import annotations

import pytest

from trafficmirror.handlers.apply import resync_action


@pytest.mark.parametrize(
    ("phase", "reason", "action"),
    [
        ("Ready", "Ready", "compare"),
        ("Failed", "UnsupportedInstanceType", "reconcile"),
        ("Failed", "QuotaExceeded", "reconcile"),
        ("Failed", "AwsRejected", "skip"),
        ("Failed", "InvalidSpec", "skip"),
        ("Pending", "Creating", "skip"),
        ("Pending", "WaitingForTarget", "skip"),
        ("Deleting", "WaitingForSessions", "skip"),
        ("Completed", "Completed", "skip"),
        (None, None, "skip"),
    ],
    ids=[
        "ready: compare with the shared Describe",
        "unsupported type: the instance may have been resized",
        "quota: a quota frees when other resources go",
        "rejected: needs a spec change",
        "invalid stored spec: needs a spec change",
        "a create in progress: kopf retries it",
        "waiting for a dependency: kopf retries it",
        "being deleted: the delete handler's",
        "a time-boxed session whose time is over: never compared, never re-created",
        "never handled yet: the change handler's",
    ],
)
def test_resync_action(phase: str | None, reason: str | None, action: str) -> None:
    assert resync_action(phase, reason) == action
