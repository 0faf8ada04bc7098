"""Choosing a target of a pool per source: the table of cases, and the invariants over random pools."""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trafficmirror.aws.target_quotas import TargetQuotas
from trafficmirror.reconcile.placement import (
    LOAD_BALANCER,
    NO_ROOM,
    OTHER_ZONE,
    SAME_ZONE,
    Candidate,
    PlacementBook,
    choose_target,
    has_room,
    quota_of,
    tier,
)

QUOTAS = TargetQuotas.packaged()
AZ_A, AZ_B = "us-east-1a", "us-east-1b"


def eni_target(name: str, az: str | None, instance_type: str = "c5.large", sources: int = 0) -> Candidate:
    return Candidate(
        name,
        f"tmt-{name}",
        "NetworkInterface",
        instance_type,
        az,
        frozenset(f"eni-{name}-{i}" for i in range(sources)),
    )


def nlb_target(name: str, sources: int = 0) -> Candidate:
    return Candidate(
        name, f"tmt-{name}", "NetworkLoadBalancer", None, None, frozenset(f"eni-{name}-{i}" for i in range(sources))
    )


@pytest.mark.parametrize(
    ("case", "source_az", "pool", "current", "exclude", "chosen", "reason"),
    [
        ("same zone first", AZ_A, [eni_target("b", AZ_B), eni_target("a", AZ_A, sources=9)], None, (), "a", SAME_ZONE),
        (
            "least loaded in the zone, by share of the quota",
            AZ_A,
            # 30 of 100 on the large type is less loaded than 5 of 10.
            [eni_target("small", AZ_A, sources=5), eni_target("large", AZ_A, "m5.24xlarge", sources=30)],
            None,
            (),
            "large",
            SAME_ZONE,
        ),
        (
            "the zone full: the load balancer before crossing zones",
            AZ_A,
            [eni_target("a", AZ_A, sources=10), eni_target("b", AZ_B), nlb_target("nlb", sources=500)],
            None,
            (),
            "nlb",
            LOAD_BALANCER,
        ),
        (
            "no load balancer: another zone",
            AZ_A,
            [eni_target("a", AZ_A, sources=10), eni_target("b", AZ_B, sources=3)],
            None,
            (),
            "b",
            OTHER_ZONE,
        ),
        (
            "a source on a full target is already counted: it stays",
            AZ_A,
            [eni_target("a", AZ_A, sources=10), eni_target("a2", AZ_A)],
            "tmt-a",
            (),
            "a",
            SAME_ZONE,
        ),
        (
            "stays on its target of the best tier, though another is emptier",
            AZ_A,
            [eni_target("a", AZ_A, sources=6), eni_target("a2", AZ_A, sources=1)],
            "tmt-a",
            (),
            "a",
            SAME_ZONE,
        ),
        (
            "leaves the load balancer when its zone has room again",
            AZ_A,
            [eni_target("a", AZ_A, sources=4), nlb_target("nlb", sources=5)],
            "tmt-nlb",
            (),
            "a",
            SAME_ZONE,
        ),
        (
            "a target AWS called full is skipped",
            AZ_A,
            [eni_target("a", AZ_A, sources=2), eni_target("a2", AZ_A, sources=8)],
            None,
            ("tmt-a",),
            "a2",
            SAME_ZONE,
        ),
        (
            "source zone unknown: every ENI target is as near",
            None,
            [eni_target("a", AZ_A, sources=3), eni_target("b", AZ_B, sources=1), nlb_target("nlb")],
            None,
            (),
            "b",
            SAME_ZONE,
        ),
        (
            "unknown target type: the smaller quota",
            AZ_A,
            [eni_target("a", AZ_A, instance_type="", sources=10), eni_target("b", AZ_B)],
            None,
            (),
            "b",
            OTHER_ZONE,
        ),
        (
            "all full",
            AZ_A,
            [eni_target("a", AZ_A, sources=10), eni_target("b", AZ_B, sources=10)],
            None,
            (),
            None,
            NO_ROOM,
        ),
        ("empty pool", AZ_A, [], None, (), None, NO_ROOM),
    ],
)
def test_choice_table(
    case: str,
    source_az: str | None,
    pool: list[Candidate],
    current: str | None,
    exclude: tuple[str, ...],
    chosen: str | None,
    reason: str,
) -> None:
    pool = [
        Candidate(c.name, c.target_id, c.endpoint_type, c.instance_type or None, c.availability_zone, c.sources)
        for c in pool
    ]
    source = "eni-a-0" if current == "tmt-a" else "eni-new"
    choice = choose_target(source, source_az, pool, QUOTAS, current=current, exclude=frozenset(exclude))
    assert (choice.target.name if choice.target else None) == chosen, case
    assert choice.reason == reason, case
    assert choice.message


