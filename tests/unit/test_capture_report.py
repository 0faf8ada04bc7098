"""The Lossy condition a capture node writes into a MirrorSession's status: which layer rose,
whose counter it is, and when the status last flipped."""

from __future__ import annotations

import pytest

from trafficmirror.capture.lossstats import NodeDrops
from trafficmirror.capture.report import SessionCounts, drops_of, lossy_condition

ZERO = drops_of(SessionCounts(), 0, NodeDrops())


@pytest.mark.parametrize(
    ("rise", "reason", "whose"),
    [
        ({"disk": 3}, "WriteErrors", "this session's packets"),
        ({"disk": 1, "socket": 9, "nic": 4}, "WriteErrors", "this session's packets"),
        ({"socket": 2}, "SocketOverflow", "shared by the sessions"),
        ({"socket": 2, "softnet": 1}, "SocketOverflow", "shared by the sessions"),
        ({"softnet": 1}, "NodeDrops", "node-wide"),
        ({"nic": 5}, "NodeDrops", "node-wide"),
        ({"udpRcvbufErrors": 1, "udpInErrors": 1}, "NodeDrops", "node-wide"),
    ],
)
def test_the_most_specific_layer_that_rose_names_the_reason(rise: dict[str, int], reason: str, whose: str) -> None:
    now = {k: ZERO[k] + rise.get(k, 0) for k in ZERO}
    cond = lossy_condition(ZERO, now, None, "t1")
    assert (cond["type"], cond["status"], cond["reason"]) == ("Lossy", "True", reason)
    assert whose in cond["message"]
    for layer, n in rise.items():
        assert f"{layer}={n}" in cond["message"]


def test_no_rise_is_not_lossy_and_the_transition_time_moves_only_on_a_flip() -> None:
    quiet = lossy_condition(ZERO, ZERO, None, "t1")
    assert (quiet["status"], quiet["reason"], quiet["lastTransitionTime"]) == ("False", "NoDrops", "t1")
    assert lossy_condition(ZERO, ZERO, quiet, "t2")["lastTransitionTime"] == "t1"
    rose = dict(ZERO, disk=1)
    lossy = lossy_condition(ZERO, rose, quiet, "t3")
    assert (lossy["status"], lossy["lastTransitionTime"]) == ("True", "t3")
    more = dict(rose, disk=2)
    assert lossy_condition(rose, more, lossy, "t4")["lastTransitionTime"] == "t3"
    assert lossy_condition(more, more, lossy, "t5")["lastTransitionTime"] == "t5"


def test_counters_since_the_agent_started_count_as_a_rise_on_the_first_report() -> None:
    first = drops_of(SessionCounts(10, 100, 0), 4, NodeDrops())
    assert lossy_condition(None, first, None, "t")["reason"] == "SocketOverflow"
