"""One place for kopf's settings and the clients every handler shares (kept in `memo`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import kopf
import prometheus_client

from trafficmirror.aws.ec2 import INSTANCE_TYPE_TTL_SECONDS, Ec2Mirror
from trafficmirror.aws.elbv2 import LoadBalancers
from trafficmirror.aws.instance_support import load_support_table
from trafficmirror.aws.target_quotas import TargetQuotas
from trafficmirror.config import OperatorConfig
from trafficmirror.handlers.heap import release_free_heap
from trafficmirror.handlers.patching import patch_annotations
from trafficmirror.handlers.registration import (
    BINDINGS,
    FINALIZER,
    HANDLING,
    NUDGE_ANNOTATION,
    Binding,
    Tracked,
    nudge_value,
)
from trafficmirror.handlers.resync import ResyncLoop, Snapshot
from trafficmirror.metrics import AWS_CALLS
from trafficmirror.reconcile.common import ANNOTATION_PREFIX
from trafficmirror.reconcile.context import ReconcileContext

FOLLOW_SECONDS = 5.0  # how soon a session notices that its target or filter got a new AWS ID
# How long kopf waits for the watch to bring the version its own PATCH made (see `configure`).
CONSISTENCY_SECONDS = 60.0
# How long an object kopf has begun (its finalizer is on) may go untouched, no handler at it and no event,
# before the resync takes it as dropped: kopf's wait for the event of its own write, and a follow period.
UNHANDLED_SECONDS = CONSISTENCY_SECONDS + FOLLOW_SECONDS


def _observe(operation: str, result: str) -> None:
    AWS_CALLS.labels(operation, result).inc()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **indexes: Any) -> None:
    config = OperatorConfig()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own Events say what matters; kopf's would repeat them
    # A request caught by an apiserver restart can hang until its timeout, and with it that object's
    # worker: kopf's default (5 min) left sessions without a status for minutes after a restart.
    # 2 min still covers listing 10,000 objects of a kind on a slow apiserver.
    settings.networking.connect_timeout = 10
    settings.networking.request_timeout = 120
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.batching.error_delays = (1, 2, 5, 10, 30, 60)
    # After its own PATCH kopf waits for the watch to bring that version before it runs a handler on an
    # older event; past this wait it takes the older body as current. Its default (5 s) is shorter than
    # the watch's lag when thousands of objects change at once: an object created at the start of a burst
    # was then handled twice (its spec without kopf's own record of the first run, so a second create),
    # and an edit could be undone by its stale event and redone by the next. A newer event of the object
    # ends the wait at once; only a version the watch skips (a re-list) costs the whole wait.
    settings.persistence.consistency_timeout = CONSISTENCY_SECONDS
    # Events are posted by a bounded number of workers (thousands of objects changing at once would
    # otherwise hold thousands of posting tasks). kopf's per-object workers stay unlimited: a limit
    # there can deadlock with the indexes, which must see every object before any handler runs.
    settings.posting.worker_limit = config.worker_threads
    # boto3 is blocking: reconciles run in threads, enough of them for many objects at once.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=config.worker_threads, thread_name_prefix="reconcile")
    )
    overrides = config.support_overrides_file.read_text() if config.support_overrides_file else None
    clients: dict[str, Ec2Mirror] = {}

    def aws_for_region(region: str | None) -> Ec2Mirror:
        name = region or config.region
        if name not in clients:
            clients[name] = Ec2Mirror.connect(
                name,
                observe=_observe,
                max_attempts=config.aws_max_attempts,
                max_connections=config.worker_threads,
                pacing_scale=config.aws_rate_limit_scale,
                # A type read for one reconcile may be reused briefly, never for a good part of a period:
                # a resize must show in the status within the next period.
                instance_type_ttl_seconds=min(INSTANCE_TYPE_TTL_SECONDS, config.resync_seconds / 4),
            )
        return clients[name]

    balancers: dict[str, LoadBalancers] = {}

    def load_balancers_for_region(region: str | None) -> LoadBalancers:
        name = region or config.region
        if name not in balancers:
            balancers[name] = LoadBalancers.connect(name, max_attempts=config.aws_max_attempts)
        return balancers[name]

    aws_for_region(None)  # fail at start, not at the first object, if AWS settings are broken
    memo.config = config
    # Reconciles in progress at once (the others wait here, holding nothing but kopf's own state): a
    # burst of thousands of objects keeps a bounded working set, and the threads stay busy.
    memo.reconcile_slots = asyncio.Semaphore(2 * config.worker_threads)
    memo.settings = settings
    memo.context = ReconcileContext(
        aws_for_region=aws_for_region,
        support_table=load_support_table(overrides),
        cluster=config.cluster_name,
        load_balancers_for_region=load_balancers_for_region,
        price=TargetQuotas.packaged().price(config.usd_per_eni_hour),
    )
    HANDLING.keep_ended = UNHANDLED_SECONDS  # the resync's wait for a dropped object (ResyncLoop.unhandled_after)
    memo.resync_tasks = [
        asyncio.create_task(
            ResyncLoop(
                binding,
                Snapshot(aws_for_region),
                indexes,
                _nudger(settings, logger),
                period=config.resync_seconds,
                follow_period=FOLLOW_SECONDS,
                logger=logger,
            ).run(),
            name=f"resync {binding.api.plural}",
        )
        for binding in BINDINGS.values()
    ]
    # The memory a burst of objects freed goes back to the system, not only to the allocator.
    memo.resync_tasks.append(
        asyncio.create_task(release_free_heap(config.resync_seconds, logger), name="release free heap")
    )
    if config.metrics_port:
        prometheus_client.start_http_server(config.metrics_port)
        logger.info(f"metrics on :{config.metrics_port}/metrics")


def _nudger(
    settings: kopf.OperatorSettings, logger: logging.Logger
) -> Callable[[Binding, Tracked, str], Awaitable[None]]:
    """Asks kopf to reconcile one object: an annotation, seen by the change handler as an update."""

    async def nudge(binding: Binding, tracked: Tracked, why: str) -> None:
        annotations = {NUDGE_ANNOTATION: nudge_value(why)}
        await patch_annotations(settings, binding.api, tracked.namespace, tracked.name, annotations, logger)

    return nudge


@kopf.on.cleanup()
async def stop_resync(memo: kopf.Memo, **_: Any) -> None:
    for task in getattr(memo, "resync_tasks", []):
        task.cancel()
