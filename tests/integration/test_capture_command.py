"""`trafficmirror capture` against the real apiserver, the operator as a process and the AWS emulator: what it
creates, how it waits, and that nothing is left behind in Kubernetes or AWS however it ends."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Cluster, fresh_instance
from trafficmirror.kubecapture import plan
from trafficmirror_testbed.kube import ControlPlane
from trafficmirror_testbed.seed import World

pytestmark = [pytest.mark.testbed, pytest.mark.emulator]

LABEL = f"{plan.CREATED_BY_LABEL}={plan.CREATED_BY}"


class CaptureRun:
    """`trafficmirror capture …` as the user runs it, its stderr collected line by line."""

    def __init__(self, env: dict[str, str], *args: str, command: list[str] | None = None, cwd: Path | None = None):
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", "trafficmirror.cli", "capture", *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, text: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in self.lines if text in line), None)
            if found is not None:
                return found
            if self.process.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.2)
        raise AssertionError(f"no line with {text!r} in:\n" + "\n".join(self.lines))

    def finish(self, timeout: float = 240) -> int:
        code = self.process.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


def _created(control_plane: ControlPlane, namespace: str) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for kind in ("mirrorsessions", "mirrorfilters"):
        listed = control_plane.kubectl("get", kind, "-n", namespace, "-l", LABEL, "-o", "json").stdout
        out[kind] = json.loads(listed)["items"]
    return out


def _aws_owned(ec2: Any, uids: set[str]) -> list[str]:
    found = []
    for call, key, id_key in (
        (ec2.describe_traffic_mirror_sessions, "TrafficMirrorSessions", "TrafficMirrorSessionId"),
        (ec2.describe_traffic_mirror_filters, "TrafficMirrorFilters", "TrafficMirrorFilterId"),
    ):
        for item in call()[key]:
            tags = {t["Key"]: t["Value"] for t in item.get("Tags", [])}
            if tags.get("trafficmirror.io/owner-uid") in uids:
                found.append(item[id_key])
    return found


@pytest.fixture
def capture_target(cluster: Cluster, world: World) -> str:
    cluster.apply(
        {"kind": "MirrorTarget", "metadata": {"name": "capture"}, "spec": {"networkInterfaceId": world.eni("capture")}}
    )
    cluster.wait_phase("mirrortarget", "capture", "Ready", timeout=90)
    return "capture"


@pytest.fixture
def source_node(control_plane: ControlPlane, ec2: Any, world: World, namespace: str) -> tuple[str, str]:
    """A Node of its own (a fresh instance: no other test's sessions on its ENI): (node name, ENI)."""
    instance, eni = fresh_instance(ec2, world)
    name = f"src-{namespace[-8:]}"
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"providerID": f"aws:///us-east-1a/{instance}"},
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(node))
    return name, eni


