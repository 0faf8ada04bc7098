"""The operator's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RECONCILES = Counter("trafficmirror_reconciles_total", "Reconciles by kind and result", ["kind", "result"])
AWS_CALLS = Counter("trafficmirror_aws_calls_total", "EC2 API calls by operation and result", ["operation", "result"])
RESOURCES = Gauge("trafficmirror_resources", "Custom resources by kind and phase", ["kind", "phase"])
RESYNC_DESCRIBES = Counter(
    "trafficmirror_resync_describe_calls_total", "Batched Describe calls made by the resync", ["kind"]
)
RESYNC_NUDGES = Counter(
    "trafficmirror_resync_nudges_total", "Objects the resync handed to a reconcile, by kind and why", ["kind", "why"]
)
