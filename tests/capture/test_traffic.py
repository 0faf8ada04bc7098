"""Real mirrored traffic (ICMP, UDP, an HTTP exchange over TCP) through a kernel vxlan device,
captured by the unprivileged agent and read back by tshark."""

from __future__ import annotations

import collections
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from netbed import (
    CLI_IP,
    SRV_IP,
    AgentProc,
    Bed,
    caps_of,
    files_of,
    in_netns,
    tshark_clean,
)

from trafficmirror.capture import pcapng

pytestmark = pytest.mark.root


def _udp_socket(addr: tuple[str, int]) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(addr)
    s.settimeout(5)
    return s


def _start_http(bed: Bed, root: Path) -> subprocess.Popen[bytes]:
    root.mkdir()
    (root / "hello.txt").write_text("hello, mirror\n")
    srv = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            bed.srv,
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            SRV_IP,
            "--directory",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):  # ready before mirroring starts, so the probes are not in the capture
        if bed.ns(bed.cli, f"curl -sf -o /dev/null http://{SRV_IP}:8080/", check=False).returncode == 0:
            return srv
        time.sleep(0.1)
    raise AssertionError("http server did not start")


def _agent_pid(agent: AgentProc) -> int:
    # ip-netns-exec and setpriv both exec, so Popen's pid is the Python supervisor itself.
    return agent.proc.pid


def test_mirrored_icmp_udp_http_exactly_as_on_the_wire(bed: Bed, work: Path) -> None:
    http = _start_http(bed, work / "www")
    try:
        bed.add_vxlan(100)
        agent = AgentProc(bed, work, ["--session", "100=shop/web@eni-0abc1234", "--output-dir", str(work / "out")])
        agent.wait_ready()
        caps = caps_of(_agent_pid(agent))
        assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == caps["CapAmb"] == "0" * 16
        assert caps["Uid"].split() == ["65534"] * 4

        ref = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                bed.srv,
                "tcpdump",
                "-i",
                "srv0",
                "-U",
                "--immediate-mode",
                "-w",
                str(work / "ref.pcap"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert ref.stderr is not None
        assert "listening on" in ref.stderr.readline()
        bed.mirror(100)

        bed.ns(bed.cli, f"ping -c 4 -i 0.2 {SRV_IP}")
        srv_udp = in_netns(bed.srv, lambda: _udp_socket((SRV_IP, 5000)))
        cli_udp = in_netns(bed.cli, lambda: _udp_socket((CLI_IP, 5001)))
        for i in range(5):
            cli_udp.sendto(f"ping {i}".encode(), (SRV_IP, 5000))
            data, peer = srv_udp.recvfrom(100)
            srv_udp.sendto(b"pong " + data, peer)
            assert cli_udp.recvfrom(100)[0] == f"pong ping {i}".encode()
        body = bed.ns(bed.cli, f"curl -sf http://{SRV_IP}:8080/hello.txt").stdout
        assert body == "hello, mirror\n"
        time.sleep(0.5)  # the last FIN/ACKs

        bed.unmirror()
        agent.quiesce()
        ref.send_signal(signal.SIGINT)
        ref.wait(10)
        assert agent.stop() == 0
    finally:
        http.terminate()
        http.wait()

    files = files_of(work / "out", "shop", "web")
    assert len(files) == 1, files
    f = files[0]
    assert f.name.startswith("node-a-") and f.name.endswith("-000001.pcapng")

    # Exactly the frames tcpdump saw on the source interface, byte for byte.
    ours = pcapng.read_file(str(f))
    wire = pcapng.read_file(str(work / "ref.pcap"))
    assert collections.Counter(p.data for p in ours.packets) == collections.Counter(p.data for p in wire.packets)
    assert all(p.caplen == p.orig_len for p in ours.packets)

    assert tshark_clean(f, "-Y", "icmp.type == 8").count("\n") == 4
    assert tshark_clean(f, "-Y", "icmp.type == 0").count("\n") == 4
    assert tshark_clean(f, "-Y", "udp.port == 5000").count("\n") == 10
    requests = tshark_clean(
        f,
        "-Y",
        "http.request",
        "-T",
        "fields",
        "-e",
        "http.request.method",
        "-e",
        "http.request.uri",
        "-e",
        "http.request.version",
    ).splitlines()
    assert requests == ["GET\t/hello.txt\tHTTP/1.1"]
    assert "GET /hello.txt HTTP/1.1" in tshark_clean(f, "-Y", "http.request")
    responses = tshark_clean(f, "-Y", "http.response", "-T", "fields", "-e", "http.response.code").split()
    assert responses == ["200"]
    convs = tshark_clean(f, "-q", "-z", "conv,tcp")
    assert f"{CLI_IP}:" in convs and f"{SRV_IP}:8080" in convs
    # No malformed or truncated frame anywhere (expert info would say so).
    assert tshark_clean(f, "-Y", "_ws.malformed || _ws.expert.severity >= warning") == ""

    # The interface block names the session; the statistics block carries the counts.
    assert ours.interfaces[0].name == "shop/web"
    assert ours.interfaces[0].description == "vni=100 session=shop/web eni=eni-0abc1234 node=node-a cluster=test"
    assert ours.interfaces[0].tsresol_ns == 1.0
    assert ours.statistics[-1].received == len(ours.packets)
    assert ours.statistics[-1].os_dropped == 0


def test_port_taken_by_a_vxlan_device_exits_with_a_clear_message(bed: Bed, work: Path) -> None:
    # What Calico's vxlan.calico does on a node: the kernel owns UDP 4789.
    bed.ns(bed.agt, "ip link add vxlan.calico type vxlan id 4096 dstport 4789 dev und1")
    bed.ns(bed.agt, "ip link set vxlan.calico up")
    agent = AgentProc(bed, work, ["--output-dir", str(work / "out")])
    rc = agent.proc.wait(30)
    agent.stop()
    assert rc != 0
    log = agent.log()
    assert "UDP port 4789 on 0.0.0.0 is already in use" in log
    assert "vxlan.calico" in log