def _wait_mirroring(
    control_plane: ControlPlane, namespace: str, ec2: Any, eni: str, timeout: float = 90
) -> dict[str, Any]:
    """The session the command created is Ready, and AWS mirrors its source ENI."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sessions = _created(control_plane, namespace)["mirrorsessions"]
        if sessions and (sessions[0].get("status") or {}).get("phase") == "Ready":
            aws = ec2.describe_traffic_mirror_sessions(Filters=[{"Name": "network-interface-id", "Values": [eni]}])
            if aws["TrafficMirrorSessions"]:
                return sessions[0]
        time.sleep(0.5)
    raise AssertionError(f"never mirrored: {_created(control_plane, namespace)}")


@pytest.mark.parametrize(
    "ending",
    ["SIGINT", "SIGINT twice", "SIGTERM"],
)
def test_ending_a_capture_by_signal_deletes_what_it_created_and_leaves_no_aws_session(
    control_plane: ControlPlane,
    cluster: Cluster,
    ec2: Any,
    namespace: str,
    capture_target: str,
    source_node: tuple[str, str],
    tmp_path: Path,
    ending: str,
) -> None:
    node, eni = source_node
    run = CaptureRun(control_plane.env(), f"node/{node}", "-n", namespace, "-o", str(tmp_path / "out.pcapng"))
    run.wait_line("capturing node/")
    session = _wait_mirroring(control_plane, namespace, ec2, eni)
    created = _created(control_plane, namespace)
    # Exactly one session and one filter, the session naming the filter and the only Ready target.
    assert [len(created["mirrorsessions"]), len(created["mirrorfilters"])] == [1, 1]
    spec = session["spec"]
    assert spec["source"] == {"nodeName": node} and spec["targetRef"] == {"name": capture_target}
    assert spec["filterRef"]["name"] == created["mirrorfilters"][0]["metadata"]["name"]
    uids = {created[k][0]["metadata"]["uid"] for k in created}

    first = signal.SIGTERM if ending == "SIGTERM" else signal.SIGINT
    run.process.send_signal(first)
    if ending == "SIGINT twice":
        run.wait_line("Ctrl-C: ending the capture now")
        run.process.send_signal(signal.SIGINT)
    code = run.finish()

    assert code == {"SIGINT": 0, "SIGINT twice": 130, "SIGTERM": 143}[ending], run.stderr
    assert _created(control_plane, namespace) == {"mirrorsessions": [], "mirrorfilters": []}, run.stderr
    assert "deleted mirrorfilters/" in run.stderr or "still deleting" in run.stderr
    deadline = time.monotonic() + 60
    while _aws_owned(ec2, uids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _aws_owned(ec2, uids) == []
    assert (
        ec2.describe_traffic_mirror_sessions(Filters=[{"Name": "network-interface-id", "Values": [eni]}])[
            "TrafficMirrorSessions"
        ]
        == []
    )


def test_for_ends_the_capture_by_itself_and_cleans_up(
    control_plane: ControlPlane,
    cluster: Cluster,
    ec2: Any,
    namespace: str,
    capture_target: str,
    source_node: tuple[str, str],
    tmp_path: Path,
) -> None:
    """`--for 10s`: the session carries the duration, the command waits for Completed and deletes what it made.
    No capture agent runs here: nothing is mirrored to download, and the command says so."""
    node, eni = source_node
    started = time.monotonic()
    run = CaptureRun(
        control_plane.env(), f"node/{node}", "-n", namespace, "--for", "10s", "-o", str(tmp_path / "f.pcapng")
    )
    session = _wait_mirroring(control_plane, namespace, ec2, eni)
    assert session["spec"]["duration"] == "10s"
    uids = {o["metadata"]["uid"] for items in _created(control_plane, namespace).values() for o in items}
    code = run.finish()
    assert code == 0, run.stderr
    assert time.monotonic() - started >= 10
    assert "Completed" in run.stderr and "no packets were mirrored" in run.stderr
    assert _created(control_plane, namespace) == {"mirrorsessions": [], "mirrorfilters": []}
    assert _aws_owned(ec2, uids) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pod/nope"], "no pod 'nope' in namespace"),
        (["deployment/nope"], "no deployment 'nope' in namespace"),
        (["node/nope"], "no node 'nope' in this cluster"),
    ],
)
def test_naming_what_does_not_exist_creates_nothing(
    control_plane: ControlPlane, cluster: Cluster, namespace: str, capture_target: str, args: list[str], message: str
) -> None:
    run = CaptureRun(control_plane.env(), *args, "-n", namespace)
    assert run.finish(timeout=60) == 1
    assert message in run.stderr
    assert _created(control_plane, namespace) == {"mirrorsessions": [], "mirrorfilters": []}


def test_without_a_ready_target_it_says_how_to_make_one_and_creates_nothing(
    control_plane: ControlPlane, cluster: Cluster, namespace: str, source_node: tuple[str, str]
) -> None:
    run = CaptureRun(control_plane.env(), f"node/{source_node[0]}", "-n", namespace)
    assert run.finish(timeout=60) == 1
    assert f"no Ready MirrorTarget in namespace {namespace}" in run.stderr
    assert "kubectl label node <capture-node> trafficmirror.io/capture=true" in run.stderr
    assert _created(control_plane, namespace) == {"mirrorsessions": [], "mirrorfilters": []}


def _plugin_env(control_plane: ControlPlane) -> dict[str, str]:
    """kubectl finds kubectl-trafficmirror on PATH, as a user's kubectl finds it after `pip install trafficmirror`."""
    plugin = Path(sys.executable).parent / "kubectl-trafficmirror"
    assert plugin.exists(), f"{plugin} missing: reinstall the project (make .venv/.installed) for its entry points"
    env = control_plane.env()
    env["PATH"] = f"{plugin.parent}:{control_plane.bin_dir}:{env.get('PATH', '')}"
    return env


