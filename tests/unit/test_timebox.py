"""Time-boxed captures: the pure decisions (when a session ends, time left, ENI-hours, cost) as
tables and properties over durations and clocks, and the session reconciler ending a session
against the in-memory AWS, whose call counts say what was created, deleted or left alone."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.unit.fake_aws import FakeAws, error
from tests.unit.reconcile_harness import Obj, context
from trafficmirror.api import MirrorSessionSpec
from trafficmirror.api.duration import GO_DURATION_PATTERN, format_duration, parse_go_duration
from trafficmirror.aws.ec2 import Endpoint
from trafficmirror.aws.target_quotas import Price, TargetQuotas
from trafficmirror.handlers.indexes import session_placements, session_users
from trafficmirror.handlers.timebox import refreshed_status, stop_of
from trafficmirror.reconcile import timebox
from trafficmirror.reconcile.common import AWS_ID_ANNOTATION
from trafficmirror.reconcile.kinds import SESSION
from trafficmirror.reconcile.seam import ClusterFacts, Dependency

T0 = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)
PUBLISHED = TargetQuotas.packaged().price()


# --- Go-style durations: the operator reads what admission lets through -------------------------

DURATIONS = [
    ("30s", timedelta(seconds=30)),
    ("5m", timedelta(minutes=5)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    ("1.5h", timedelta(hours=1, minutes=30)),
    (".5s", timedelta(milliseconds=500)),
    ("1h0m0s", timedelta(hours=1)),
    ("2h45m30s", timedelta(hours=2, minutes=45, seconds=30)),
    ("1500ms", timedelta(milliseconds=1500)),
    ("90m", timedelta(minutes=90)),
    ("1m1m", timedelta(minutes=2)),  # Go adds repeated units up
]


@pytest.mark.parametrize(("text", "expected"), DURATIONS, ids=[d[0] for d in DURATIONS])
def test_go_durations_read_as_go_reads_them(text: str, expected: timedelta) -> None:
    assert parse_go_duration(text) == expected
    assert re.fullmatch(GO_DURATION_PATTERN, text)


@pytest.mark.parametrize("text", ["", "300", "-5m", "5 m", "1h 30m", "2d", "1w", "h", "5M", "1e3s", "+5m", "5m-"])
def test_what_go_would_not_read_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)
    assert not re.fullmatch(GO_DURATION_PATTERN, text)


def _spec(**time: Any) -> dict[str, Any]:
    return {
        "source": {"networkInterfaceId": "eni-0123456789abcdef0"},
        "targetRef": {"name": "capture"},
        "filterRef": {"name": "https"},
        **time,
    }


@pytest.mark.parametrize(
    ("time", "words"),
    [
        ({"duration": "0s"}, "more than zero"),
        ({"duration": "0h0m0s"}, "more than zero"),
        ({"duration": "8785h"}, "at most 8784h"),
        ({"duration": "99999999999999h"}, "at most 8784h"),
        ({"duration": "9" * 32 + "h"}, "duration"),  # longer than 32 characters
        ({"duration": "5 minutes"}, "duration"),
        ({"duration": "5m", "stopAt": "2030-01-01T00:00:00Z"}, "at most one of duration, stopAt"),
        ({"stopAt": "2030-01-01T00:00:00"}, "timezone"),
        ({"stopAt": "tomorrow"}, "stopAt"),
    ],
)
def test_the_model_refuses_what_admission_refuses(time: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        MirrorSessionSpec.model_validate(_spec(**time))
    assert words in str(refused.value)


def test_the_model_accepts_a_duration_or_a_stop_time() -> None:
    assert MirrorSessionSpec.model_validate(_spec(duration="8784h")).duration == "8784h"
    stop = MirrorSessionSpec.model_validate(_spec(stopAt="2030-01-01T08:30:00+02:00")).stop_at
    assert stop == datetime(2030, 1, 1, 6, 30, tzinfo=UTC)


@st.composite
def go_durations(draw: st.DrawFn) -> tuple[str, timedelta]:
    """A duration of whole seconds written as Go writes it, in any mix of h, m, s (repeats allowed)."""
    parts = draw(st.lists(st.tuples(st.integers(0, 3000), st.sampled_from(["h", "m", "s"])), min_size=1, max_size=4))
    text = "".join(f"{n}{unit}" for n, unit in parts)
    seconds = sum(n * {"h": 3600, "m": 60, "s": 1}[unit] for n, unit in parts)
    return text, timedelta(seconds=seconds)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(go_durations())
def test_a_duration_is_read_to_the_second_and_printed_back_to_the_same_length(case: tuple[str, timedelta]) -> None:
    text, expected = case
    assert parse_go_duration(text) == expected
    assert parse_go_duration(format_duration(expected)) == expected


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.text(alphabet="0123456789.hmsunµ -+d", max_size=12))
def test_the_crd_pattern_and_the_operator_agree_on_every_string(text: str) -> None:
    """Whatever the CRD's pattern admits the operator reads, and what it refuses the operator refuses."""
    matches = re.fullmatch(GO_DURATION_PATTERN, text) is not None
    try:
        parse_go_duration(text)
        parsed = True
    except ValueError:
        parsed = False
    assert matches == parsed


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.from_regex(GO_DURATION_PATTERN, fullmatch=True).filter(lambda t: len(t) <= 40))
def test_every_duration_admission_lets_through_is_read_or_refused_by_name_never_a_crash(text: str) -> None:
    assert parse_go_duration(text) >= timedelta(0)
    try:
        MirrorSessionSpec.model_validate(_spec(duration=text))
    except ValidationError as refused:
        assert "duration" in str(refused)


