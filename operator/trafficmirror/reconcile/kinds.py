"""The three reconcilers, by kind: what the handlers register, one parameterised set per kind.

Typed as the seam's Protocol, so that mypy proves each implements it."""

from __future__ import annotations

from trafficmirror.api import (
    MirrorFilterSpec,
    MirrorFilterStatus,
    MirrorSessionSpec,
    MirrorSessionStatus,
    MirrorTargetSpec,
    MirrorTargetStatus,
)
from trafficmirror.aws.ec2 import AwsFilter, AwsSession, AwsTarget
from trafficmirror.reconcile.filter import FilterReconciler
from trafficmirror.reconcile.observed import Observed
from trafficmirror.reconcile.seam import Reconciler
from trafficmirror.reconcile.session import SessionReconciler
from trafficmirror.reconcile.target import TargetReconciler

TARGET: Reconciler[MirrorTargetSpec, MirrorTargetStatus, Observed[AwsTarget]] = TargetReconciler()
FILTER: Reconciler[MirrorFilterSpec, MirrorFilterStatus, Observed[AwsFilter]] = FilterReconciler()
SESSION: Reconciler[MirrorSessionSpec, MirrorSessionStatus, Observed[AwsSession]] = SessionReconciler()
