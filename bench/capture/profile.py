"""Where the agent's CPU per packet goes (bench/results/capture-profile.md; root: namespaces).

One worker, per-session pcapng, the bench's sender and frames (run.py). For each case the agent
(and, on the same traffic, drain.c) receives ``--packets`` datagrams at ``--rate``, measured
three ways, each in its own pass so one tool's overhead never skews another's figure:
  1. clean: the worker's utime/stime (/proc/<pid>/stat) and context switches (/proc/<pid>/status);
  2. syscalls: ``perf stat`` on the syscall tracepoints of the worker (counts per call kind);
  3. where: ``perf record -g`` (user + kernel symbols) and ``py-spy record --native``.
Prints one JSON object per case; the tools' raw reports stay in --keep.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as bench  # noqa: E402
from netbed import NOBODY, AgentProc, Bed  # noqa: E402

SYSCALLS = (
    "recvmmsg",
    "writev",
    "write",
    "poll",
    "ppoll",
    "clock_nanosleep",
    "nanosleep",
    "futex",
    "sendto",
    "recvfrom",
    "openat",
    "close",
    "fsync",
    "select",
    "pselect6",
    "epoll_wait",
    "getsockopt",
    "mmap",
    "munmap",
    "brk",
    "madvise",
)


def proc_stat(pid: int) -> tuple[float, float]:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(f[11]) / bench.TICK, int(f[12]) / bench.TICK


def ctxt(pid: int) -> tuple[int, int]:
    vol = inv = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches"):
            vol = int(line.split()[1])
        elif line.startswith("nonvoluntary_ctxt_switches"):
            inv = int(line.split()[1])
    return vol, inv


def worker_pid(bed: Bed) -> int:
    """The worker: the agent process whose parent is an agent process too."""
    pids = set(bench.ns_pids(bed))
    for pid in pids:
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if ppid in pids and b"trafficmirror.capture" in cmd:
            return pid
    raise RuntimeError("no worker found")


def start_agent(bed: Bed, base: Path, vnis: int) -> AgentProc:
    work = base / "agent"
    shutil.rmtree(work, ignore_errors=True)
    for sub in ("", "out", "work"):
        (work / sub).mkdir(parents=True, exist_ok=True)
        os.chown(work / sub, NOBODY, NOBODY)
    args = ["--output-dir", str(work / "out"), "--rotate-size", "512MiB", "--rotate-interval", "0", "--workers", "1"]
    for v in bench.vni_list(vnis):
        args += ["--session", f"{v}=bench/s{v}"]
    agent = AgentProc(bed, work, args)
    agent.wait_ready()
    time.sleep(0.5)
    return agent


def wait_written(agent: AgentProc, bed: Bed, total: int) -> None:
    end = time.monotonic() + 300
    while time.monotonic() < end:
        m = agent.metrics()
        if (
            m.get(bench.M + "datagrams_total", 0) + m.get(bench.M + "kernel_drops_total", 0) >= total
            and bed.udp_queue_empty()
        ):
            return
        time.sleep(0.05)


def perf_stat_args() -> list[str]:
    out = []
    for s in SYSCALLS:
        if Path(f"/sys/kernel/tracing/events/syscalls/sys_enter_{s}").exists():
            out += ["-e", f"syscalls:sys_enter_{s}"]
    return out


def parse_perf_stat(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].startswith("syscalls:sys_enter_"):
            with contextlib.suppress(ValueError):
                out[parts[1].removeprefix("syscalls:sys_enter_")] = int(parts[0].replace(",", ""))
    return out


def attach(cmd: list[str], out: Path) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(cmd, stdout=open(out, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    time.sleep(1.0)
    return p


def stop(p: subprocess.Popen[bytes]) -> None:
    p.send_signal(2)
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def agent_case(
    bed: Bed, base: Path, keep: Path, vxsend: Path, pf: Path, n: int, rate: int, vnis: int, pyspy: str | None
) -> dict[str, Any]:
    tag = f"agent_{pf.stem}"
    agent = start_agent(bed, base, vnis)
    res: dict[str, Any] = {"case": tag, "vnis": vnis, "packets": n, "rate": rate}
    try:
        pid = worker_pid(bed)
        sent = 0
        # 1. clean
        u0, s0 = proc_stat(pid)
        c0 = ctxt(pid)
        m0 = agent.metrics().get(bench.M + "datagrams_total", 0)
        pps, _ = bench.send(bed, vxsend, pf, n, rate)
        sent += n
        wait_written(agent, bed, sent)
        u1, s1 = proc_stat(pid)
        c1 = ctxt(pid)
        m = agent.metrics()
        got = m.get(bench.M + "datagrams_total", 0) - m0
        res["clean"] = {
            "achieved_pps": round(pps),
            "user_us_per_pkt": round((u1 - u0) / n * 1e6, 3),
            "sys_us_per_pkt": round((s1 - s0) / n * 1e6, 3),
            "voluntary_ctxt_per_1k": round((c1[0] - c0[0]) / n * 1000, 2),
            "involuntary_ctxt_per_1k": round((c1[1] - c0[1]) / n * 1000, 2),
            "datagrams": int(got),
            "kernel_drops_total": int(m.get(bench.M + "kernel_drops_total", 0)),
        }
        # 2. syscalls
        p = attach(["perf", "stat", "-p", str(pid), *perf_stat_args()], keep / f"{tag}.perfstat")
        m0 = agent.metrics().get(bench.M + "datagrams_total", 0)
        bench.send(bed, vxsend, pf, n, rate)
        sent += n
        wait_written(agent, bed, sent)
        stop(p)
        got = agent.metrics().get(bench.M + "datagrams_total", 0) - m0
        counts = parse_perf_stat((keep / f"{tag}.perfstat").read_text())
        res["syscalls_per_1k_pkts"] = {k: round(v / got * 1000, 2) for k, v in counts.items() if v}
        if counts.get("recvmmsg"):
            res["pkts_per_recvmmsg"] = round(got / counts["recvmmsg"], 1)
        # 3. where: perf record, then py-spy
        p = attach(
            ["perf", "record", "-g", "-F", "999", "-o", str(keep / f"{tag}.perf.data"), "-p", str(pid)],
            keep / f"{tag}.perfrec.log",
        )
        bench.send(bed, vxsend, pf, n, rate)
        sent += n
        wait_written(agent, bed, sent)
        stop(p)
        if pyspy:
            p = attach(
                [
                    pyspy,
                    "record",
                    "--native",
                    "-r",
                    "250",
                    "-f",
                    "raw",
                    "-o",
                    str(keep / f"{tag}.pyspy.txt"),
                    "-p",
                    str(pid),
                ],
                keep / f"{tag}.pyspy.log",
            )
            bench.send(bed, vxsend, pf, n, rate)
            sent += n
            wait_written(agent, bed, sent)
            stop(p)
    finally:
        agent.stop()
    return res


def drain_case(bed: Bed, drain: Path, keep: Path, vxsend: Path, pf: Path, n: int, rate: int) -> dict[str, Any]:
    tag = f"drain_{pf.stem}"
    res: dict[str, Any] = {"case": tag}
    r = bench.run_drain(bed, drain, vxsend, pf, n, rate)
    res["clean"] = {
        "us_per_pkt": r["us_per_pkt"],
        "wakeups_per_1k": round(r["wakeups"] / n * 1000, 2),
        "lost": r["lost"],
    }
    p = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            bed.agt,
            "perf",
            "stat",
            "-o",
            str(keep / f"{tag}.perfstat"),
            *perf_stat_args(),
            str(drain),
            "-n",
            str(n),
            "-t",
            "3",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    bench.send(bed, vxsend, pf, n, rate)
    p.wait()
    counts = parse_perf_stat((keep / f"{tag}.perfstat").read_text())
    res["syscalls_per_1k_pkts"] = {k: round(v / n * 1000, 2) for k, v in counts.items() if v}
    if counts.get("recvmmsg"):
        res["pkts_per_recvmmsg"] = round(n / counts["recvmmsg"], 1)
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--rate", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=1400)
    ap.add_argument("--vnis", default="4,100")
    ap.add_argument("--py-spy", default=shutil.which("py-spy"))
    ap.add_argument("--keep", default=None, help="directory for the tools' raw reports")
    ap.add_argument("--out-dir", default="/dev/shm/tm-prof")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tm-prof-", dir="/tmp"))
    os.chmod(tmp, 0o755)
    keep = Path(a.keep) if a.keep else tmp / "keep"
    keep.mkdir(parents=True, exist_ok=True)
    base = Path(a.out_dir)
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    os.chmod(base, 0o777)
    vxsend, drain = bench.build(tmp)
    rmem = Path("/proc/sys/net/core/rmem_max")
    before = rmem.read_text().strip()
    rmem.write_text(str(64 << 20))
    bed = Bed().up()
    load = [Path("/proc/loadavg").read_text().split()[:3]]
    try:
        bed.ns(bed.srv, "ip link set und0 mtu 1500")
        bed.ns(bed.agt, "ip link set und1 mtu 1500")
        for v in (int(x) for x in a.vnis.split(",")):
            pf = bench.pool(tmp, a.size, v)
            print(json.dumps(drain_case(bed, drain, keep, vxsend, pf, a.packets, a.rate)), flush=True)
            print(json.dumps(agent_case(bed, base, keep, vxsend, pf, a.packets, a.rate, v, a.py_spy)), flush=True)
    finally:
        bed.down()
        rmem.write_text(before)
        shutil.rmtree(base, ignore_errors=True)
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    load.append(Path("/proc/loadavg").read_text().split()[:3])
    print(json.dumps({"loadavg_start_end": load}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
