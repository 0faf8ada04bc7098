"""Runs a reconciler the way the handlers do, against the in-memory AWS: parse the object, reconcile,
write the outcome into status and annotations, and go again while it asks to come back at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.unit.fake_aws import FakeAws
from trafficmirror.aws.instance_support import load_support_table
from trafficmirror.reconcile.common import Outcome, Owner, merge_conditions
from trafficmirror.reconcile.context import ReconcileContext, RetryLater
from trafficmirror.reconcile.seam import ClusterFacts, Reconciler, Request, parse_request

CLUSTER = "unit"


def context(aws: FakeAws, **changes: Any) -> ReconcileContext:
    return ReconcileContext(aws_for_region=aws, support_table=load_support_table(), cluster=CLUSTER, **changes)


@dataclass
class Obj:
    """A custom resource as the apiserver stores it: spec, status, annotations."""

    reconciler: Reconciler[Any, Any, Any]
    spec: dict[str, Any]
    name: str = "obj"
    uid: str = "0b6cbd2e-6f3e-4a7e-9a55-3f1f3c5f8a01"
    status: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    facts: ClusterFacts = field(default_factory=ClusterFacts)
    outcomes: list[Outcome] = field(default_factory=list)
    generation: int = 1
    created_at: datetime | None = None  # metadata.creationTimestamp

    @property
    def owner(self) -> Owner:
        return Owner(self.reconciler.kind, "default", self.name, self.uid, self.generation, CLUSTER, self.created_at)

    def request(self) -> Request[Any, Any]:
        parsed = parse_request(self.reconciler, self.owner, self.spec, self.status, self.annotations, self.facts)
        assert isinstance(parsed, Request), parsed
        return parsed

    def write(self, outcome: Outcome) -> Outcome:
        self.outcomes.append(outcome)
        self.status["phase"] = outcome.phase.value
        self.status["observedGeneration"] = self.generation
        self.status["conditions"] = merge_conditions(
            self.status.get("conditions", []), outcome.conditions, 1, clear=outcome.clear_conditions
        )
        for key, value in outcome.status_fields.items():
            if value is None:
                self.status.pop(key, None)
            else:
                self.status[key] = value
        for key, annotation in outcome.annotations.items():
            if annotation is None:
                self.annotations.pop(key, None)
            else:
                self.annotations[key] = annotation
        return outcome

    def reconcile(self, ctx: ReconcileContext, rounds: int = 4) -> Outcome:
        """Reconcile until the outcome does not ask to come back at once (a create takes two)."""
        for _ in range(rounds):
            try:
                outcome = self.write(self.reconciler.reconcile(self.request(), ctx))
            except RetryLater as retry:
                assert retry.outcome is not None, "a retried failure must reach status"
                return self.write(retry.outcome)
            if outcome.retry_after != 0:
                return outcome
        return outcome

    def delete(self, ctx: ReconcileContext) -> Outcome | None:
        outcome = self.reconciler.delete(self.request(), ctx)
        return self.write(outcome) if outcome is not None else None

    @property
    def reason(self) -> str:
        ready = next(c for c in self.status["conditions"] if c["type"] == "Ready")
        return str(ready["reason"])

    def condition(self, kind: str) -> dict[str, Any] | None:
        return next((c for c in self.status.get("conditions", []) if c["type"] == kind), None)
