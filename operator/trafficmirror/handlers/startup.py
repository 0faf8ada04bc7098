"""One place for kopf's settings and the clients every handler shares (kept in `memo`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

import kopf
import prometheus_client

from trafficmirror.aws.ec2 import Ec2Mirror
from trafficmirror.aws.elbv2 import LoadBalancers
from trafficmirror.aws.instance_support import load_support_table
from trafficmirror.config import OperatorConfig
from trafficmirror.handlers.resync import Snapshot
from trafficmirror.metrics import AWS_CALLS
from trafficmirror.reconcile.common import ANNOTATION_PREFIX
from trafficmirror.reconcile.context import ReconcileContext

FINALIZER = f"{ANNOTATION_PREFIX}/finalizer"


def _observe(operation: str, result: str) -> None:
    AWS_CALLS.labels(operation, result).inc()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    config = OperatorConfig()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own Events say what matters; kopf's would repeat them
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.batching.error_delays = (1, 2, 5, 10, 30, 60)
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
                name, observe=_observe, max_attempts=config.aws_max_attempts, max_connections=config.worker_threads
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
    memo.context = ReconcileContext(
        aws_for_region=aws_for_region,
        support_table=load_support_table(overrides),
        cluster=config.cluster_name,
        load_balancers_for_region=load_balancers_for_region,
    )
    memo.snapshot = Snapshot(aws_for_region, period=config.resync_seconds)
    if config.metrics_port:
        prometheus_client.start_http_server(config.metrics_port)
        logger.info(f"metrics on :{config.metrics_port}/metrics")
