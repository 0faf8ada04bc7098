from __future__ import annotations

import pytest

from trafficmirror.aws.errors import AwsError, ErrorClass, classify
from trafficmirror.handlers.apply import resync_action
from trafficmirror.reconcile.context import outcome_for_aws_error


@pytest.mark.parametrize(
    ("code", "http_status", "expected"),
    [
        ("NetworkInterfaceNotSupported", 400, ErrorClass.UNSUPPORTED_INSTANCE),
        ("RequestLimitExceeded", 503, ErrorClass.RETRYABLE),
        ("InternalError", 500, ErrorClass.RETRYABLE),
        ("SomethingNew", 503, ErrorClass.RETRYABLE),
        ("TrafficMirrorSessionsPerInterfaceLimitExceeded", 400, ErrorClass.QUOTA),
        ("TrafficMirrorSourcesPerTargetLimitExceeded", 400, ErrorClass.QUOTA),
        ("TrafficMirrorFilterRuleLimitExceeded", 400, ErrorClass.QUOTA),
        ("InvalidTrafficMirrorSessionId.NotFound", 400, ErrorClass.NOT_FOUND),
        ("InvalidTrafficMirrorTargetID.NotFound", 400, ErrorClass.NOT_FOUND),
        ("InvalidTrafficMirrorFilterRuleId.NotFound", 400, ErrorClass.NOT_FOUND),
        ("TrafficMirrorFilterInUse", 400, ErrorClass.IN_USE),
        ("TrafficMirrorTargetInUseException", 400, ErrorClass.IN_USE),
        ("TrafficMirrorFilterRuleAlreadyExists", 400, ErrorClass.RETRYABLE),
        ("InvalidParameterValue", 400, ErrorClass.TERMINAL),
        ("InvalidTrafficMirrorTarget", 400, ErrorClass.TERMINAL),
        ("InvalidTrafficMirrorTarget", 400, ErrorClass.NOT_RUNNING),  # with a message naming a stopped instance
        ("UnauthorizedOperation", 403, ErrorClass.TERMINAL),
    ],
)
def test_aws_error_codes_are_classified(code: str, http_status: int, expected: ErrorClass) -> None:
    message = STOPPED_TARGET if expected is ErrorClass.NOT_RUNNING else "The traffic mirror target is not valid."
    assert classify(code, http_status, message) is expected


# The emulator's words, modelled on AWS's: the target's network interface is on an instance that is not running.
STOPPED_TARGET = (
    "The traffic mirror target 'tmt-0123456789abcdef0' is not valid: network interface 'eni-0123456789abcdef0' is "
    "attached to instance 'i-0123456789abcdef0', which is {state}, not running."
)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        *[(STOPPED_TARGET.format(state=s), ErrorClass.NOT_RUNNING) for s in ("stopped", "stopping", "pending")],
        (
            "The traffic mirror target 'tmt-0123456789abcdef0' is not valid: its network interface "
            "'eni-0123456789abcdef0' does not exist.",
            ErrorClass.TERMINAL,
        ),
        ("", ErrorClass.TERMINAL),
    ],
)
def test_a_target_whose_instance_is_not_running_is_a_fact_that_changes(message: str, expected: ErrorClass) -> None:
    """A session created while its target's instance is stopped (stop, change type, start) fails, and is looked at
    again every resync, so it converges once the instance runs; a target that is wrong stays AwsRejected."""
    error_class = classify("InvalidTrafficMirrorTarget", 400, message)
    assert error_class is expected
    outcome = outcome_for_aws_error(
        AwsError("CreateTrafficMirrorSession", "InvalidTrafficMirrorTarget", message, error_class)
    )
    assert outcome.ready_reason == ("TargetNotRunning" if expected is ErrorClass.NOT_RUNNING else "AwsRejected")
    rechecked = resync_action(outcome.phase, outcome.ready_reason) == "reconcile"
    assert rechecked is (expected is ErrorClass.NOT_RUNNING)
