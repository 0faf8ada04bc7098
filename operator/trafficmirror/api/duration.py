"""Go-style durations ("30s", "5m", "1h30m", "1.5h"), as Kubernetes' CEL `duration()` reads them.

The CRD checks the syntax with `GO_DURATION_PATTERN` and the range with CEL; the operator reads the
value with `parse_go_duration`, so admission and the operator agree on every string.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER = r"([0-9]+(\.[0-9]*)?|\.[0-9]+)"
_UNITS = "ns|us|µs|ms|s|m|h"
GO_DURATION_PATTERN = rf"^({_NUMBER}({_UNITS}))+$"
_PART = re.compile(rf"{_NUMBER}({_UNITS})")
MAX_DURATION = timedelta(days=366)  # a time box longer than a year is a mistake, not a capture
MAX_DURATION_TEXT = "8784h"


def parse_go_duration(text: str) -> timedelta:
    """The duration a Go-style string means; ValueError when it is not one (no sign, units required)."""
    if not re.fullmatch(GO_DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration such as 30s, 5m or 1h30m")
    seconds = 0.0
    for match in _PART.finditer(text):
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(3)]
        if seconds > MAX_DURATION.total_seconds():
            break
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """A duration as a person reads it, to the second: 1h30m0s, 4m5s, 0s (Go's style, no fractions)."""
    total = max(0, int(delta.total_seconds()))
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"
