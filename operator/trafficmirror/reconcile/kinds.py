"""The three reconcilers, by kind: what the handlers register, one parameterised set per kind."""

from __future__ import annotations

from trafficmirror.reconcile.filter import FilterReconciler
from trafficmirror.reconcile.session import SessionReconciler
from trafficmirror.reconcile.target import TargetReconciler

TARGET = TargetReconciler()
FILTER = FilterReconciler()
SESSION = SessionReconciler()