def test_the_message_says_where_and_how_full() -> None:
    choice = choose_target("eni-x", AZ_A, [eni_target("a", AZ_A, sources=9), eni_target("b", AZ_B)], QUOTAS)
    assert "tmt-a" in choice.message and "us-east-1a" in choice.message and "10 of 10 sources" in choice.message
    across = choose_target("eni-x", AZ_A, [eni_target("a", AZ_A, sources=10), eni_target("b", AZ_B)], QUOTAS)
    assert "us-east-1b" in across.message and "cross-zone" in across.message


# --- invariants over random pools, sources placed one after another --------------------------------


@st.composite
def pools(draw: st.DrawFn) -> tuple[list[Candidate], list[tuple[str, str | None]]]:
    zones = [AZ_A, AZ_B, "us-east-1c"]
    targets = [
        Candidate(
            f"t{i}",
            f"tmt-{i}",
            "NetworkInterface",
            draw(st.sampled_from(["c5.large", "t3.small", "m5.24xlarge", "m5.large"])),
            draw(st.sampled_from(zones)),
        )
        for i in range(draw(st.integers(0, 5)))
    ]
    targets += [
        Candidate(f"lb{i}", f"tmt-lb{i}", draw(st.sampled_from(["NetworkLoadBalancer", "GatewayLoadBalancerEndpoint"])))
        for i in range(draw(st.integers(0, 1)))
    ]
    sources = [(f"eni-s{i}", draw(st.sampled_from([*zones, None]))) for i in range(draw(st.integers(1, 140)))]
    return targets, sources


def place_all(
    targets: list[Candidate], sources: list[tuple[str, str | None]]
) -> tuple[dict[str, Candidate], list[tuple[str, str | None, list[Candidate], Candidate | None]]]:
    """Each source in turn, the loads updated as AWS would: (source, zone, the pool it saw, the choice)."""
    by_id = {c.target_id: c for c in targets}
    log = []
    for eni, zone in sources:
        seen = list(by_id.values())
        choice = choose_target(eni, zone, seen, QUOTAS)
        log.append((eni, zone, seen, choice.target))
        if choice.target is not None:
            chosen = by_id[choice.target.target_id]
            by_id[chosen.target_id] = Candidate(
                chosen.name,
                chosen.target_id,
                chosen.endpoint_type,
                chosen.instance_type,
                chosen.availability_zone,
                chosen.sources | {eni},
            )
    return by_id, log


@settings(max_examples=300, deadline=None, derandomize=True)
@given(pools())
def test_no_target_is_ever_given_more_sources_than_its_quota(
    pool: tuple[list[Candidate], list[tuple[str, str | None]]],
) -> None:
    final, _ = place_all(*pool)
    for target in final.values():
        limit = quota_of(target, QUOTAS)
        assert limit is None or len(target.sources) <= limit


@settings(max_examples=300, deadline=None, derandomize=True)
@given(pools())
def test_a_source_goes_to_its_own_zone_whenever_a_target_there_has_room(
    pool: tuple[list[Candidate], list[tuple[str, str | None]]],
) -> None:
    _, log = place_all(*pool)
    for eni, zone, seen, chosen in log:
        near = [
            c for c in seen if c.endpoint_type == "NetworkInterface" and tier(c, zone) == 0 and has_room(c, eni, QUOTAS)
        ]
        if near:
            assert chosen is not None and chosen.endpoint_type == "NetworkInterface" and tier(chosen, zone) == 0
            # ... and the least loaded of them, by share of its quota.
            share = {c.target_id: len(c.sources) / (quota_of(c, QUOTAS) or 1) for c in near}
            assert share[chosen.target_id] == min(share.values())
        elif chosen is not None and chosen.endpoint_type == "NetworkInterface":
            # Crossing zones only when no load balancer of the pool could take it.
            assert not any(c.endpoint_type != "NetworkInterface" for c in seen)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(pools())
