"""The operator's settings, all from environment variables (the Helm chart sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class OperatorConfig:
    region: str = field(
        default_factory=lambda: os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    )
    cluster_name: str = field(default_factory=lambda: os.environ.get("TRAFFICMIRROR_CLUSTER_NAME", "default"))
    # Drift check: one batched Describe per kind per period, whatever the number of resources.
    resync_seconds: float = field(default_factory=lambda: _env_float("TRAFFICMIRROR_RESYNC_SECONDS", 60))
    # A YAML file (a mounted ConfigMap) of allow/deny overrides to the instance-type support table.
    support_overrides_file: Path | None = field(
        default_factory=lambda: Path(p) if (p := os.environ.get("TRAFFICMIRROR_SUPPORT_OVERRIDES")) else None
    )
    metrics_port: int = field(default_factory=lambda: int(os.environ.get("TRAFFICMIRROR_METRICS_PORT", "8080")))
    aws_max_attempts: int = field(default_factory=lambda: int(os.environ.get("TRAFFICMIRROR_AWS_MAX_ATTEMPTS", "8")))
    # Client-side pacing to EC2's documented request rate limits, as a multiple of them (an account with raised
    # limits sets more than 1; 0 switches pacing off).
    aws_rate_limit_scale: float = field(default_factory=lambda: _env_float("TRAFFICMIRROR_AWS_RATE_LIMIT_SCALE", 1.0))
    worker_threads: int = field(default_factory=lambda: int(os.environ.get("TRAFFICMIRROR_WORKER_THREADS", "32")))
    # The price per ENI-hour of mirroring for status.estimatedCost: unset, AWS's published price (with its
    # source); set for another region's price or a discount.
    usd_per_eni_hour: float | None = field(
        default_factory=lambda: float(p) if (p := os.environ.get("TRAFFICMIRROR_USD_PER_ENI_HOUR")) else None
    )
    # How often a time-boxed session's status says anew how much time it has left (and its cost so far).
    timebox_refresh_seconds: float = field(
        default_factory=lambda: _env_float("TRAFFICMIRROR_TIMEBOX_REFRESH_SECONDS", 60)
    )


RESYNC_SECONDS = OperatorConfig().resync_seconds  # kopf timers take their interval at import
