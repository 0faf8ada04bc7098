"""How long kopf waits before it runs a change handler again after AWS trouble.

kopf's retry count also counts the handler's waits (a dependency not ready yet), so a backoff keyed
on it grows large even when nothing failed before; a resource deleted outside while it was being
changed is news about the world, retried at once, never behind such a backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf
import pytest

from trafficmirror.aws.errors import AwsError, ErrorClass
from trafficmirror.handlers import apply
from trafficmirror.reconcile.common import Outcome


def _run(error: AwsError, retry: int) -> float | None:
    async def decide() -> tuple[Outcome | None, Mapping[str, Any]]:
        raise error

    body = kopf.Body({"metadata": {"uid": "u", "generation": 1}, "status": {}})
    with pytest.raises(kopf.TemporaryError) as raised:
        asyncio.run(
            apply.run("MirrorSession", decide, body=body, patch=kopf.Patch(), retry=retry, logger=logging.getLogger())
        )
    return raised.value.delay


@pytest.mark.parametrize("retry", [0, 1, 5, 10, 30])
def test_a_resource_deleted_outside_is_retried_at_once_whatever_the_retry_count(retry: int) -> None:
    code = "InvalidTrafficMirrorSessionId.NotFound"
    gone = AwsError("ModifyTrafficMirrorSession", code, "gone", ErrorClass.NOT_FOUND)
    assert _run(gone, retry) == apply.NOT_FOUND_RETRY_SECONDS


def test_throttling_still_backs_off() -> None:
    throttled = AwsError("CreateTrafficMirrorSession", "RequestLimitExceeded", "slow down", ErrorClass.RETRYABLE)
    delays = [_run(throttled, 10) for _ in range(20)]
    assert all(d is not None and 2.0 <= d <= apply.MAX_BACKOFF_SECONDS for d in delays)
    assert max(d for d in delays if d is not None) > 2 * apply.NOT_FOUND_RETRY_SECONDS