# --- when it ends, and what is left ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "stop_at", "created", "expected"),
    [
        ("5m", None, T0, T0 + timedelta(minutes=5)),
        (None, T0 + timedelta(hours=2), T0, T0 + timedelta(hours=2)),
        (None, T0 - timedelta(hours=2), T0, T0 - timedelta(hours=2)),  # already past at creation
        (None, None, T0, None),
        ("5m", None, None, None),  # no creation time yet: no end to act on
        (None, datetime(2026, 11, 30, 9, 0), None, datetime(2026, 11, 30, 9, 0, tzinfo=UTC)),  # naive: UTC
    ],
)
def test_the_end_is_creation_plus_duration_or_stop_at(
    duration: str | None, stop_at: datetime | None, created: datetime | None, expected: datetime | None
) -> None:
    assert timebox.stop_time(duration, stop_at, created) == expected


@pytest.mark.parametrize(
    ("now", "over", "left", "wake"),
    [
        (T0 - timedelta(minutes=10), False, timedelta(minutes=10), 60.0),
        (T0 - timedelta(seconds=30), False, timedelta(seconds=30), 30.0),
        (T0 - timedelta(microseconds=1), False, timedelta(microseconds=1), 0.000001),
        (T0, True, timedelta(0), 0.0),
        (T0 + timedelta(days=3), True, timedelta(0), 0.0),
    ],
)
def test_over_at_the_end_and_after_never_before(now: datetime, over: bool, left: timedelta, wake: float) -> None:
    assert timebox.is_over(T0, now) is over
    assert timebox.remaining(T0, now) == left
    assert timebox.next_wake(T0, now, refresh_seconds=60.0) == pytest.approx(wake)


def test_a_session_without_an_end_is_never_over_and_has_no_wake_up() -> None:
    far = T0 + timedelta(days=10_000)
    assert not timebox.is_over(None, far)
    assert timebox.remaining(None, far) is None
    assert timebox.next_wake(None, far, 60.0) is None


