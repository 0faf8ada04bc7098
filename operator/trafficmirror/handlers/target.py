"""MirrorTarget: its reconciler, registered; a delete waits for the sessions that use it."""

from __future__ import annotations

from trafficmirror.api import MIRROR_TARGET
from trafficmirror.handlers.indexes import users_facts
from trafficmirror.handlers.registration import Binding, register
from trafficmirror.reconcile.kinds import TARGET

# service_load_balancers: a serviceRef target's load-balancer hostname (apply.context_for).
BINDING = register(
    Binding(MIRROR_TARGET, TARGET, users_facts("target"), uses_indexes=("session_users", "service_load_balancers"))
)
