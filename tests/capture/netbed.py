"""A real packet test bed: network namespaces, veth pairs, kernel vxlan devices, tc mirroring.

    client ns  cli0 172.30.0.1 ──veth── srv0 172.30.0.2  server ns (the "mirror source")
                                                            │ tc u32 mirred (ingress+egress)
                                                            ▼ vx<VNI> kernel vxlan devices
                                        und0 10.99.0.1 ──veth── und1 10.99.0.2  agent ns (the target)

The kernel's vxlan device encapsulates exactly as a VXLAN sender does; the agent in the agent
namespace receives on a plain UDP socket, as an unprivileged user with no capabilities.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shlex
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python")
CLI_IP, SRV_IP, UND_SRC, UND_AGT = "172.30.0.1", "172.30.0.2", "10.99.0.1", "10.99.0.2"
CLI_MAC, SRV_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
NOBODY = 65534
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def sh(cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, shell=True, check=check, text=True, capture_output=True, **kw)


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread that has joined network namespace ``ns`` (setns is per thread), so
    the test process can open sockets there without a subprocess."""
    out: list[Any] = []

    def target() -> None:
        fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)
        try:
            out.append(("ok", fn()))
        except BaseException as exc:
            out.append(("err", exc))

    t = threading.Thread(target=target)
    t.start()
    t.join()
    kind, value = out[0]
    if kind == "err":
        raise value
    return value  # type: ignore[no-any-return]


