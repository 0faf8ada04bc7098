"""kopf glue: importing this package registers every handler. Decisions live in trafficmirror.reconcile."""

from trafficmirror.handlers import bodies as bodies
from trafficmirror.handlers import filter as filter
from trafficmirror.handlers import indexes as indexes
from trafficmirror.handlers import session as session
from trafficmirror.handlers import startup as startup
from trafficmirror.handlers import target as target
from trafficmirror.handlers import timebox as timebox
from trafficmirror.handlers import workload as workload

bodies.install()