def test_kubectl_runs_the_capture_as_a_plugin(
    control_plane: ControlPlane,
    cluster: Cluster,
    ec2: Any,
    namespace: str,
    capture_target: str,
    source_node: tuple[str, str],
    tmp_path: Path,
) -> None:
    env = _plugin_env(control_plane)
    kubectl = str(control_plane.bin_dir / "kubectl")
    listed = subprocess.run([kubectl, "plugin", "list"], env=env, capture_output=True, text=True)
    assert "kubectl-trafficmirror" in listed.stdout, listed.stdout + listed.stderr

    moved = subprocess.run(
        [kubectl, "trafficmirror", "capture", "--port", "4789"], env=env, capture_output=True, text=True
    )
    assert moved.returncode == 2 and "trafficmirror agent" in moved.stderr, moved.stderr

    node, eni = source_node
    run = CaptureRun(
        env,
        command=[
            kubectl,
            "trafficmirror",
            "capture",
            f"node/{node}",
            "-n",
            namespace,
            "--for",
            "10s",
            "-o",
            "f.pcapng",
        ],
        cwd=tmp_path,
    )
    session = _wait_mirroring(control_plane, namespace, ec2, eni)
    assert session["spec"]["duration"] == "10s" and session["spec"]["source"] == {"nodeName": node}
    assert run.finish() == 0, run.stderr
    assert "Completed" in run.stderr and "deleted mirrorfilters/" in run.stderr
    assert _created(control_plane, namespace) == {"mirrorsessions": [], "mirrorfilters": []}


@pytest.fixture
def agent(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Any:
    """The capture agent as a process (`trafficmirror agent --kube`) on a loopback port, keeping its files in
    a directory: it learns the session's VNI from the apiserver and lists its files when the session ends.
    The mirrored datagrams come from this machine, not from the source ENI: --no-source-check."""
    from trafficmirror_testbed.kube import free_port

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "token").write_text(control_plane.admin_token)
    out, work, metrics = tmp_path / "out", tmp_path / "work", free_port()
    command = [
        sys.executable, "-m", "trafficmirror.cli", "agent", "--address", "127.0.0.1", "--port", str(port),
        "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics), "--work-dir", str(work),
        "--output-dir", str(out), "--node", "capture-node", "--no-fsync", "--no-source-check", "--kube",
        "--kube-server", control_plane.url, "--kube-token-file", str(tmp_path / "token"),
        "--kube-ca-file", str(control_plane.ca_file), "--kube-namespace", namespace, "--status-interval", "0.5",
    ]  # fmt: skip
    with (tmp_path / "agent.log").open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield {"port": port, "out": out, "metrics": metrics, "log": tmp_path / "agent.log", "process": process}
    finally:
        process.terminate()
        process.wait(timeout=60)


def _agent_sessions(metrics_port: int) -> float:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0
    return next(
        (float(line.split()[1]) for line in text.splitlines() if line.startswith("trafficmirror_capture_sessions ")), 0
    )