@settings(max_examples=500, deadline=None, derandomize=True)
@given(
    go_durations(),
    st.integers(min_value=0, max_value=10**9),  # creation, seconds after T0
    st.integers(min_value=-(10**7), max_value=10**7),  # now, seconds after the end
    st.floats(min_value=1.0, max_value=3600.0),
)
def test_over_exactly_from_the_end_on_and_time_left_adds_up(
    case: tuple[str, timedelta], created_after: int, now_after_end: int, refresh: float
) -> None:
    text, length = case
    created = T0 + timedelta(seconds=created_after)
    stop = timebox.stop_time(text, None, created)
    assert stop == created + length
    now = stop + timedelta(seconds=now_after_end)
    left = timebox.remaining(stop, now)
    assert left is not None and left >= timedelta(0)
    assert timebox.is_over(stop, now) is (now_after_end >= 0)
    if now_after_end < 0:
        assert now + left == stop
    if now_after_end < 0:  # the message's two times and the time left add up to the end, to the second
        said = timebox.running_message(stop, now + timedelta(microseconds=created_after % 10**6))
        ends, rest = said.removeprefix("ends at ").split(": ", 1)
        left_text, at = rest.split(" left at ")
        assert timebox.parse_time(at) + parse_go_duration(left_text) == timebox.parse_time(ends)  # type: ignore[operator]
    wake = timebox.next_wake(stop, now, refresh)
    assert wake is not None and 0 <= wake <= refresh
    # the daemon never sleeps past the end
    assert now + timedelta(seconds=wake) <= max(now, stop)


# --- ENI-hours and cost --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("intervals", "now", "hours"),
    [
        ([], T0, 0.0),
        ([(T0, T0 + timedelta(hours=1))], T0 + timedelta(hours=5), 1.0),  # closed: now does not matter
        ([(T0, None)], T0 + timedelta(minutes=30), 0.5),  # open: to now
        ([(T0, None), (T0, None), (T0 + timedelta(minutes=30), None)], T0 + timedelta(hours=1), 2.5),  # three ENIs
        ([(T0 + timedelta(hours=1), T0)], T0, 0.0),  # an end before the start counts nothing
        ([(T0 + timedelta(hours=1), None)], T0, 0.0),  # a start in the future (clock skew) too
    ],
)
def test_eni_hours_sum_each_enis_interval(
    intervals: list[tuple[datetime, datetime | None]], now: datetime, hours: float
) -> None:
    assert timebox.eni_hours(intervals, now) == pytest.approx(hours)
    assert timebox.eni_hours([timebox.Interval(*i) for i in intervals], now) == pytest.approx(hours)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.one_of(st.none(), st.integers(0, 10**6))), min_size=0, max_size=12),
    st.integers(0, 2 * 10**6),
    st.integers(0, 10**6),
)
def test_eni_hours_never_negative_grow_with_time_and_add_up_over_split_selectors(
    raw: list[tuple[int, int | None]], now_s: int, later_s: int
) -> None:
    intervals = [(T0 + timedelta(seconds=a), None if b is None else T0 + timedelta(seconds=a + b)) for a, b in raw]
    now = T0 + timedelta(seconds=now_s)
    hours = timebox.eni_hours(intervals, now)
    assert hours >= 0
    assert timebox.eni_hours(intervals, now + timedelta(seconds=later_s)) >= hours - 1e-9
    half = len(intervals) // 2  # a parent's sum is the sum of its children's
    parts = timebox.eni_hours(intervals[:half], now) + timebox.eni_hours(intervals[half:], now)
    assert parts == pytest.approx(hours)


def test_the_cost_uses_the_published_price_with_its_source_or_the_configured_one() -> None:
    cost = timebox.estimated_cost(2.0, PUBLISHED, T0)
    assert cost == {
        "eniHours": 2.0,
        "usdPerEniHour": 0.015,
        "usd": 0.03,
        "priceSource": PUBLISHED.source,
        "asOf": "2026-11-30T08:00:00Z",
    }
    assert "aws.amazon.com/vpc/pricing" in PUBLISHED.source
    configured = TargetQuotas.packaged().price(0.02)
    assert timebox.estimated_cost(0.5, configured, T0)["usd"] == 0.01
    assert configured.source == "configured"
    with pytest.raises(ValueError):
        TargetQuotas.packaged().price(-0.01)


