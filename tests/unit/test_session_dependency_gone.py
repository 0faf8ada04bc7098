"""A session whose target or filter was deleted in AWS waits for it (a short, steady retry), it does not back off
as from an AWS failure: the chaos test saw such sessions miss the two-resync-period bound by a 10 s+ backoff."""

from __future__ import annotations

import pytest

from trafficmirror.aws.errors import AwsError, classify
from trafficmirror.reconcile.session import DEPENDENCY_RETRY_SECONDS, _dependency_gone


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("InvalidTrafficMirrorTargetId.NotFound", "WaitingForTarget"),
        ("InvalidTrafficMirrorTargetID.NotFound", "WaitingForTarget"),
        ("InvalidTrafficMirrorFilterId.NotFound", "WaitingForFilter"),
        ("InvalidTrafficMirrorFilterID.NotFound", "WaitingForFilter"),
        ("InvalidTrafficMirrorSessionId.NotFound", None),  # the session itself: re-created by the reconcile
        ("InvalidNetworkInterfaceID.NotFound", None),
        ("RequestLimitExceeded", None),
        ("InvalidParameterValue", None),
    ],
)
def test_a_gone_target_or_filter_is_waited_for(code: str, reason: str | None) -> None:
    error = AwsError("CreateTrafficMirrorSession", code, "does not exist", classify(code, 400))
    outcome = _dependency_gone(error, "capture", "web")
    if reason is None:
        assert outcome is None
        return
    assert outcome is not None
    assert outcome.ready_reason == reason
    assert outcome.retry_after == DEPENDENCY_RETRY_SECONDS
    assert ("capture" if reason == "WaitingForTarget" else "web") in outcome.conditions[0].message