def test_capture_for_10s_ends_with_the_mirrored_packets_in_one_pcapng(
    control_plane: ControlPlane,
    cluster: Cluster,
    ec2: Any,
    namespace: str,
    capture_target: str,
    source_node: tuple[str, str],
    agent: dict[str, Any],
    tmp_path: Path,
) -> None:
    """The whole path on one machine: the command creates the session, the operator mirrors in AWS (emulated),
    the datagrams AWS would send reach the agent, the session Completes after 10 s, the agent closes and lists
    its files, and the command merges them into f.pcapng and deletes what it made."""
    from tests.capture.frames import ipv4_udp
    from trafficmirror.capture import pcapng, vxlan

    node, eni = source_node
    output = tmp_path / "f.pcapng"
    run = CaptureRun(
        control_plane.env(),
        f"node/{node}",
        "-n",
        namespace,
        "--for",
        "10s",
        "-o",
        str(output),
        "--dir",
        str(agent["out"]),
    )
    session = _wait_mirroring(control_plane, namespace, ec2, eni)
    deadline = time.monotonic() + 30
    while _agent_sessions(agent["metrics"]) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    frames = [ipv4_udp("10.1.0.7", "10.1.0.8", 40000 + i, 443, b"capture-%04d" % i) for i in range(50)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for frame in frames:
            tx.sendto(vxlan.header(session["status"]["virtualNetworkId"]) + frame, ("127.0.0.1", agent["port"]))
    assert run.finish() == 0, run.stderr + "\n" + agent["log"].read_text()[-2000:]
    assert f"{output}: {len(frames)} packets" in run.stderr, run.stderr
    assert [p.data for p in pcapng.read_file(str(output)).packets] == frames
    assert _created(control_plane, namespace) == {"mirrorsessions": [], "mirrorfilters": []}
    assert (
        ec2.describe_traffic_mirror_sessions(Filters=[{"Name": "network-interface-id", "Values": [eni]}])[
            "TrafficMirrorSessions"
        ]
        == []
    )


def test_an_object_whose_create_answer_was_lost_is_found_by_its_run_label_and_deleted(
    control_plane: ControlPlane, cluster: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C between a create request and its answer: the object exists but the command never learnt its
    name. Cleanup lists this run's label and deletes it too, and nothing of another run."""
    from trafficmirror.kubecapture.command import Created, Progress, Signals
    from trafficmirror.kubecapture.kube import KubeApi

    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    api = KubeApi.connect()
    matches = plan.parse_filter("tcp:443")
    for run_id, name in (("lost0001", "lost-answer"), ("other002", "another-run")):
        manifest = plan.build_filter("x-", namespace, matches, "pod/web", run_id)
        manifest["metadata"] = {**manifest["metadata"], "name": name}
        manifest["metadata"].pop("generateName")
        control_plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    created = Created(api, namespace, run_id="lost0001", attempted=["mirrorfilters"])
    lines: list[str] = []

    class Collect:
        def write(self, text: str) -> None:
            lines.append(text)

        def flush(self) -> None:
            pass

    assert created.delete_all(Progress(Collect()), wait=True, interruptible=Signals())  # type: ignore[arg-type]
    assert created.objects == [("mirrorfilters", "lost-answer")]
    left = control_plane.kubectl("get", "mirrorfilters", "-n", namespace, "-o", "name").stdout.split()
    assert left == ["mirrorfilter.trafficmirror.io/another-run"], "".join(lines)


@pytest.mark.parametrize("seed", [20261130, 1, 2, 3])
def test_a_signal_at_any_moment_leaves_nothing_behind(
    control_plane: ControlPlane,
    cluster: Cluster,
    ec2: Any,
    namespace: str,
    capture_target: str,
    source_node: tuple[str, str],
    tmp_path: Path,
    seed: int,
) -> None:
    """Seeded: SIGINT, SIGINT twice or SIGTERM at a random moment from the start (before, during or after the
    creates, while waiting). Invariant: the command ends, and neither this run's objects nor an AWS session
    on the source ENI remain."""
    import random

    rng = random.Random(seed)
    node, eni = source_node
    signals = rng.choice([[signal.SIGINT], [signal.SIGINT, signal.SIGINT], [signal.SIGTERM]])
    delay = rng.uniform(0.0, 6.0)
    run = CaptureRun(control_plane.env(), f"node/{node}", "-n", namespace, "-o", str(tmp_path / "out.pcapng"))
    time.sleep(delay)
    for signum in signals:
        run.process.send_signal(signum)
        time.sleep(rng.uniform(0.0, 1.0))
    code = run.finish()
    note = f"seed {seed}: {[s.name for s in signals]} after {delay:.2f}s\n{run.stderr}"
    # A negative code: the signal came while the interpreter was still starting, before the command's own
    # handlers; it had created nothing yet (the invariants below hold all the same).
    assert code in (0, 130, 143, -signal.SIGINT, -signal.SIGTERM), note
    if code < 0:
        assert "capturing" not in run.stderr, note
    assert _created(control_plane, namespace) == {"mirrorsessions": [], "mirrorfilters": []}, note
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        aws = ec2.describe_traffic_mirror_sessions(Filters=[{"Name": "network-interface-id", "Values": [eni]}])
        if not aws["TrafficMirrorSessions"]:
            break
        time.sleep(0.5)
    assert aws["TrafficMirrorSessions"] == [], note


@pytest.mark.parametrize(
    ("what", "chosen"), [("deployment/web", ("web-1", "web-2", "web-3")), ("pod/web-2", ("web-2",))]
)
def test_capture_deployment_for_10s_on_two_nodes_holds_only_its_pods_packets(
    what: str,
    chosen: tuple[str, ...],
    control_plane: ControlPlane,
    cluster: Cluster,
    ec2: Any,
    world: World,
    namespace: str,
    capture_target: str,
    agent: dict[str, Any],
    tmp_path: Path,
) -> None:
    """`trafficmirror capture deployment/web --for 10s`: the whole path for a workload. The Deployment's
    3 pods sit on 2 nodes; on node a's ENI also lives an address of no selected pod (another workload's
    pod). The parent session finds both ENIs, the agent gets datagrams on both VNIs, the selected pods'
    and the other address's; the command completes by itself, f.pcapng holds exactly the selected pods'
    packets, the others are counted as filteredOut, the cost is set, and nothing is left afterwards.
    `pod/web-2`: only that pod's ENI is mirrored, and its neighbour web-1's packets are filtered out too.

    No kubelet and no Deployment controller act here: the Deployment (replicas 0) is the object whose
    selector the command reads, the pods carry its labels, and the test writes their `status.podIP`
    itself, standing in for the kubelet (test_workload_sources.Workload)."""
    from tests.capture.frames import ipv4_udp
    from tests.integration.test_workload_sources import Workload
    from trafficmirror.capture import vxlan

    load = Workload(cluster, ec2, world)
    node_a, node_b = load.add_node("ca"), load.add_node("cb")
    eni_a, eni_b = load.nodes[node_a][1], load.nodes[node_b][1]
    pods = {
        "web-1": load.add_pod("web-1", node_a),
        "web-2": load.add_pod("web-2", node_a),
        "web-3": load.add_pod("web-3", node_b),
    }
    stranger = load.add_pod("db-1", node_a, labels={"app": "db"})
    eni_of = {"web-1": eni_a, "web-2": eni_a, "web-3": eni_b}
    wanted_enis = {eni_of[name] for name in chosen}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "web:1"}]}}},
    }  # fmt: skip
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(deployment))

    output = tmp_path / "f.pcapng"
    run = CaptureRun(
        control_plane.env(), what, "-n", namespace, "--for", "10s", "-o", str(output),
        "--dir", str(agent["out"]),
    )  # fmt: skip

    # The command deletes its session on exit: watch the parent's status while it runs.
    seen: dict[str, Any] = {}
    stop_watching = threading.Event()

    def watch() -> None:
        while not stop_watching.is_set():
            for session in _created(control_plane, namespace)["mirrorsessions"]:
                if not (session["metadata"].get("labels") or {}).get("trafficmirror.io/parent-session"):
                    seen["parent"] = session
                    seen.setdefault("uids", set()).add(session["metadata"]["uid"])
                    if (session.get("status") or {}).get("phase") == "Completed":
                        seen["completed"] = session
            time.sleep(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        deadline = time.monotonic() + 120
        sources: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            sources = ((seen.get("parent") or {}).get("status") or {}).get("sources") or []
            if len(sources) == len(wanted_enis) and all(s.get("virtualNetworkId") is not None for s in sources):
                break
            time.sleep(0.3)
        assert {s["networkInterfaceId"] for s in sources} == wanted_enis, (seen.get("parent"), run.stderr)
        parent = seen["parent"]
        assert parent["spec"]["source"]["podSelector"] == {"matchLabels": {"app": "web"}}
        assert parent["spec"]["duration"] == "10s"
        by_eni = {s["networkInterfaceId"]: s for s in sources}
        for eni in wanted_enis:
            assert {p["ip"] for p in by_eni[eni]["pods"]} == {pods[n] for n in chosen if eni_of[n] == eni}
        while _agent_sessions(agent["metrics"]) < len(wanted_enis) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _agent_sessions(agent["metrics"]) >= len(wanted_enis), agent["log"].read_text()[-2000:]

        # Datagrams as AWS would send them, each ENI on its own VNI: a selected pod's packets, and on
        # ENI a the unselected address's too (only the pods' /32s reach AWS's filter in reality; the
        # agent's own narrowing is what is tested here).
        selected: list[bytes] = []
        unselected: list[bytes] = []
        peer = "10.200.0.9"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for i in range(60):
                name = ("web-1", "web-2", "web-3")[i % 3]
                if eni_of[name] not in by_eni:
                    continue  # an ENI not mirrored: AWS sends nothing of it
                frame = ipv4_udp(pods[name], peer, 40000 + i, 443, b"web-%04d" % i)
                (selected if name in chosen else unselected).append(frame)
                tx.sendto(vxlan.header(by_eni[eni_of[name]]["virtualNetworkId"]) + frame, ("127.0.0.1", agent["port"]))
            for i in range(20):
                frame = ipv4_udp(stranger, peer, 41000 + i, 5432, b"db-%04d" % i)
                unselected.append(frame)
                tx.sendto(vxlan.header(by_eni[eni_a]["virtualNetworkId"]) + frame, ("127.0.0.1", agent["port"]))

        code = run.finish()
    finally:
        stop_watching.set()
        watcher.join(timeout=10)
    assert code == 0, run.stderr + "\n" + agent["log"].read_text()[-2000:]

    # Completed by itself, with the cost and the agent's counts.
    completed = seen.get("completed")
    assert completed is not None, run.stderr
    status = completed["status"]
    stop_at, completed_at = (
        datetime.fromisoformat(status[k].replace("Z", "+00:00")) for k in ("stopAt", "completedAt")
    )
    assert completed_at >= stop_at, status
    print(f"parent Completed {(completed_at - stop_at).total_seconds():.0f} s after its stopAt")
    cost = status.get("estimatedCost") or {}
    assert float(cost.get("eniHours", 0)) > 0 and "usdPerEniHour" in cost and "usd" in cost, status
    nodes = status.get("captureNodes") or {}
    assert sum(int(n.get("packets") or 0) for n in nodes.values()) == len(selected), nodes
    assert sum(int(n.get("filteredOut") or 0) for n in nodes.values()) == len(unselected), nodes

    # The merged file: exactly the selected pods' packets, read by tshark.
    shown = subprocess.run(
        ["tshark", "-r", str(output), "-T", "fields", "-e", "ip.src", "-e", "udp.srcport"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    got = sorted(tuple(line.split("\t")) for line in shown.stdout.splitlines() if line)
    names = [("web-1", "web-2", "web-3")[i % 3] for i in range(60)]
    wanted = sorted((pods[name], str(40000 + i)) for i, name in enumerate(names) if name in chosen)
    assert got == wanted, shown.stdout
    assert stranger not in shown.stdout

    # Nothing left: no session, no filter (the command's nor a generated one), no AWS session.
    assert _created(control_plane, namespace) == {"mirrorsessions": [], "mirrorfilters": []}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = json.loads(control_plane.kubectl("get", "mirrorsessions,mirrorfilters", "-n", namespace,
                                                "-o", "json").stdout)["items"]  # fmt: skip
        aws = load.aws_sessions({eni_a, eni_b})
        if not left and not aws:
            break
        time.sleep(0.5)
    assert [o["metadata"]["name"] for o in left] == [] and aws == {}, (left, aws)
