"""Time-boxed captures: when a session ends, how long it has left, and what its mirroring cost.

Pure: the clock is always an argument. The session reconciler ends a plain session with these
functions; a selector session's parent, which mirrors through one child session per ENI, ends by
deleting its children and sums their intervals with the same `eni_hours` (`completion` does both
sums and the status fields in one call).

AWS bills mirroring per hour for each ENI with a session: an ENI's interval runs from the creation
of its AWS session to its deletion (or to now, while it still mirrors).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from trafficmirror.api.duration import format_duration, parse_go_duration
from trafficmirror.aws.target_quotas import Price

COMPLETED = "Completed"  # the condition type, and the Ready reason of a Completed session
RUNNING = "Running"  # Completed=False while a time-boxed session runs
TIME_UP = "TimeUp"  # Completed=True: the time is over and the AWS session is deleted
HOUR = 3600.0
ENDS_AT = "ends at"


@dataclass(frozen=True)
class Interval:
    """One ENI mirrored from `start` to `end` (None: still mirroring)."""

    start: datetime
    end: datetime | None = None


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 time as written in status (…Z or an offset); None for None or text that is no time."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC to the second, as Kubernetes writes its own times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stop_time(duration: str | None, stop_at: datetime | None, created: datetime | None) -> datetime | None:
    """When the session ends: its creation time plus `duration`, or `stop_at`; None when it has no end
    (or the creation time needed for a duration is not known yet)."""
    if stop_at is not None:
        return stop_at if stop_at.tzinfo is not None else stop_at.replace(tzinfo=UTC)
    if duration is None or created is None:
        return None
    return created + parse_go_duration(duration)


def is_over(stop: datetime | None, now: datetime) -> bool:
    """Whether the time is over at `now`; a session without an end never is."""
    return stop is not None and now >= stop


def remaining(stop: datetime | None, now: datetime) -> timedelta | None:
    """Time left at `now`, never negative; None without an end."""
    if stop is None:
        return None
    return max(timedelta(0), stop - now)


def eni_hours(intervals: Iterable[Interval | tuple[datetime, datetime | None]], now: datetime) -> float:
    """ENI-hours of mirroring: each interval from its start to its end, or to `now` while open.

    A selector session passes one interval per mirrored ENI (its children's); a start after the end
    (clocks) counts nothing, never less than nothing.
    """
    total = 0.0
    for item in intervals:
        start, end = (item.start, item.end) if isinstance(item, Interval) else item
        until = end if end is not None else now
        total += max(0.0, (until - start).total_seconds()) / HOUR
    return total


def estimated_cost(hours: float, price: Price, now: datetime) -> dict[str, Any]:
    """status.estimatedCost for `hours` ENI-hours at `price`."""
    return {
        "eniHours": round(hours, 6),
        "usdPerEniHour": price.usd_per_eni_hour,
        "usd": round(hours * price.usd_per_eni_hour, 6),
        "priceSource": price.source,
        "asOf": format_time(now),
    }


def cost_words(cost: dict[str, Any]) -> str:
    return f"{cost['eniHours']:.4f} ENI-hours, about {cost['usd']:.4f} USD at {cost['usdPerEniHour']} USD per ENI-hour"


def running_message(stop: datetime, now: datetime) -> str:
    """The Completed=False condition's message: when it ends and how long was left when written."""
    left = remaining(stop, now) or timedelta(0)
    return f"{ENDS_AT} {format_time(stop)}: {format_duration(left)} left at {format_time(now)}"


def completed_message(stop: datetime | None, completed: datetime, deleted: str | None, cost: dict[str, Any]) -> str:
    ended = f"the time ended at {format_time(stop)}" if stop is not None else "the capture ended"
    what = f"deleted {deleted}" if deleted else "nothing was left in AWS to delete"
    return f"{ended}; {what} at {format_time(completed)}; {cost_words(cost)}"


@dataclass(frozen=True)
class Completion:
    """What ending a session writes: the status fields and the condition's message."""

    status_fields: dict[str, Any]
    message: str


def completion(
    stop: datetime | None,
    now: datetime,
    intervals: Iterable[Interval | tuple[datetime, datetime | None]],
    price: Price,
    deleted: str | None = None,
) -> Completion:
    """The status of a session ended at `now`: every open interval closes now.

    `deleted` says what ending deleted, for the message ("the AWS session tms-…", "3 child sessions").
    """
    cost = estimated_cost(eni_hours(intervals, now), price, now)
    fields: dict[str, Any] = {
        "completedAt": format_time(now),
        "stopAt": format_time(stop) if stop is not None else None,
        "estimatedCost": cost,
    }
    return Completion(fields, completed_message(stop, now, deleted, cost))


def next_wake(stop: datetime | None, now: datetime, refresh_seconds: float) -> float | None:
    """Seconds until a running session's daemon should look again: at the end, or at the next refresh
    of the remaining time (whichever is first); None without an end."""
    left = remaining(stop, now)
    if left is None:
        return None
    return max(0.0, min(left.total_seconds(), refresh_seconds))