def test_a_selector_parent_ends_with_its_childrens_intervals_summed() -> None:
    """The hook for a selector session: its children's (start, end) intervals, closed at the end."""
    children = [(T0, None), (T0 + timedelta(minutes=30), None), (T0, T0 + timedelta(minutes=15))]
    ended = timebox.completion(
        T0 + timedelta(hours=1), T0 + timedelta(hours=1), children, PUBLISHED, deleted="3 child sessions"
    )
    assert ended.status_fields["estimatedCost"]["eniHours"] == pytest.approx(1.75)
    assert ended.status_fields["completedAt"] == "2026-11-30T09:00:00Z"
    assert ended.status_fields["stopAt"] == "2026-11-30T09:00:00Z"
    assert "deleted 3 child sessions" in ended.message and "1.7500 ENI-hours" in ended.message


# --- the session reconciler ends the capture ----------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class TimedWorld:
    """A source and a capture instance, a Ready target and filter, and a time-boxed session."""

    def __init__(self, created: datetime = T0, price: Price = PUBLISHED, **time: Any) -> None:
        self.aws = FakeAws()
        self.region = self.aws.region(None)
        _, self.web_eni = self.region.add_instance("t3.small")
        _, capture_eni = self.region.add_instance("c5.large")
        target = self.region.create_target(
            Endpoint(network_interface_id=capture_eni), client_token="t", description="", tags={}
        )
        mirror_filter = self.region.create_filter(client_token="f", description="", tags={})
        self.clock = Clock(created)
        self.ctx = context(self.aws, clock=self.clock, price=price)
        self.session = Obj(
            SESSION,
            {
                "source": {"networkInterfaceId": self.web_eni},
                "targetRef": {"name": "capture"},
                "filterRef": {"name": "https"},
                **time,
            },
            name="web",
            uid="uid-session",
            created_at=created,
            facts=ClusterFacts(
                Dependency("capture", "Ready", target.target_id, network_interface_id=capture_eni),
                Dependency("https", "Ready", mirror_filter.filter_id),
            ),
        )
        self.region.calls.clear()

    def at(self, when: datetime) -> TimedWorld:
        self.clock.now = when
        return self

    def restart(self) -> None:
        """A new operator process: nothing in memory, the same AWS and the same stored object."""
        self.ctx = context(self.aws, clock=self.clock, price=self.ctx.price)

    def calls(self, prefix: str) -> int:
        return sum(n for op, n in self.region.calls.items() if op.startswith(prefix))


def test_a_five_second_session_mirrors_then_is_completed_with_its_aws_session_deleted_and_the_cost() -> None:
    world = TimedWorld(duration="5s")
    assert world.at(T0 + timedelta(seconds=1)).session.reconcile(world.ctx).phase.value == "Ready"
    status = world.session.status
    assert len(world.region.sessions) == 1 and status["stopAt"] == "2026-11-30T08:00:05Z"
    assert status["mirroringSince"] == "2026-11-30T08:00:01Z"
    running = world.session.condition("Completed")
    assert running is not None and running["status"] == "False" and "4s left" in running["message"]
    session_id = status["trafficMirrorSessionId"]

    outcome = world.at(T0 + timedelta(seconds=6)).session.reconcile(world.ctx)

    assert outcome.phase.value == "Completed" and world.region.sessions == {}
    assert world.region.calls["delete_session"] == 1 and world.calls("create") == 1
    assert status["completedAt"] == "2026-11-30T08:00:06Z" and "trafficMirrorSessionId" not in status
    assert AWS_ID_ANNOTATION not in world.session.annotations
    cost = status["estimatedCost"]
    assert cost["eniHours"] == pytest.approx(5 / 3600, abs=1e-6) and cost["usdPerEniHour"] == 0.015
    assert cost["usd"] == pytest.approx(5 / 3600 * 0.015, abs=1e-6) and cost["priceSource"] == PUBLISHED.source
    done = world.session.condition("Completed")
    assert done is not None and done["status"] == "True" and session_id in done["message"]
    assert world.session.reason == "Completed"
    assert any(e.reason == "Completed" for e in outcome.events) or outcome.ready_reason == "Completed"