class Bed:
    def __init__(self) -> None:
        p = "tmc" + secrets.token_hex(3)
        self.cli, self.srv, self.agt = f"{p}-cli", f"{p}-srv", f"{p}-agt"
        self.vnis: list[int] = []

    def ns(self, ns: str, cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh(f"ip netns exec {ns} {cmd}", check=check)

    def up(self) -> Bed:
        for ns in (self.cli, self.srv, self.agt):
            sh(f"ip netns add {ns}")
            # No IPv6: router solicitations and MLD reports would otherwise be mirrored too.
            self.ns(ns, "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
            self.ns(ns, "ip link set lo up")
        self.ns(
            self.cli,
            f"ip link add cli0 address {CLI_MAC} type veth peer name srv0 address {SRV_MAC} netns {self.srv}",
        )
        self.ns(self.srv, f"ip link add und0 type veth peer name und1 netns {self.agt}")
        self.ns(self.cli, f"ip addr add {CLI_IP}/24 dev cli0")
        self.ns(self.cli, "ip link set cli0 up")
        self.ns(self.srv, f"ip addr add {SRV_IP}/24 dev srv0")
        self.ns(self.srv, "ip link set srv0 up")
        # Static neighbours: no ARP in the mirrored stream, so packet counts are exact.
        self.ns(self.cli, f"ip neigh replace {SRV_IP} lladdr {SRV_MAC} dev cli0 nud permanent")
        self.ns(self.srv, f"ip neigh replace {CLI_IP} lladdr {CLI_MAC} dev srv0 nud permanent")
        # A jumbo underlay: encapsulated full-size frames are never fragmented.
        self.ns(self.srv, f"ip addr add {UND_SRC}/24 dev und0")
        self.ns(self.srv, "ip link set und0 mtu 9000 up")
        self.ns(self.agt, f"ip addr add {UND_AGT}/24 dev und1")
        self.ns(self.agt, "ip link set und1 mtu 9000 up")
        self.ns(self.srv, "tc qdisc add dev srv0 clsact")
        return self

    def down(self) -> None:
        for ns in (self.cli, self.srv, self.agt):
            sh(f"ip netns pids {ns} | xargs -r kill -9", check=False)
            sh(f"ip netns del {ns}", check=False)

    def add_vxlan(self, vni: int, port: int = 4789) -> str:
        dev = f"vx{vni}"
        self.ns(
            self.srv,
            f"ip link add {dev} type vxlan id {vni} remote {UND_AGT} local {UND_SRC} dstport {port} dev und0",
        )
        self.ns(self.srv, f"ip link set {dev} mtu 8950 up")
        self.vnis.append(vni)
        return dev

    def mirror(self, vni: int) -> None:
        """Mirror everything srv0 sends and receives into VNI ``vni`` (what AWS does for an ENI).
        A match-everything u32 filter, because not every kernel has cls_matchall."""
        dev = f"vx{vni}"
        for direction in ("ingress", "egress"):
            self.ns(
                self.srv,
                f"tc filter add dev srv0 {direction} protocol all u32 match u32 0 0 "
                f"action mirred egress mirror dev {dev}",
            )

    def unmirror(self) -> None:
        for direction in ("ingress", "egress"):
            self.ns(self.srv, f"tc filter del dev srv0 {direction}", check=False)

    def send_frames(self, vni: int, frames: list[bytes]) -> None:
        """Hand raw Ethernet frames to the vxlan device; the kernel encapsulates them."""
        dev = f"vx{vni}"

        def go() -> None:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind((dev, 0))
            for f in frames:
                s.send(f)
            s.close()

        in_netns(self.srv, go)

    def send_datagrams(self, payloads: list[bytes], port: int = 4789) -> None:
        """Raw VXLAN payloads from the source namespace (for what no kernel sender produces)."""

        def go() -> None:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((UND_SRC, 0))
            for p in payloads:
                s.sendto(p, (UND_AGT, port))
            s.close()

        in_netns(self.srv, go)

    def udp_queue_empty(self, port: int = 4789) -> bool:
        """The agent socket's receive queue (rx_queue in /proc/net/udp) is drained."""
        text = self.ns(self.agt, "cat /proc/net/udp").stdout
        hexport = f":{port:04X}"
        for line in text.splitlines()[1:]:
            f = line.split()
            if f[1].endswith(hexport):
                rx = int(f[4].split(":")[1], 16)
                if rx:
                    return False
        return True


class AgentProc:
    """The agent as nobody with no capabilities (setpriv), inside the agent namespace.

    Rotation by time is off unless the test's ``args`` set ``--rotate-interval`` (the last one
    given wins): the agent's default closes every file at each wall-clock multiple of 5 minutes,
    and a test whose packets straddle one would find its session in two files by chance. The
    tests that assert one file per session, per pod or per writer mean that with time rotation
    off; rotation has its own tests."""

    def __init__(self, bed: Bed, work: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        self.bed = bed
        self.work = work
        self.log_path = work / "agent.log"
        self.metrics_port = 9090
        cmd = [
            "ip",
            "netns",
            "exec",
            bed.agt,
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            PYTHON,
            "-m",
            "trafficmirror.capture",
            "agent",
            "--work-dir",
            str(work / "work"),
            "--node",
            "node-a",
            "--cluster",
            "test",
            "--metrics-address",
            "127.0.0.1",
            "--metrics-port",
            str(self.metrics_port),
            "--no-fsync",
            "--rotate-interval",
            "0",
            *args,
        ]
        full_env = {
            "PATH": os.environ["PATH"],
            "HOME": "/tmp",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.logf = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=full_env)

    def log(self) -> str:
        return self.log_path.read_text()

    def get(self, path: str) -> tuple[int, str]:
        def go() -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        return in_netns(self.bed.agt, go)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        try:
            text = self.get("/metrics")[1]
        except OSError as exc:
            raise AssertionError(f"agent unreachable ({exc}), exit code {self.proc.poll()}:\n{self.log()}") from exc
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out

    def wait_ready(self, timeout: float = 20) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                if self.get("/readyz")[0] == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"agent not ready:\n{self.log()}")

    def wait_for(self, pred: Callable[[dict[str, float]], bool], timeout: float = 30) -> dict[str, float]:
        end = time.monotonic() + timeout
        m: dict[str, float] = {}
        while time.monotonic() < end:
            m = self.metrics()
            if pred(m):
                return m
            time.sleep(0.1)
        raise AssertionError(f"condition not met; metrics: {json.dumps(m, indent=1)}\n{self.log()[-4000:]}")

    def quiesce(self, timeout: float = 60) -> dict[str, float]:
        """Until the kernel queue is empty and the datagram counter stops moving."""
        end = time.monotonic() + timeout
        last = -1.0
        while time.monotonic() < end:
            m = self.metrics()
            n = m.get("trafficmirror_capture_datagrams_total", 0)
            if n == last and self.bed.udp_queue_empty():
                return m
            last = n
            time.sleep(0.6)
        raise AssertionError("agent never went quiet")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.logf.close()
        return rc


def caps_of(pid: int) -> dict[str, str]:
    """Capability sets of the agent's Python process (the child of ip-netns-exec/setpriv)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {
        k: v.strip() for k, v in (line.split(":", 1) for line in status.splitlines()) if k.startswith(("Cap", "Uid"))
    }


def tshark(path: str | Path, *args: str) -> subprocess.CompletedProcess[str]:
    """tshark as nobody: as root it warns on stderr, and we want stderr to mean a problem."""
    cmd = [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "tshark",
        "-r",
        str(path),
        *args,
    ]
    env = {"PATH": os.environ["PATH"], "HOME": "/tmp"}
    return subprocess.run(cmd, text=True, capture_output=True, check=False, env=env)


def tshark_clean(path: str | Path, *args: str) -> str:
    """tshark output, asserting it exits 0 and prints nothing on stderr (no warnings at all)."""
    r = tshark(path, *args)
    assert r.returncode == 0 and r.stderr == "", f"tshark {path} {args}: rc={r.returncode} {r.stderr}"
    return r.stdout


def capinfos_count(path: str | Path) -> int:
    r = subprocess.run(["capinfos", "-M", "-c", "-T", str(path)], text=True, capture_output=True, check=True)
    return int(r.stdout.strip().splitlines()[-1].split("\t")[1])


def files_of(root: Path, namespace: str, session: str) -> list[Path]:
    d = root / namespace / session
    return sorted(p for p in d.iterdir() if not p.name.startswith(".")) if d.exists() else []


def chown_tree(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, NOBODY, NOBODY)


@contextlib.contextmanager
def bed_up() -> Iterator[Bed]:
    b = Bed().up()
    try:
        yield b
    finally:
        b.down()


def quote(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


if __name__ == "__main__":  # manual poking: python tests/capture/netbed.py
    with bed_up() as b:
        print(b.cli, b.srv, b.agt)
        sys.stdin.readline()
