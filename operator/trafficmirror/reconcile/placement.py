"""Which target of a pool a source is mirrored to: a pure decision, and the book that keeps
concurrent choices of one operator from all landing on the same target.

The order, per source:

1. an ENI target in the source's Availability Zone with room: mirrored traffic that crosses zones
   is billed as inter-AZ data transfer, and an ENI target is the cheapest receiver;
2. a Network Load Balancer or Gateway Load Balancer endpoint target: AWS sets no sources-per-target
   quota on them, and the load balancer reaches the capture nodes behind it from its node in the
   source's zone — the pool AWS made for the overflow;
3. an ENI target in another (or an unknown) zone with room: it works, at the data-transfer price.

Within a tier the least loaded target wins (sources used of its quota, then fewer sources, then the
name), and an ENI target is never given more sources than AWS's sources-per-target quota of its
instance type (``aws/target_quotas.yaml``). A source already on a target of the best tier stays
there: moving costs a ModifyTrafficMirrorSession and splits the capture across nodes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from trafficmirror.aws.target_quotas import TargetKind, TargetQuotas

NETWORK_INTERFACE = "NetworkInterface"
_KINDS: dict[str, TargetKind] = {
    NETWORK_INTERFACE: "network-interface",
    "NetworkLoadBalancer": "network-load-balancer",
    "GatewayLoadBalancerEndpoint": "gateway-load-balancer-endpoint",
}
# The TargetChosen condition's reasons.
SAME_ZONE = "SameZone"
LOAD_BALANCER = "LoadBalancerOverflow"
OTHER_ZONE = "OtherZone"
NO_ROOM = "NoTargetWithRoom"
_TIER_REASONS = (SAME_ZONE, LOAD_BALANCER, OTHER_ZONE)


@dataclass(frozen=True)
class Candidate:
    """A Ready MirrorTarget of the pool, and the source ENIs mirrored to it now (besides this source)."""

    name: str
    target_id: str
    endpoint_type: str  # NetworkInterface | NetworkLoadBalancer | GatewayLoadBalancerEndpoint
    instance_type: str | None = None
    availability_zone: str | None = None
    sources: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Choice:
    target: Candidate | None  # None: no target of the pool has room
    reason: str
    message: str


def quota_of(candidate: Candidate, quotas: TargetQuotas) -> int | None:
    kind = _KINDS.get(candidate.endpoint_type, "network-interface")
    return quotas.sources_per_target(kind, candidate.instance_type).limit


def has_room(candidate: Candidate, source_eni: str, quotas: TargetQuotas) -> bool:
    """Whether AWS takes `source_eni` on this target: a source already on it costs nothing more."""
    limit = quota_of(candidate, quotas)
    return limit is None or source_eni in candidate.sources or len(candidate.sources) < limit


def tier(candidate: Candidate, source_az: str | None) -> int:
    """0 same zone, 1 load balancer, 2 another or an unknown zone (see the module's docstring)."""
    if candidate.endpoint_type != NETWORK_INTERFACE:
        return 1
    if source_az is None:  # nothing to prefer: every ENI target is as near as the next
        return 0
    return 0 if candidate.availability_zone == source_az else 2


def _load(candidate: Candidate, source_eni: str, quotas: TargetQuotas) -> tuple[float, int, str]:
    others = len(candidate.sources - {source_eni})
    limit = quota_of(candidate, quotas)
    return (others / limit if limit else 0.0, others, candidate.name)


def choose_target(
    source_eni: str,
    source_az: str | None,
    candidates: Iterable[Candidate],
    quotas: TargetQuotas,
    *,
    current: str | None = None,
    exclude: frozenset[str] = frozenset(),
) -> Choice:
    """The target for one source. `current` is the target ID the source uses now; `exclude` are
    target IDs AWS just refused as full (TrafficMirrorSourcesPerTargetLimitExceeded)."""
    pool = [c for c in candidates if c.target_id not in exclude]
    open_ = [c for c in pool if has_room(c, source_eni, quotas)]
    if not open_:
        full = ", ".join(f"{c.name} ({len(c.sources)} of {quota_of(c, quotas)})" for c in pool) or "none Ready"
        refused = f"; AWS refused {len(exclude)} as full" if exclude else ""
        return Choice(None, NO_ROOM, f"no target of the pool has room for {source_eni}: {full}{refused}")
    best_tier = min(tier(c, source_az) for c in open_)
    in_tier = [c for c in open_ if tier(c, source_az) == best_tier]
    kept = next((c for c in in_tier if c.target_id == current), None)
    chosen = kept or min(in_tier, key=lambda c: _load(c, source_eni, quotas))
    return Choice(chosen, _TIER_REASONS[best_tier], _explain(chosen, source_eni, source_az, quotas, kept is not None))


def _explain(chosen: Candidate, source_eni: str, source_az: str | None, quotas: TargetQuotas, kept: bool) -> str:
    used = len(chosen.sources | {source_eni})
    limit = quota_of(chosen, quotas)
    load = f"{used} of {limit} sources" if limit is not None else f"{used} sources, no per-target quota"
    zone = source_az or "an unknown zone"
    if chosen.endpoint_type != NETWORK_INTERFACE:
        where = f"a {chosen.endpoint_type} target: no ENI target in {zone} has room"
    elif source_az is None or chosen.availability_zone == source_az:
        where = f"an ENI target in the source's zone {zone}"
    else:
        where = (
            f"an ENI target in {chosen.availability_zone or 'an unknown zone'}, not the source's {zone}: "
            "no target nearer has room (cross-zone data transfer is billed)"
        )
    verb = "stays on" if kept else "chose"
    return f"{verb} {chosen.name} ({chosen.target_id}), {where}; {load}"


@dataclass
class PlacementBook:
    """The choices this operator made and AWS has not yet shown in the sessions' status: without it,
    sources reconciled at the same moment would all see the same empty target. Thread-safe (the
    reconcilers run in threads). `refused` remembers for a while the targets AWS called full."""

    refusal_seconds: float = 60.0
    _claims: dict[str, tuple[str, str]] = field(default_factory=dict)  # session uid -> (target ID, source ENI)
    _refused: dict[str, float] = field(default_factory=dict)  # target ID -> when AWS refused it
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def choose(
        self,
        uid: str,
        source_eni: str,
        source_az: str | None,
        candidates: Iterable[Candidate],
        quotas: TargetQuotas,
        *,
        current: str | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> Choice:
        """`choose_target` over the candidates' sources plus this book's claims, and the claim made."""
        with self._lock:
            now = time.monotonic()
            recent = frozenset(t for t, at in self._refused.items() if now - at < self.refusal_seconds)
            claimed: dict[str, set[str]] = {}
            for other, (target_id, eni) in self._claims.items():
                if other != uid:
                    claimed.setdefault(target_id, set()).add(eni)
            seen = [
                Candidate(
                    c.name,
                    c.target_id,
                    c.endpoint_type,
                    c.instance_type,
                    c.availability_zone,
                    c.sources | claimed.get(c.target_id, set()),
                )
                for c in candidates
            ]
            choice = choose_target(
                source_eni, source_az, seen, quotas, current=current, exclude=exclude | (recent - {current or ""})
            )
            if choice.target is not None:
                self._claims[uid] = (choice.target.target_id, source_eni)
            else:
                self._claims.pop(uid, None)
            return choice

    def refused(self, target_id: str, uid: str) -> None:
        with self._lock:
            self._refused[target_id] = time.monotonic()
            if self._claims.get(uid, ("", ""))[0] == target_id:
                del self._claims[uid]

    def release(self, uid: str) -> None:
        with self._lock:
            self._claims.pop(uid, None)


def sources_by_target(placements: Mapping[str, tuple[str, str]], excluding_uid: str) -> dict[str, frozenset[str]]:
    """session uid -> (target ID, source ENI), as the cluster shows them, into target ID -> source ENIs."""
    found: dict[str, set[str]] = {}
    for uid, (target_id, eni) in placements.items():
        if uid != excluding_uid and target_id and eni:
            found.setdefault(target_id, set()).add(eni)
    return {target_id: frozenset(enis) for target_id, enis in found.items()}