def test_a_stop_time_past_at_creation_completes_without_a_single_aws_call() -> None:
    world = TimedWorld(stopAt="2026-11-30T07:00:00Z")
    outcome = world.at(T0).session.reconcile(world.ctx)
    assert outcome.phase.value == "Completed"
    assert sum(world.region.calls.values()) == 0 and world.region.sessions == {}
    assert world.session.status["estimatedCost"]["eniHours"] == 0
    assert "nothing was left in AWS" in (world.session.condition("Completed") or {})["message"]


def test_a_completed_session_is_never_created_again_by_resyncs_restarts_or_out_of_band_changes() -> None:
    world = TimedWorld(duration="1m")
    world.at(T0 + timedelta(seconds=2)).session.reconcile(world.ctx)
    world.at(T0 + timedelta(minutes=1)).session.reconcile(world.ctx)
    assert world.session.status["phase"] == "Completed"
    world.region.calls.clear()
    for minutes in range(2, 30):
        if minutes % 7 == 0:
            world.restart()
        world.at(T0 + timedelta(minutes=minutes)).session.reconcile(world.ctx)
    assert sum(world.region.calls.values()) == 0 and world.region.sessions == {}
    assert world.session.status["phase"] == "Completed"


def test_editing_a_completed_session_does_not_restart_it_and_says_so() -> None:
    world = TimedWorld(duration="1m")
    world.at(T0 + timedelta(seconds=2)).session.reconcile(world.ctx)
    world.at(T0 + timedelta(minutes=2)).session.reconcile(world.ctx)
    world.region.calls.clear()
    world.session.spec["duration"] = "10h"
    world.session.generation = 2

    outcome = world.at(T0 + timedelta(minutes=3)).session.reconcile(world.ctx)

    assert outcome.phase.value == "Completed" and sum(world.region.calls.values()) == 0
    said = [e for e in outcome.events if e.reason == "AlreadyCompleted"]
    assert len(said) == 1 and "does not restart it" in said[0].message
    # said once: the next pass (same generation) is silent
    assert not [e for e in world.session.reconcile(world.ctx).events if e.reason == "AlreadyCompleted"]


def test_deleting_a_completed_session_makes_no_call() -> None:
    world = TimedWorld(duration="1m")
    world.at(T0 + timedelta(seconds=2)).session.reconcile(world.ctx)
    world.at(T0 + timedelta(minutes=2)).session.reconcile(world.ctx)
    world.region.calls.clear()
    assert world.session.delete(world.ctx) is None
    assert sum(world.region.calls.values()) == 0


def test_a_session_deleted_outside_after_its_end_is_not_recreated_and_still_completes() -> None:
    world = TimedWorld(duration="1m")
    world.at(T0 + timedelta(seconds=2)).session.reconcile(world.ctx)
    world.region.sessions.clear()  # deleted out of band while the operator was down
    world.restart()
    outcome = world.at(T0 + timedelta(minutes=5)).session.reconcile(world.ctx)
    assert outcome.phase.value == "Completed" and world.calls("create") == 1  # the first one only
    assert world.region.sessions == {}


