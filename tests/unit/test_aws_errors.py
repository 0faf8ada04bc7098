from __future__ import annotations

import pytest

from trafficmirror.aws.errors import ErrorClass, classify


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
        ("UnauthorizedOperation", 403, ErrorClass.TERMINAL),
    ],
)
def test_aws_error_codes_are_classified(code: str, http_status: int, expected: ErrorClass) -> None:
    assert classify(code, http_status) is expected
