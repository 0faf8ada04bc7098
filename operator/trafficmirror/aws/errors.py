"""AWS errors in our words: terminal (the spec must change) or retryable (time will fix it).

The classification is a pure function of the error code (and, for the one code AWS uses for two
different facts, its message), so it can be table-tested and read in one place. Codes are matched in
both spellings AWS uses (its docs and its API differ for some).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ErrorClass(enum.Enum):
    RETRYABLE = "retryable"  # throttling, 5xx, eventual consistency: retry with backoff
    TERMINAL = "terminal"  # the request is wrong: retrying the same thing cannot help
    NOT_FOUND = "not-found"  # the resource is gone: re-create or forget it
    IN_USE = "in-use"  # a delete that must wait for dependents
    UNSUPPORTED_INSTANCE = "unsupported-instance"  # NetworkInterfaceNotSupported
    QUOTA = "quota"  # a non-adjustable quota: terminal, with the quota named
    NOT_RUNNING = "not-running"  # the target's instance is stopped (or starting): terminal until it runs again


QUOTA_NAMES = {
    "TrafficMirrorSessionsPerInterfaceLimitExceeded": "at most 3 mirror sessions per source network interface",
    "TrafficMirrorSourcesPerTargetLimitExceeded": "at most 10 sources per network-interface target "
    "(100 on the largest instance sizes; use an NLB or GWLB endpoint target for more)",
    "TrafficMirrorFilterRuleLimitExceeded": "at most 10 rules per mirror filter",
    "TrafficMirrorSessionLimitExceeded": "at most 10,000 mirror sessions per account and region",
    "TrafficMirrorTargetLimitExceeded": "at most 10,000 mirror targets per account and region",
    "TrafficMirrorFilterLimitExceeded": "at most 10,000 mirror filters per account and region",
}
NOT_FOUND_CODES = {
    "InvalidTrafficMirrorSessionId.NotFound",
    "InvalidTrafficMirrorTargetId.NotFound",
    "InvalidTrafficMirrorFilterId.NotFound",
    "InvalidTrafficMirrorFilterRuleId.NotFound",
    # the spellings the published error table uses
    "InvalidTrafficMirrorSessionID.NotFound",
    "InvalidTrafficMirrorTargetID.NotFound",
    "InvalidTrafficMirrorFilterID.NotFound",
    "InvalidTrafficMirrorFilterRuleID.NotFound",
    "InvalidNetworkInterfaceID.NotFound",
    "InvalidNetworkInterfaceId.NotFound",
    "InvalidInstanceID.NotFound",
}
IN_USE_CODES = {"TrafficMirrorFilterInUse", "TrafficMirrorTargetInUseException", "TrafficMirrorTargetInUse"}
RETRYABLE_CODES = {
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "IncorrectState",  # e.g. an instance still stopping: the state will move on
    # A rule created by an attempt whose answer was lost, or seen late: the next pass reads it back.
    "TrafficMirrorFilterRuleAlreadyExists",
}
# InvalidTrafficMirrorTarget says both "this target is wrong" and "its instance is not running now"
# (stopped, e.g. to change its type, or still starting): the second is a fact of the world that changes.
INVALID_TARGET = "InvalidTrafficMirrorTarget"
NOT_RUNNING_STATES = ("stopped", "stopping", "pending", "shutting-down", "not running")


def classify(code: str, http_status: int | None = None, message: str = "") -> ErrorClass:
    if code == "NetworkInterfaceNotSupported":
        return ErrorClass.UNSUPPORTED_INSTANCE
    if code == INVALID_TARGET and any(state in message for state in NOT_RUNNING_STATES):
        return ErrorClass.NOT_RUNNING
    if code in QUOTA_NAMES or (code.endswith("LimitExceeded") and code != "RequestLimitExceeded"):
        return ErrorClass.QUOTA
    if code in NOT_FOUND_CODES or code.endswith(".NotFound"):
        return ErrorClass.NOT_FOUND
    if code in IN_USE_CODES:
        return ErrorClass.IN_USE
    if code in RETRYABLE_CODES or (http_status is not None and http_status >= 500):
        return ErrorClass.RETRYABLE
    return ErrorClass.TERMINAL


@dataclass
class AwsError(Exception):
    """An AWS API error, classified. `operation` is the EC2 action that failed."""

    operation: str
    code: str
    message: str
    error_class: ErrorClass

    def __str__(self) -> str:
        return f"{self.operation}: {self.code}: {self.message}"

    @property
    def quota(self) -> str | None:
        return QUOTA_NAMES.get(self.code)