def test_a_create_in_flight_when_the_time_ran_out_is_found_and_deleted() -> None:
    """The create's token was stored (the intent), the create reached AWS, the response was lost."""
    world = TimedWorld(duration="10s")
    world.at(T0 + timedelta(seconds=1))
    first = world.session.reconciler.reconcile(world.session.request(), world.ctx)
    world.session.write(first)  # the intent, and the source ENI in status
    world.session.reconciler.reconcile(world.session.request(), world.ctx)  # created; the answer is lost
    assert len(world.region.sessions) == 1 and "trafficMirrorSessionId" not in world.session.status

    outcome = world.at(T0 + timedelta(seconds=30)).session.reconcile(world.ctx)

    assert outcome.phase.value == "Completed" and world.region.sessions == {}


def test_aws_trouble_while_ending_is_retried_and_said_never_left_mirroring() -> None:
    world = TimedWorld(duration="10s")
    world.at(T0 + timedelta(seconds=1)).session.reconcile(world.ctx)
    world.region.fail["delete_session"] = error("DeleteTrafficMirrorSession", "RequestLimitExceeded")
    outcome = world.at(T0 + timedelta(seconds=11)).session.reconcile(world.ctx)
    assert outcome.phase.value == "Pending" and outcome.ready_reason == "Completing"
    assert outcome.retry_after is not None and "the time is over" in world.session.condition("Ready")["message"]  # type: ignore[index]
    world.region.fail.clear()
    assert world.at(T0 + timedelta(seconds=21)).session.reconcile(world.ctx).phase.value == "Completed"
    assert world.region.sessions == {}


def test_editing_the_duration_while_running_moves_the_end_counted_from_creation() -> None:
    world = TimedWorld(duration="1m")
    world.at(T0 + timedelta(seconds=2)).session.reconcile(world.ctx)
    world.session.spec["duration"] = "1h"
    world.session.generation = 2
    assert world.at(T0 + timedelta(minutes=5)).session.reconcile(world.ctx).phase.value == "Ready"
    assert world.session.status["stopAt"] == "2026-11-30T09:00:00Z" and len(world.region.sessions) == 1
    world.session.spec.pop("duration")  # no end any more
    world.session.generation = 3
    world.at(T0 + timedelta(hours=3)).session.reconcile(world.ctx)
    assert world.session.status["phase"] == "Ready" and "stopAt" not in world.session.status
    assert world.session.condition("Completed") is None


def test_a_configured_price_is_the_one_the_cost_uses() -> None:
    world = TimedWorld(price=TargetQuotas.packaged().price(0.5), duration="2h")
    world.at(T0).session.reconcile(world.ctx)
    world.at(T0 + timedelta(hours=2)).session.reconcile(world.ctx)
    cost = world.session.status["estimatedCost"]
    assert cost == {
        "eniHours": 2.0,
        "usdPerEniHour": 0.5,
        "usd": 1.0,
        "priceSource": "configured",
        "asOf": "2026-11-30T10:00:00Z",
    }


def test_an_end_reached_late_counts_the_hours_to_the_deletion_as_aws_bills_them() -> None:
    """The operator was down at the end: AWS mirrored (and billed) until the session was deleted."""
    world = TimedWorld(duration="1h")
    world.at(T0).session.reconcile(world.ctx)
    world.restart()
    world.at(T0 + timedelta(hours=3)).session.reconcile(world.ctx)
    status = world.session.status
    assert status["estimatedCost"]["eniHours"] == 3.0
    assert (status["stopAt"], status["completedAt"]) == ("2026-11-30T09:00:00Z", "2026-11-30T11:00:00Z")


