"""Every datagram sent is written to its session's file, in order, or counted: property-based over
traffic mixes, and at 100 and 1,000 sessions.

Mixes (hypothesis, derandomized so a failure reproduces): 1 to 5,000 VNIs, known and unknown,
up to 4 of the known ones the sources of a podSelector session split by pod (perPod, where a
packet between two pods is in both files and counted once, or perSession) with packets of no
selected pod filtered out, checked sources and forged ones, garbage, short headers, bad flags, short and truncated inner
frames, jumbo frames, bursts larger than a receive batch, 1 and 2 workers, the compiled and the
Python receive loop, the kernel VNI filter on and off, unknown VNIs written (under a small
open-file cap and rate limit) or dropped.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from netbed import AgentProc, bed_up
from trafficmix import SPOOF_SRC, UND_SRC, Mix, build, check, empty_work_dir, send, sessions_file, settle, write_pool

pytestmark = pytest.mark.root


@st.composite
def mixes(draw: st.DrawFn) -> tuple[Mix, dict[str, object]]:
    n_vnis = draw(st.one_of(st.integers(1, 8), st.integers(9, 300), st.integers(301, 5000)))
    known = draw(st.integers(0, n_vnis))
    mix = Mix(
        seed=draw(st.integers(0, 2**32 - 1)),
        n_vnis=n_vnis,
        known=known,
        checked=draw(st.integers(0, known)),
        datagrams=draw(st.integers(1, 12_000)),
        spoofed=draw(st.integers(0, 500)),
        weights={
            k: draw(st.floats(0, 1))
            for k in ("frame", "truncated", "garbage", "short_header", "bad_flags", "short_frame")
        }
        | {"frame": draw(st.floats(0.2, 1))},
        jumbo=draw(st.sampled_from([0.0, 0.0, 0.05, 0.5])),
        selector=draw(st.integers(0, min(known, 4))),  # sources of a podSelector session
        files=draw(st.sampled_from(["perPod", "perPod", "perSession"])),
    )
    agent = {
        "workers": draw(st.sampled_from([1, 2])),
        "accelerate": draw(st.booleans()),
        "kernel_filter": draw(st.booleans()),  # unknown VNIs dropped, forged ones cut, in the kernel
        "unknown": draw(st.sampled_from(["write", "write", "drop"])),
        "max_open": draw(st.integers(1, 64)),
        "new_per_second": draw(st.sampled_from([1, 50, 100_000])),
        "burst": draw(st.sampled_from([64, 256, 1024])),  # sendmmsg batch: up to 4 receive batches
        "rotate": draw(st.sampled_from(["0", "64KiB"])),
    }
    return mix, agent


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=mixes())
def test_sent_equals_written_plus_counted_drops(case: tuple[Mix, dict[str, object]], work: Path, vxsend: Path) -> None:
    mix, a = case
    event(f"podSelector sources: {min(mix.selector, 1)}, files: {mix.files if mix.selector else '-'}")
    exp = build(mix, kernel_filter=bool(a["kernel_filter"]))
    empty_work_dir(work)
    with bed_up() as bed:
        bed.ns(bed.srv, f"ip addr add {SPOOF_SRC}/24 dev und0")
        args = ["--output-dir", str(work / "out"), "--sessions-file", str(sessions_file(work, exp))]
        args += ["--workers", str(a["workers"]), "--unknown-vni", str(a["unknown"])]
        args += ["--unknown-vni-max-open", str(a["max_open"]), "--unknown-vni-new-per-second", str(a["new_per_second"])]
        args += ["--rotate-interval", "0", "--rotate-size", str(a["rotate"])]
        if not a["accelerate"]:
            args.append("--no-accelerate")
        if a["kernel_filter"]:
            args.append("--kernel-vni-filter")
        agent = AgentProc(bed, work, args)
        try:
            agent.wait_ready()
            pid = agent.proc.pid
            batch = int(str(a["burst"]))
            for src, datagrams in ((SPOOF_SRC, exp.spoof), (UND_SRC, exp.legit)):
                if datagrams:
                    pool = write_pool(work / f"pool-{src}.bin", datagrams)
                    send(bed, vxsend, pool, len(datagrams), src, batch=batch, agent_pid=pid)
            m = settle(agent, len(exp.legit) + len(exp.spoof))
        finally:
            rc = agent.stop()
        assert rc == 0, agent.log()[-3000:]
    check(agent, m, exp, work / "out", len(exp.legit) + len(exp.spoof))


@pytest.mark.parametrize(("sessions", "rate"), [(100, 20_000), (1000, 10_000)])
def test_many_sessions_lose_nothing_uncounted(work: Path, vxsend: Path, sessions: int, rate: int) -> None:
    """100 and 1,000 sessions, every VNI in every receive batch, at a fixed rate without flow
    control: whatever the machine cannot keep up with is counted at its layer."""
    mix = Mix(
        seed=sessions,
        n_vnis=sessions + 20,
        known=sessions,
        checked=sessions // 2,
        datagrams=sessions * 60,
        spoofed=0,
        weights={"frame": 1.0, "truncated": 0.05, "garbage": 0.01},
    )
    exp = build(mix)
    with bed_up() as bed:
        args = ["--output-dir", str(work / "out"), "--sessions-file", str(sessions_file(work, exp))]
        args += ["--rotate-interval", "0", "--rotate-size", "0", "--unknown-vni", "write"]
        agent = AgentProc(bed, work, args)
        try:
            agent.wait_ready()
            send(bed, vxsend, write_pool(work / "legit.bin", exp.legit), len(exp.legit), UND_SRC, batch=64, rate=rate)
            m = settle(agent, len(exp.legit))
        finally:
            rc = agent.stop()
        assert rc == 0, agent.log()[-3000:]
    seen = check(agent, m, exp, work / "out", len(exp.legit))
    assert seen["datagrams"] > 0
