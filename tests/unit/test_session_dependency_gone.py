"""A session whose target or filter was deleted in AWS waits for it (a short, steady retry), it does not back off
as from an AWS failure: the chaos test saw such sessions miss the two-resync-period bound by a 10 s+ backoff."""

from __future__ import annotations

import pytest

from trafficmirror.aws.errors import AwsError, classify
from trafficmirror.reconcile.context import (
    AWS_RETRY_SECONDS,
    NOT_FOUND_RETRY_SECONDS,
    RetryLater,
    outcome_for_aws_error,
)
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


@pytest.mark.parametrize(
    ("code", "reason", "delay"),
    [
        # the object's own resource went between the read and the write: re-created at the next pass, soon
        ("InvalidTrafficMirrorSessionId.NotFound", "NotFound", NOT_FOUND_RETRY_SECONDS),
        ("InvalidTrafficMirrorFilterRuleId.NotFound", "NotFound", NOT_FOUND_RETRY_SECONDS),
        # AWS is busy or failing: back off
        ("RequestLimitExceeded", "AwsRetrying", AWS_RETRY_SECONDS),
        ("InternalError", "AwsRetrying", AWS_RETRY_SECONDS),
    ],
)
def test_retry_delays_by_error_class(code: str, reason: str, delay: float) -> None:
    error = AwsError(
        "ModifyTrafficMirrorSession", code, "message", classify(code, 500 if code == "InternalError" else 400)
    )
    with pytest.raises(RetryLater) as raised:
        outcome_for_aws_error(error)
    assert raised.value.delay == delay
    assert raised.value.outcome is not None and raised.value.outcome.ready_reason == reason