@pytest.mark.parametrize("seed", range(40))
def test_random_timelines_never_mirror_after_the_end_and_never_create_after_it(seed: int) -> None:
    """Reconciles at random moments, with restarts, out-of-band deletions and spec edits: before the
    end the session mirrors (one AWS session), from the end on AWS holds none and no create is made;
    once Completed, no call at all."""
    rng = random.Random(seed)
    length = rng.randint(5, 600)
    world = TimedWorld(duration=f"{length}s")
    stop = T0 + timedelta(seconds=length)
    moment = T0
    created_after_end = 0
    for _ in range(30):
        moment += timedelta(seconds=rng.choice([0, 1, 3, 30, 90, 200]))
        event = rng.random()
        if event < 0.1:
            world.restart()
        elif event < 0.2:
            world.region.sessions.clear()  # out of band
        elif event < 0.3 and world.session.status.get("phase") == "Completed":
            world.session.spec["duration"] = f"{rng.randint(1, 10)}h"
            world.session.generation += 1
        creates = world.calls("create_session")
        was_completed = world.session.status.get("phase") == "Completed"
        before = sum(world.region.calls.values())
        world.at(moment).session.reconcile(world.ctx)
        if moment >= stop:
            created_after_end += world.calls("create_session") - creates
            assert world.region.sessions == {}, (seed, moment)
            assert world.session.status["phase"] == "Completed"
        else:
            assert world.session.status["phase"] == "Ready" and len(world.region.sessions) == 1
        if was_completed:
            assert sum(world.region.calls.values()) == before
    assert created_after_end == 0


# --- the daemon's pieces (no kopf needed) --------------------------------------------------------


def test_the_daemon_reads_the_end_from_the_live_body() -> None:
    body = {"metadata": {"creationTimestamp": "2026-11-30T08:00:00Z"}, "spec": {"duration": "90s"}}
    assert stop_of(body) == T0 + timedelta(seconds=90)
    assert stop_of({"metadata": {}, "spec": {"stopAt": "2026-11-30T09:00:00+01:00"}}) == T0
    assert stop_of({"metadata": {}, "spec": {"duration": "bogus"}}) is None
    assert stop_of({"metadata": {}, "spec": {}}) is None


def test_the_refresh_rewrites_only_the_time_left_and_the_cost_so_far() -> None:
    world = TimedWorld(duration="10m")
    world.at(T0 + timedelta(seconds=2)).session.reconcile(world.ctx)
    body = {"status": world.session.status}
    patch = refreshed_status(body, T0 + timedelta(minutes=10), T0 + timedelta(minutes=4), PUBLISHED)
    assert patch is not None and set(patch) == {"conditions", "estimatedCost"}
    completed = next(c for c in patch["conditions"] if c["type"] == "Completed")
    assert completed["message"].endswith("6m0s left at 2026-11-30T08:04:00Z")
    assert [c["type"] for c in patch["conditions"]] == [c["type"] for c in world.session.status["conditions"]]
    assert patch["estimatedCost"]["eniHours"] == pytest.approx(238 / 3600, abs=1e-6)
    assert refreshed_status({"status": {}}, T0, T0, PUBLISHED) is None  # nothing written yet: nothing to refresh


def test_a_completed_session_neither_holds_its_target_and_filter_nor_counts_on_a_pool_target() -> None:
    spec: Any = {"targetRef": {"name": "capture"}, "filterRef": {"name": "https"}}
    running: Any = {"phase": "Ready", "trafficMirrorTargetId": "tmt-1", "sourceNetworkInterfaceId": "eni-1"}
    completed: Any = {**running, "phase": "Completed"}
    assert len(session_users(namespace="ns", name="web", spec=spec, status=running)) == 2
    assert session_users(namespace="ns", name="web", spec=spec, status=completed) == {}
    assert session_placements(uid="u", namespace="ns", status=running) == {"u": ("tmt-1", "eni-1")}
    assert session_placements(uid="u", namespace="ns", status=completed) == {}


