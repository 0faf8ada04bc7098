"""The shipped artifacts, run for real: `helm install` of the chart with the image `make image` built,
on a node with a kubelet; the operator and the capture agent as pods; the examples; mirrored traffic
from a kernel vxlan device to the agent pod on the node's address; the pcapng in (emulated) S3; then
`helm upgrade` and `helm uninstall`.

The tests share one node and run in file order: each step starts from what the one before left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import sigint_as_default
from tests.e2e.conftest import BUCKET, CLUSTER, E2E, EXAMPLES_NAMESPACE
from trafficmirror_testbed import story, traffic
from trafficmirror_testbed.kube import running_control_plane
from trafficmirror_testbed.node import (
    FIXED_PATHS,
    RUN_BASE,
    SYSCTLS,
    cleanup_stale,
    image_reference,
    machine_lock,
    product_image,
)

KINDS = "mirrorsessions,mirrortargets,mirrorfilters"


def _host_state() -> dict[str, object]:
    """What a node may touch outside its own directories, as the host shows it."""

    def run(*args: str) -> str:
        return subprocess.run(args, capture_output=True, text=True, check=False).stdout

    return {
        "links": sorted(ln.split()[0] for ln in run("ip", "-br", "link").splitlines() if "tmnode" in ln),
        "kube_chains": sorted(
            ln for tool in ("iptables-save", "ip6tables-save") for ln in run(tool).splitlines() if "KUBE-" in ln
        ),
        # Pod sandboxes' namespaces (other processes on this machine make namespaces of their own).
        "netns": sorted(n for n in os.listdir("/run/netns") if n.startswith("cni-"))
        if os.path.isdir("/run/netns")
        else [],
        "cgroups": sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods")),
        "paths": [p for p in FIXED_PATHS if os.path.exists(p)],
        "sysctls": {k: Path("/proc/sys", k).read_text() for k in SYSCTLS if Path("/proc/sys", k).exists()},
        "mounts": [m for m in run("findmnt", "-rn", "-o", "TARGET").split() if "trafficmirror-node" in m],
        "run_dirs": sorted(os.listdir(RUN_BASE)) if RUN_BASE.is_dir() else [],
    }


def test_ctrl_c_leaves_the_host_as_it_was() -> None:
    """A node interrupted (SIGINT, as Ctrl-C) with a pod running removes everything it made. Runs before
    the shared node of the tests below starts: two nodes cannot share the node's address."""
    # A run killed outright (SIGKILL, a machine's job limit) cannot clean up after itself: the next node
    # does it before it starts. Done here, under the machine's node slot, so that "before" is a host
    # without a node rather than whatever an earlier run left.
    with machine_lock():
        cleanup_stale()
        before = _host_state()
    # Nothing else here makes KUBE-* chains: any found now survived the stale cleanup.
    assert not before["kube_chains"] and not before["links"], before
    script = textwrap.dedent(
        f"""
        import sys, time
        from trafficmirror_testbed.node import running_node
        from pathlib import Path
        with running_node([Path({str(product_image())!r})]) as node:
            node.kubectl("run", "sleeper", "--image", {image_reference()!r}, "--image-pull-policy=Never",
                         "--command", "--", "sleep", "600")
            node.kubectl("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=120s")
            print("READY", flush=True)
            time.sleep(600)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(story.REPO_ROOT / "operator")}
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=sigint_as_default,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == b"READY", (line, proc.stderr.read() if proc.poll() is not None else b"")
        during = _host_state()
        assert during["links"] and during["kube_chains"] and during["mounts"], "the node was up"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:  # never leave a node running for the tests that follow: SIGTERM cleans up too
            proc.terminate()
            proc.wait(timeout=180)
    assert _host_state() == before


@pytest.fixture(scope="module")
def installed(e2e: E2E) -> E2E:
    out = story.install(e2e.access, e2e.values())
    assert "STATUS: deployed" in out, out
    return e2e


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    [container] = pod["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def _exec(e2e: E2E, pod: str, *command: str) -> str:
    result = e2e.access.kubectl("exec", "-n", story.RELEASE_NAMESPACE, pod, "--", *command, check=False)
    return result.stdout + result.stderr


def test_operator_and_agent_pods_run_ready_and_locked_down(installed: E2E) -> None:
    e2e = installed
    story.wait_workloads(e2e.access)
    operator, capture = story.pods(e2e.access, "operator"), story.pods(e2e.access, "capture")
    assert len(operator) == 1 and len(capture) == 1, (operator, capture)
    for pod in operator + capture:
        name = pod["metadata"]["name"]
        assert pod["status"]["phase"] == "Running", name
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True", (name, ready)
        [status] = pod["status"]["containerStatuses"]
        assert status["ready"] and status["restartCount"] == 0, status
        # The image make image built and the node imported: the chart's default reference, never pulled.
        assert status["image"].endswith(image_reference()) or image_reference() in status["image"], status
        container = _container(pod)
        assert container["imagePullPolicy"] == "Never"
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] and ctx["runAsNonRoot"] and not ctx["allowPrivilegeEscalation"]
        assert ctx["capabilities"]["drop"] == ["ALL"] and "add" not in ctx["capabilities"]
        # What the kernel says of the running process, not only what the spec asks for.
        assert _exec(e2e, name, "id", "-u").strip() == "65532", name
        caps = dict(
            line.split(":\t") for line in _exec(e2e, name, "cat", "/proc/1/status").splitlines() if ":\t" in line
        )
        assert caps["CapEff"].strip() == "0" * 16 and caps["CapPrm"].strip() == "0" * 16, (name, caps)
        assert caps["NoNewPrivs"].strip() == "1", name
        assert "Read-only file system" in _exec(e2e, name, "touch", "/opt/trafficmirror/x"), name
    assert capture[0]["spec"]["hostNetwork"] is True
    assert capture[0]["status"]["podIP"] == e2e.node.address
    assert operator[0]["spec"].get("hostNetwork") is not True
    assert capture[0]["spec"]["nodeName"] == e2e.node.name


def test_the_image_holds_the_product_only(installed: E2E) -> None:
    [pod] = story.pods(installed.access, "operator")
    probe = (
        "import importlib.util as u, json; "
        "print(json.dumps({m: u.find_spec(m) is not None for m in ["
        "'trafficmirror', 'trafficmirror.capture._fastrecv', 'trafficmirror_testbed', 'moto', 'pytest', 'kubernetes'"
        "]}))"
    )
    found = json.loads(_exec(installed, pod["metadata"]["name"], "python", "-c", probe))
    assert found == {
        "trafficmirror": True,
        "trafficmirror.capture._fastrecv": True,
        "trafficmirror_testbed": False,
        "moto": False,
        "pytest": False,
        "kubernetes": False,
    }, found


def test_operator_logs_in_with_its_service_account(installed: E2E) -> None:
    """In the pod: the projected ServiceAccount token, the `kubernetes` Service (kube-proxy) and RBAC."""
    e2e = installed
    [pod] = story.pods(e2e.access, "operator")
    assert pod["spec"]["serviceAccountName"] == story.OPERATOR
    env = _exec(e2e, pod["metadata"]["name"], "env")
    assert "KUBECONFIG" not in env
    service = e2e.access.json("get", "service", "kubernetes", "-n", "default")["spec"]["clusterIP"]
    assert f"KUBERNETES_SERVICE_HOST={service}" in env
    token = _exec(e2e, pod["metadata"]["name"], "cat", "/var/run/secrets/kubernetes.io/serviceaccount/token")
    # Who the token is, as the apiserver sees it (a TokenReview).
    result = e2e.access.kubectl(
        "create",
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token.strip()}}
        ),
    )
    status = json.loads(result.stdout)["status"]
    assert status["authenticated"], status
    assert status["user"]["username"] == f"system:serviceaccount:{story.RELEASE_NAMESPACE}:{story.OPERATOR}"


def test_examples_become_ready_and_mirrored_traffic_lands_in_s3(installed: E2E, tmp_path: Path) -> None:
    e2e = installed
    story.apply_examples(e2e.access, EXAMPLES_NAMESPACE)
    legacy = e2e.access.json("get", "mirrorsession", "legacy", "-n", EXAMPLES_NAMESPACE)
    reasons = {c["type"]: c.get("reason") for c in legacy["status"]["conditions"]}
    assert reasons["Ready"] == "UnsupportedInstanceType", legacy["status"]
    sessions = e2e.emulator.client("ec2").describe_traffic_mirror_sessions()["TrafficMirrorSessions"]
    vni = story.session_vni(e2e.access, EXAMPLES_NAMESPACE)
    assert [s["VirtualNetworkId"] for s in sessions] == [vni], sessions

    # The agent pod learns the VNI from its MirrorSession watch; then the kernel mirrors an HTTP
    # exchange into a vxlan device aimed at the node's address and the agent's (non-default) port.
    story.wait_agent_knows_sessions(e2e.node.address, e2e.capture_metrics_port, 1)
    mirror = traffic.KernelMirror(
        vni,
        prefix="tme2e",
        remote=e2e.node.address,
        port=e2e.capture_port,
        underlay=story.mirror_underlay(e2e.access, EXAMPLES_NAMESPACE),
    )
    mirror.up()
    try:
        mirror.http_exchange(requests=3)
    finally:
        mirror.down()
    out = tmp_path / "web.pcapng"
    try:
        lines = story.fetch_http(e2e.emulator, BUCKET, CLUSTER, f"{EXAMPLES_NAMESPACE}/web", out, requests=3)
    except TimeoutError as error:
        agent = e2e.access.kubectl(
            "logs", "-n", story.RELEASE_NAMESPACE, f"daemonset/{story.CAPTURE}", "--tail=30", check=False
        ).stdout
        raise AssertionError(f"{error}\nS3: {story.s3_keys(e2e.emulator, BUCKET)}\nagent:\n{agent}") from error
    requests = [ln for ln in lines if "GET / HTTP/1.1" in ln]
    responses = [ln for ln in lines if "HTTP/1.0 200" in ln]
    assert len(requests) == 3 and len(responses) == 3, lines
    assert all(ln.startswith(f"{traffic.CLIENT_IP} {traffic.SOURCE_IP}") for ln in requests), lines


def test_files_kept_on_the_node_are_read_out_of_the_agent_pod_through_pods_exec(
    installed: E2E, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent keeps its closed files on the node too (capture.storage.keepFiles): `trafficmirror capture`
    reads such a file out of the node's agent pod through the API server (cat over the exec WebSocket, with a
    real kubelet and container runtime at the other end), byte for byte what the agent shipped to S3."""
    from trafficmirror.kubecapture.kube import KubeApi
    from trafficmirror.kubecapture.podfiles import AgentPodFiles

    e2e = installed
    shipped = [k for k in story.s3_keys(e2e.emulator, BUCKET) if f"/{EXAMPLES_NAMESPACE}/web/" in k]
    assert shipped, "the examples' web session shipped nothing (the test before this one mirrors into it)"
    key = shipped[0]
    path = f"/var/lib/trafficmirror/captures/{EXAMPLES_NAMESPACE}/web/{key.rsplit('/', 1)[1]}"
    monkeypatch.setenv("KUBECONFIG", str(e2e.access.kubeconfig))
    files = AgentPodFiles(KubeApi.connect(), story.RELEASE_NAMESPACE)
    (ref,) = files.refs(EXAMPLES_NAMESPACE, "web", [(e2e.node.name, path)])
    with files.open(ref) as stream:
        read = stream.read()
    expected = e2e.emulator.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert len(read) == len(expected) > 0 and read == expected


def _inventory(e2e: E2E) -> dict[str, str]:
    listed = e2e.access.json("get", KINDS, "-A")["items"]
    return {f"{i['kind']}/{i['metadata']['namespace']}/{i['metadata']['name']}": i["metadata"]["uid"] for i in listed}


def test_helm_upgrade_rolls_the_pods_and_keeps_every_resource(installed: E2E) -> None:
    e2e = installed
    before = _inventory(e2e)
    assert len(before) == 4, before  # the examples: 1 filter, 1 target, 2 sessions
    pods_before = {p["metadata"]["uid"] for p in story.pods(e2e.access, "operator") + story.pods(e2e.access, "capture")}
    aws_before = e2e.emulator.client("ec2").describe_traffic_mirror_sessions()["TrafficMirrorSessions"]
    values = e2e.values()
    values["operator"]["logLevel"] = "DEBUG"  # type: ignore[index]
    values["capture"]["logLevel"] = "DEBUG"  # type: ignore[index]
    story.install(e2e.access, values)
    story.wait_workloads(e2e.access)
    story.wait_for(
        "old pods gone",
        lambda: len(story.pods(e2e.access, "operator") + story.pods(e2e.access, "capture")) == 2,
        120,
    )
    after = story.pods(e2e.access, "operator") + story.pods(e2e.access, "capture")
    assert not {p["metadata"]["uid"] for p in after} & pods_before, "the pods rolled"
    for pod in after:
        assert "--log-level=DEBUG" in _container(pod)["args"]
    assert _inventory(e2e) == before, "no custom resource lost or recreated"
    story.wait_for(
        "sessions settled", lambda: story.phases(e2e.access, EXAMPLES_NAMESPACE) == story.EXPECTED_PHASES, 120
    )
    aws_after = e2e.emulator.client("ec2").describe_traffic_mirror_sessions()["TrafficMirrorSessions"]
    ids = sorted(s["TrafficMirrorSessionId"] for s in aws_after)
    assert ids == sorted(s["TrafficMirrorSessionId"] for s in aws_before), "AWS untouched by the upgrade"


def test_helm_uninstall_keeps_crds_and_leaves_nothing_in_aws(installed: E2E) -> None:
    e2e = installed
    # Custom resources first, while the operator runs: its finalizers delete what it made in AWS.
    for kind in ("mirrorsessions", "mirrortargets", "mirrorfilters"):
        e2e.access.kubectl("delete", kind, "--all", "-A", "--wait=true", "--timeout=120s")
    ec2 = e2e.emulator.client("ec2")
    assert ec2.describe_traffic_mirror_sessions()["TrafficMirrorSessions"] == []
    assert ec2.describe_traffic_mirror_targets()["TrafficMirrorTargets"] == []
    assert ec2.describe_traffic_mirror_filters()["TrafficMirrorFilters"] == []
    e2e.access.helm("uninstall", story.RELEASE, "--namespace", story.RELEASE_NAMESPACE, "--wait", "--timeout", "3m")
    crds = {c["metadata"]["name"] for c in e2e.access.json("get", "crds")["items"]}
    assert {f"{k}.trafficmirror.io" for k in ("mirrorsessions", "mirrortargets", "mirrorfilters")} <= crds
    assert story.pods(e2e.access, "operator") == [] and story.pods(e2e.access, "capture") == []
    # A controller-manager runs: the namespace finishes deleting (no leftover finalizers either).
    e2e.access.kubectl("delete", "namespace", story.RELEASE_NAMESPACE, "--wait=true", "--timeout=120s")
    assert e2e.access.kubectl("get", "namespace", story.RELEASE_NAMESPACE, check=False).returncode != 0


# --- plain manifests ------------------------------------------------------------------------------

DEPLOY = story.REPO_ROOT / "deploy" / "trafficmirror.yaml"


def test_plain_manifests_apply_in_one_pass_on_a_fresh_apiserver(tmp_path: Path) -> None:
    with running_control_plane(tmp_path / "kube") as plane:
        applied = plane.kubectl("apply", "-f", str(DEPLOY), check=False)
        assert applied.returncode == 0, applied.stderr
        assert "deployment.apps/trafficmirror-operator created" in applied.stdout
        assert "ensure CRDs are installed first" not in applied.stderr


def test_plain_manifests_run_on_the_node_in_one_pass(e2e: E2E) -> None:
    """After the chart: a cluster without any of our objects or CRDs again, then one `kubectl apply`."""
    access = e2e.access
    # What the chart tests left (nothing when they ran to the end).
    access.helm("uninstall", story.RELEASE, "-n", story.RELEASE_NAMESPACE, "--ignore-not-found", "--wait")
    access.kubectl("delete", "namespace", story.RELEASE_NAMESPACE, "--ignore-not-found", "--timeout=120s")
    ours = [c["metadata"]["name"] for c in access.json("get", "crds")["items"]]
    ours = [c for c in ours if c.endswith(".trafficmirror.io") or c.endswith(".kopf.dev")]
    if ours:
        access.kubectl("delete", "crd", *ours, "--wait=true", "--timeout=120s")
    applied = access.kubectl("apply", "-f", str(DEPLOY), check=False)
    assert applied.returncode == 0, applied.stderr
    # The manifests name no AWS endpoint: point the workloads at the emulator (not another apply).
    env = [f"{k}={v}" for k, v in e2e.emulator.env().items()]
    access.kubectl("set", "env", "-n", story.RELEASE_NAMESPACE, f"deployment/{story.OPERATOR}", *env)
    access.kubectl("set", "env", "-n", story.RELEASE_NAMESPACE, f"daemonset/{story.CAPTURE}", *env)
    # Ports of its own: other UDP receivers may run on this machine (hostNetwork binds the host's).
    container = "/spec/template/spec/containers/0"
    patch = [
        {"op": "replace", "path": f"{container}/imagePullPolicy", "value": "Never"},
        {"op": "replace", "path": f"{container}/ports/0/containerPort", "value": e2e.capture_port},
        {"op": "replace", "path": f"{container}/ports/1/containerPort", "value": e2e.capture_metrics_port},
        {"op": "add", "path": f"{container}/args/-", "value": f"--port={e2e.capture_port}"},
        {"op": "add", "path": f"{container}/args/-", "value": f"--metrics-port={e2e.capture_metrics_port}"},
    ]
    ds = access.json("get", "daemonset", story.CAPTURE, "-n", story.RELEASE_NAMESPACE)
    assert [p["name"] for p in ds["spec"]["template"]["spec"]["containers"][0]["ports"]] == ["vxlan", "metrics"]
    access.kubectl(
        "patch", "daemonset", story.CAPTURE, "-n", story.RELEASE_NAMESPACE, "--type", "json", "-p", json.dumps(patch)
    )
    story.wait_workloads(e2e.access)
    [operator] = story.pods(access, "operator")
    init = access.kubectl(
        "logs", "-n", story.RELEASE_NAMESPACE, operator["metadata"]["name"], "-c", "peering", check=False
    ).stdout
    assert "created ClusterKopfPeering trafficmirror" in init, init
    access.json("get", "clusterkopfpeering", "trafficmirror")
    story.apply_examples(access, EXAMPLES_NAMESPACE)
    for kind in ("mirrorsessions", "mirrortargets", "mirrorfilters"):
        access.kubectl("delete", kind, "--all", "-A", "--wait=true", "--timeout=120s")
    assert e2e.emulator.client("ec2").describe_traffic_mirror_sessions()["TrafficMirrorSessions"] == []
    access.kubectl("delete", "-f", str(DEPLOY), "--wait=true", "--timeout=180s")
