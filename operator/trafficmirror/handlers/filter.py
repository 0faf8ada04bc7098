"""MirrorFilter: its reconciler, registered; a delete waits for the sessions that use it."""

from __future__ import annotations

from trafficmirror.api import MIRROR_FILTER
from trafficmirror.handlers.indexes import users_facts
from trafficmirror.handlers.registration import Binding, register
from trafficmirror.reconcile.kinds import FILTER

BINDING = register(Binding(MIRROR_FILTER, FILTER, users_facts("filter"), uses_indexes=("session_users",)))
