"""How long `trafficmirror capture` waits on a Failed selector session: a moment's Failed (a child waiting
for its generated filter, a target instance starting again) is ridden out, a Failed that holds for
FAILED_GRACE_SECONDS ends the wait. Driven by a scripted API and a clock the poll advances."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest

from trafficmirror.kubecapture import command
from trafficmirror.kubecapture.command import FAILED_GRACE_SECONDS, POLL_SECONDS, Progress, Signals


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class StopEvent(threading.Event):
    """The poll's wait advances the fake clock instead of sleeping."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        self.clock.sleep(timeout or 0.0)
        return self.is_set()


class ScriptedApi:
    """Answers each GET with the phase the script gives for the clock's time."""

    def __init__(self, clock: Clock, script: list[tuple[float, str]]) -> None:
        self.clock, self.script, self.gets = clock, script, 0
        self.start = clock.now

    def get(self, _path: str) -> dict[str, Any]:
        self.gets += 1
        elapsed = self.clock.now - self.start
        phase = [p for at, p in self.script if at <= elapsed][-1]
        return {"status": {"phase": phase, "conditions": [{"type": "Ready", "reason": phase}]}}


def _wait(monkeypatch: pytest.MonkeyPatch, script: list[tuple[float, str]], seconds: int) -> tuple[str, float]:
    clock = Clock()
    monkeypatch.setattr(command.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(command.time, "sleep", clock.sleep)
    api = ScriptedApi(clock, script)
    signals = Signals(stop=StopEvent(clock))
    session = command._wait(api, "ns", "web", seconds, clock.now, Progress(io.StringIO()), signals)  # type: ignore[arg-type]
    return session["status"]["phase"], clock.now - api.start


@pytest.mark.parametrize("blip", [1.0, 5.0, FAILED_GRACE_SECONDS - 2 * POLL_SECONDS])
def test_a_failed_moment_shorter_than_the_grace_is_ridden_out(monkeypatch: pytest.MonkeyPatch, blip: float) -> None:
    script = [(0.0, "Pending"), (2.0, "Failed"), (2.0 + blip, "Ready"), (40.0, "Completed")]
    phase, waited = _wait(monkeypatch, script, seconds=30)
    assert phase == "Completed" and waited >= 40.0


def test_a_failed_that_holds_ends_the_wait_after_the_grace_not_before(monkeypatch: pytest.MonkeyPatch) -> None:
    phase, waited = _wait(monkeypatch, [(0.0, "Pending"), (3.0, "Failed")], seconds=600)
    assert phase == "Failed"
    assert 3.0 + FAILED_GRACE_SECONDS < waited <= 3.0 + FAILED_GRACE_SECONDS + 2 * POLL_SECONDS


def test_each_failed_spell_gets_its_own_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two short spells that add up to more than the grace are two moments, not one failure."""
    short = FAILED_GRACE_SECONDS * 0.75
    script = [(0.0, "Failed"), (short, "Ready"), (short + 5, "Failed"), (2 * short + 5, "Ready"), (60.0, "Completed")]
    phase, _waited = _wait(monkeypatch, script, seconds=50)
    assert phase == "Completed"
