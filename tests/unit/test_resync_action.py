"""What the drift timer does with an object, by its status: a table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from trafficmirror.handlers.apply import resync_action

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
PERIOD = 60.0


def _body(phase: str | None, reason: str | None = None, since: str = "2026-11-26T11:59:30Z", **meta: Any) -> Any:
    status: dict[str, Any] = {}
    if phase:
        status = {"phase": phase, "conditions": [{"type": "Ready", "reason": reason, "lastTransitionTime": since}]}
    return {"metadata": {"name": "x", **meta}, "status": status}


@pytest.mark.parametrize(
    ("body", "action"),
    [
        (_body("Ready", "Ready"), "compare"),
        (_body("Failed", "UnsupportedInstanceType"), "reconcile"),
        (_body("Failed", "QuotaExceeded"), "reconcile"),
        (_body("Failed", "AwsRejected"), "skip"),
        (_body("Pending", "Creating"), "skip"),
        (_body("Pending", "Creating", since="2026-11-26T11:58:30Z"), "reconcile"),
        (_body("Pending", "WaitingForTarget"), "skip"),
        (_body("Pending", "WaitingForTarget", since="2026-11-26T11:57:00Z"), "reconcile"),
        (_body(None), "reconcile"),
        (_body("Ready", "Ready", deletionTimestamp="2026-11-26T11:00:00Z"), "skip"),
    ],
    ids=[
        "ready: compare with the snapshot",
        "unsupported type: look again",
        "quota: a fact of the world, looked at again",
        "rejected: needs a spec change",
        "a fresh create: the handlers carry it out",
        "a create left for a period: carry it out",
        "fresh pending: the handlers retry it",
        "pending for two periods: nobody moves it",
        "no status yet",
        "being deleted",
    ],
)
def test_resync_action(body: Any, action: str) -> None:
    assert resync_action(body, PERIOD, NOW) == action