def test_every_source_is_placed_when_the_pool_has_the_capacity(
    pool: tuple[list[Candidate], list[tuple[str, str | None]]],
) -> None:
    targets, sources = pool
    capacity = sum(quota_of(c, QUOTAS) or len(sources) for c in targets)
    _, log = place_all(targets, sources)
    placed = sum(chosen is not None for *_, chosen in log)
    assert placed == min(len(sources), capacity)


def test_twenty_five_sources_over_three_eni_targets_in_two_zones_and_an_nlb() -> None:
    """The issue's shape: 15 sources in a (one target), 10 in b (two targets), an NLB for the overflow."""
    targets = [eni_target("a1", AZ_A), eni_target("b1", AZ_B), eni_target("b2", AZ_B), nlb_target("nlb")]
    sources = [(f"eni-a{i}", AZ_A) for i in range(15)] + [(f"eni-b{i}", AZ_B) for i in range(10)]
    final, _ = place_all(targets, sources)
    counts = {c.name: len(c.sources) for c in final.values()}
    assert counts == {"a1": 10, "b1": 5, "b2": 5, "nlb": 5}


def test_the_book_keeps_simultaneous_choices_apart_and_forgets_refused_targets_later() -> None:
    book = PlacementBook(refusal_seconds=0.0)
    pool = [eni_target("a", AZ_A), eni_target("a2", AZ_A)]
    # Nobody's status shows a source yet: the book's claims spread them anyway.
    chosen = Counter(
        book.choose(f"uid-{i}", f"eni-{i}", AZ_A, pool, QUOTAS).target.name  # type: ignore[union-attr]
        for i in range(20)
    )
    assert chosen == {"a": 10, "a2": 10}
    assert book.choose("uid-20", "eni-20", AZ_A, pool, QUOTAS).reason == NO_ROOM
    # A session choosing again does not count against itself.
    again = book.choose("uid-0", "eni-0", AZ_A, pool, QUOTAS, current="tmt-a")
    assert again.target is not None and again.target.name == "a"
    book.release("uid-0")
    assert book.choose("uid-20", "eni-20", AZ_A, pool, QUOTAS).target is not None


def test_the_book_skips_a_target_aws_refused_for_a_while() -> None:
    book = PlacementBook(refusal_seconds=3600.0)
    pool = [eni_target("a", AZ_A), eni_target("b", AZ_B)]
    book.refused("tmt-a", "uid-1")
    choice = book.choose("uid-1", "eni-1", AZ_A, pool, QUOTAS)
    assert choice.target is not None and choice.target.name == "b" and choice.reason == OTHER_ZONE


@pytest.mark.parametrize("seed", range(5))
def test_threads_choosing_at_once_never_exceed_a_quota(seed: int) -> None:
    """The reconcilers run in threads: choices made at the same moment still respect every quota."""
    rng = random.Random(seed)
    pool = [eni_target(f"t{i}", rng.choice([AZ_A, AZ_B]), rng.choice(["c5.large", "t3.small"])) for i in range(3)]
    book = PlacementBook()
    start = threading.Barrier(8)
    chosen: list[str | None] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        start.wait()
        for i in range(offset, 40, 8):
            choice = book.choose(f"uid-{i}", f"eni-{i}", rng.choice([AZ_A, AZ_B]), pool, QUOTAS)
            with lock:
                chosen.append(choice.target.target_id if choice.target else None)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = Counter(chosen)
    assert counts[None] == 40 - 30  # three targets of 10: 30 placed, the other 10 told there is no room
    assert all(counts[c.target_id] == 10 for c in pool)