def test_a_selector_session_ends_by_deleting_every_child_with_the_cost_of_all() -> None:
    stop = T0 + timedelta(hours=1)
    children = [
        timebox.ChildMirror("web-b2", T0 + timedelta(minutes=30)),
        timebox.ChildMirror("web-a1", T0),
        timebox.ChildMirror("web-c3", None),  # never mirrored (a branch ENI, a conflict)
        timebox.ChildMirror("web-d4", T0, completed_at=T0 + timedelta(minutes=6)),
    ]
    assert timebox.end_parent(stop, stop - timedelta(seconds=1), children, PUBLISHED) is None
    ended = timebox.end_parent(stop, stop, children, PUBLISHED)
    assert ended is not None
    assert ended.delete_children == ("web-a1", "web-b2", "web-c3", "web-d4")
    assert ended.completion.status_fields["estimatedCost"]["eniHours"] == pytest.approx(1.6)
    assert "deleted 4 child sessions (one per ENI)" in ended.completion.message
    nothing = timebox.end_parent(stop, stop, [], PUBLISHED)
    assert nothing is not None and nothing.delete_children == ()
    assert nothing.completion.status_fields["estimatedCost"]["eniHours"] == 0
    assert timebox.end_parent(None, stop, children, PUBLISHED) is None  # no end: never


# --- a time-boxed selector session (reconcile.workload) ------------------------------------------


def test_a_time_boxed_selector_session_drops_every_child_at_its_end_and_never_gets_one_again() -> None:
    from dataclasses import replace as copy_with

    from tests.unit.test_workload import ACCEPT_ALL, FakeWorkloadAws, node, parent, pod, ready_children
    from trafficmirror.reconcile.workload import plan

    aws = FakeWorkloadAws()
    (eni_a,) = aws.add_instance("i-0000000000000000a")
    (eni_b,) = aws.add_instance("i-0000000000000000b")
    aws.add_address(eni_a, "10.1.0.11")
    aws.add_address(eni_b, "10.1.0.21")
    nodes = {"a": node("a", "i-0000000000000000a"), "b": node("b", "i-0000000000000000b")}
    pods = [pod("web-1", "10.1.0.11", "a"), pod("web-2", "10.1.0.21", "b")]
    web = copy_with(parent({"podSelector": {"matchLabels": {"app": "web"}}}, duration="1h"), created_at=T0)
    args: Any = {"pods": pods, "nodes": nodes, "namespace_labels": {}, "parent_filter": ACCEPT_ALL, "aws": aws}

    running = plan(web, children={}, now=T0 + timedelta(minutes=1), price=PUBLISHED, **args)
    assert len(running.children) == 2 and running.status["stopAt"] == "2026-11-30T09:00:00Z"
    children = {
        name: copy_with(child, mirroring_since=f"2026-11-30T08:{minute:02d}:00Z")
        for (name, child), minute in zip(sorted(ready_children(running.children).items()), (0, 30), strict=True)
    }
    assert len(plan(web, children=children, now=T0 + timedelta(minutes=59), price=PUBLISHED, **args).children) == 2

    ended = plan(web, children=children, now=T0 + timedelta(hours=1), price=PUBLISHED, **args)

    assert ended.children == {} and ended.filters == {}  # every child is deleted: their finalizers clear AWS
    assert ended.status["phase"] == "Completed" and ended.status["sources"] == []
    assert ended.status["estimatedCost"]["eniHours"] == pytest.approx(1.5)
    assert ended.status["completedAt"] == "2026-11-30T09:00:00Z"
    assert "deleted 2 child sessions" in ended.status["conditions"][0]["message"]
    assert [(c["type"], c["status"], c["reason"]) for c in ended.status["conditions"]] == [
        ("Ready", "False", "Completed"),
        ("Completed", "True", "TimeUp"),
    ]
    done = copy_with(web, phase="Completed")
    later = plan(done, children={}, now=T0 + timedelta(hours=5), price=PUBLISHED, **args)
    assert later.children == {} and "conditions" not in later.status and "phase" not in later.status
    assert "completedAt" not in later.status and "estimatedCost" not in later.status  # as written when it ended
    # a selector session without an end never ends
    endless = copy_with(parent({"podSelector": {"matchLabels": {"app": "web"}}}), created_at=T0)
    assert len(plan(endless, children={}, now=T0 + timedelta(days=400), price=PUBLISHED, **args).children) == 2
