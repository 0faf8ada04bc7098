"""kopf glue: importing this package registers every handler. Decisions live in trafficmirror.reconcile."""

from trafficmirror.handlers import filter, indexes, session, startup, target  # noqa: F401
