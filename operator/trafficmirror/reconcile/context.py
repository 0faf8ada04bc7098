"""What a reconciler needs besides the object: the AWS adapter and what the cluster tells us."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from trafficmirror.aws.ec2 import Ec2Mirror
from trafficmirror.aws.errors import AwsError, ErrorClass
from trafficmirror.aws.instance_support import SupportTable
from trafficmirror.reconcile.common import Outcome, failed


class RetryLater(Exception):
    """Time will fix it (throttling, 5xx, a dependency not ready): the handler backs off and retries."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass
class ReconcileContext:
    aws_for_region: Callable[[str | None], Ec2Mirror]
    support_table: SupportTable
    cluster: str
    node_provider_ids: dict[str, str] = field(default_factory=dict)
    # Instance types AWS itself refused (NetworkInterfaceNotSupported): authoritative over the table.
    remembered_rejections: set[str] = field(default_factory=set)


def outcome_for_aws_error(error: AwsError, **status_fields: Any) -> Outcome:
    """Terminal errors become a Failed outcome naming AWS's words; the rest is retried."""
    if error.error_class is ErrorClass.QUOTA:
        return failed(
            "QuotaExceeded",
            f"AWS quota reached ({error.quota or error.code}): {error.message}",
            **status_fields,
        )
    if error.error_class in (ErrorClass.TERMINAL, ErrorClass.UNSUPPORTED_INSTANCE):
        return failed("AwsRejected", f"{error.operation} was rejected: {error.code}: {error.message}", **status_fields)
    raise RetryLater(str(error), delay=10)


Resource = TypeVar("Resource")


def describe_one(describe: Callable[[list[str]], list[Resource]], aws_id: str) -> Resource | None:
    """One resource by its AWS ID, or None when AWS says it does not exist."""
    try:
        found = describe([aws_id])
    except AwsError as error:
        if error.error_class is ErrorClass.NOT_FOUND:
            return None
        raise
    return found[0] if found else None
