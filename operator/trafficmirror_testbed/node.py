"""A real single-node Kubernetes cluster on this machine, for the end-to-end tests and the demo.

The control plane is the test bed's (kube.py: etcd + kube-apiserver), plus kube-controller-manager,
kube-scheduler, kube-proxy and a kubelet built from the same k8s.io/kubernetes version
(hack/build-node.sh), Debian's containerd + runc and the containernetworking-plugins' bridge and
host-local. Images come from tarballs (`ctr images import`): no registry is needed, the pod sandbox
("pause") image included, which is built here from a static binary.

Cluster DNS: CoreDNS with its kubernetes plugin, built from its Go module, as a process on the
node's address (the kubelet's clusterDNS). Needed: kopf logs in at https://kubernetes.default.svc,
a name only cluster DNS answers. CoreDNS because it is what clusters run (the same answers, search
paths and ndots as in production); a process rather than pods because it is one binary less to
package as an image, and the product does not care where DNS runs.

Everything is confined to the node's own names and directories (an interface, a bridge, a
containerd with its own sockets and root, kubelet root in the work directory) and undone by
`stop()`, on Ctrl-C too; `python -m trafficmirror_testbed.node cleanup` removes what a killed run
left behind. Needs root.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trafficmirror_testbed.kube import REPO_ROOT, ControlPlane, free_port, testbed_bin_dir

NODE_BUILD_SCRIPT = REPO_ROOT / "hack" / "build-node.sh"
IMAGE_BUILD_SCRIPT = REPO_ROOT / "hack" / "build-image.sh"

# The node's own addresses, on an interface and a bridge of its own: nothing of the host's.
NODE_ADDRESS = "10.217.0.1"
POD_CIDR = "10.217.16.0/24"
SERVICE_CIDR = "10.217.32.0/24"
NODE_LINK = "tmnode0"
BRIDGE_LINK = "tmnodebr0"
NODE_NAME = "capture-node"
CLUSTER_DOMAIN = "cluster.local"
PAUSE_IMAGE = "localhost/trafficmirror/pause:1"
RUN_BASE = Path("/run/trafficmirror-node")
CNI_BIN_DIR = Path("/usr/lib/cni")

# What the kubelet or the CNI plugins change outside the node's directories, restored on stop.
# The kubelet sets these kernel tunables (protectKernelDefaults: false); the bridge plugin enables forwarding.
SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
)
# Fixed paths the kubelet and containerd use whatever their configuration says.
FIXED_PATHS = ("/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/run/containerd", "/var/lib/cni")
CGROUP_ROOT = Path("/sys/fs/cgroup")

# The kubelet gives pod sandboxes (and Guaranteed pods' containers) a negative oom_score_adj. This
# host's kernel refuses a negative value even to root, and runc then fails every sandbox with
# "can't get final child's PID from pipe: EOF". A property of this kind of VM, not of Kubernetes:
# the wrapper raises a negative process.oomScoreAdj to 0 in the bundle's config.json, then runs runc.
RUNC_WRAPPER = """#!{python}
import json, os, sys

args = sys.argv[1:]
for flag in ("--bundle", "-b"):
    if flag in args[:-1]:
        config = os.path.join(args[args.index(flag) + 1], "config.json")
        with open(config) as f:
            spec = json.load(f)
        process = spec.get("process") or {{}}
        if process.get("oomScoreAdj", 0) < 0:
            process["oomScoreAdj"] = 0
            with open(config, "w") as f:
                json.dump(spec, f)
        break
os.execv({runc!r}, [{runc!r}, *args])
"""


def node_bin_dir() -> Path:
    """kubelet, kube-controller-manager, kube-scheduler, kube-proxy and pause, building them if needed."""
    out = subprocess.run(["bash", str(NODE_BUILD_SCRIPT)], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def product_image() -> Path:
    """The product image as a tarball (`make image`), building it if needed."""
    out = subprocess.run(["bash", str(IMAGE_BUILD_SCRIPT)], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def image_reference() -> str:
    """The image reference `make image` tags, which is the chart's default (values.yaml + appVersion)."""
    chart = (REPO_ROOT / "charts" / "trafficmirror" / "Chart.yaml").read_text()
    version = next(ln.split(":", 1)[1].strip().strip('"') for ln in chart.splitlines() if ln.startswith("appVersion:"))
    return f"ghcr.io/trafficmirror/trafficmirror:{version}"


def missing_requirements() -> list[str]:
    """Why a node cannot run here (empty: it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("needs root (kubelet, containerd, network devices)")
    for tool in ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "iptables", "findmnt"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is missing (bash hack/install-system-deps.sh node)")
    if not (CNI_BIN_DIR / "bridge").exists():
        problems.append(f"{CNI_BIN_DIR}/bridge is missing (Debian package containernetworking-plugins)")
    return problems


def _sh(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, input=input)


class NodePlane(ControlPlane):
    """The test bed's control plane, on the node's address and with what a kubelet and pods need."""

    def apiserver_args(self) -> list[str]:
        args = super().apiserver_args()
        # Pods get ServiceAccount tokens: the ServiceAccount admission plugin stays on here.
        i = args.index("--disable-admission-plugins")
        del args[i : i + 2]
        # `kubectl logs/exec` reach the kubelet on the node's InternalIP; it has no resolvable hostname.
        return [*args, "--kubelet-preferred-address-types", "InternalIP"]


@dataclass
class Node:
    """A single-node cluster: `start()`, use `plane` (kubectl, kubeconfig), `stop()`."""

    work_dir: Path
    images: list[Path] = field(default_factory=list)
    name: str = NODE_NAME
    log: Callable[[str], None] = lambda _msg: None
    plane: NodePlane | None = None
    run_dir: Path = field(default_factory=lambda: RUN_BASE / str(os.getpid()))
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _ports: dict[str, int] = field(default_factory=dict)

    address = NODE_ADDRESS

    # -- start -------------------------------------------------------------------------------------------
    def start(self) -> Node:
        problems = missing_requirements()
        if problems:
            raise RuntimeError("cannot run a node here: " + "; ".join(problems))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._record_host_state()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        bins = node_bin_dir()
        self._network()
        self.plane = NodePlane(
            bin_dir=testbed_bin_dir(), work_dir=self.work_dir / "kube", address=NODE_ADDRESS, service_cidr=SERVICE_CIDR
        )
        self.plane.start()
        self.log(f"kube-apiserver at {self.plane.url}")
        self._containerd()
        self._import(self._pause_image(bins / "pause"), *self.images)
        kubeconfig = str(self.plane.kubeconfig)
        self._spawn("kube-controller-manager", *controller_manager_command(self.plane, bins))
        self._spawn(
            "kube-scheduler",
            str(bins / "kube-scheduler"),
            "--kubeconfig", kubeconfig,
            "--bind-address", "127.0.0.1",
            "--secure-port", str(free_port()),
            "--leader-elect=false",
            "--v", "1",
        )  # fmt: skip
        self._coredns(bins / "coredns")
        self._kubelet(bins / "kubelet")
        self._kube_proxy(bins / "kube-proxy")
        self._wait_ready()

    def _record_host_state(self) -> None:
        """What exists before the node starts, so that stop() removes only what the node made."""
        state = {
            "netns": sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else [],
            "paths": [p for p in FIXED_PATHS if os.path.exists(p)],
            "cgroups": [str(p) for p in CGROUP_ROOT.glob("*/kubepods")],
            "sysctls": {k: _read_sysctl(k) for k in SYSCTLS},
            "work_dir": str(self.work_dir),
            "pid": os.getpid(),
        }
        (self.run_dir / "host-state.json").write_text(json.dumps(state))

    def _network(self) -> None:
        # The node's address lives on an interface of its own: the apiserver, the kubelet, hostNetwork
        # pods and the emulator bind it, pods reach it through the bridge's gateway, nothing leaves the
        # machine. A veth pair with both ends here, because this host's kernel has no dummy devices
        # ("Error: Unknown device type.").
        _sh("ip", "link", "add", NODE_LINK, "type", "veth", "peer", "name", f"{NODE_LINK}p")
        _sh("ip", "addr", "add", f"{NODE_ADDRESS}/32", "dev", NODE_LINK)
        _sh("ip", "link", "set", f"{NODE_LINK}p", "up")
        _sh("ip", "link", "set", NODE_LINK, "up")
        cni_dir = self.work_dir / "cni"
        (cni_dir / "net.d").mkdir(parents=True, exist_ok=True)
        conf = {
            "cniVersion": "0.4.0",
            "name": "trafficmirror-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE_LINK,
                    "isGateway": True,
                    # No masquerading (and so no iptables rules of the plugin's): pods talk only to the node.
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(cni_dir / "ipam"),
                    },
                }
            ],
        }
        (cni_dir / "net.d" / "10-trafficmirror-node.conflist").write_text(json.dumps(conf))

    def _containerd(self) -> None:
        wrapper = self.run_dir / "runc-wrapper"
        wrapper.write_text(RUNC_WRAPPER.format(python=sys.executable, runc=shutil.which("runc")))
        wrapper.chmod(0o755)
        root = self.work_dir / "containerd"
        sock = self.containerd_socket
        config = f"""version = 2
root = "{root}/root"
state = "{self.run_dir}/containerd"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # See RUNC_WRAPPER: negative oom_score_adj is refused on this kind of host.
        BinaryName = "{wrapper}"
        Root = "{self.run_dir}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{self.work_dir}/cni/net.d"
"""
        path = self.work_dir / "containerd.toml"
        path.write_text(config)
        self._spawn("containerd", "containerd", "--config", str(path))
        self._wait("containerd", lambda: self._ctr("version", check=False).returncode == 0, 60)

    @property
    def containerd_socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    def _ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _sh("ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", *args, check=check)

    def _import(self, *tarballs: Path) -> None:
        for tarball in tarballs:
            start = time.monotonic()
            self._ctr("images", "import", str(tarball))
            self.log(f"imported {tarball.name} into containerd ({time.monotonic() - start:.0f}s)")

    def import_images(self, *tarballs: Path) -> None:
        self._import(*tarballs)

    def _pause_image(self, binary: Path) -> Path:
        """An OCI image layout holding only the static pause binary, as a tarball for `ctr images import`."""
        out = self.work_dir / "pause-image.tar"
        layer_buf = io.BytesIO()
        with tarfile.open(fileobj=layer_buf, mode="w") as layer:
            info = layer.gettarinfo(str(binary), arcname="pause")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with binary.open("rb") as f:
                layer.addfile(info, f)
        layer_bytes = layer_buf.getvalue()
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        layer_digest = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
        config = json.dumps(
            {
                "architecture": arch,
                "os": "linux",
                "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            }
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest,
                        "size": len(layer_bytes),
                    }
                ],
            }
        ).encode()
        index = json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(),
                        "size": len(manifest),
                        "platform": {"architecture": arch, "os": "linux"},
                        "annotations": {"io.containerd.image.name": PAUSE_IMAGE},
                    }
                ],
            }
        ).encode()
        with tarfile.open(out, "w") as tar:

            def add(name: str, data: bytes) -> None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

            add("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
            add("index.json", index)
            for blob in (layer_bytes, config, manifest):
                add(f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}", blob)
        return out

    def _coredns(self, binary: Path) -> None:
        assert self.plane is not None
        corefile = self.work_dir / "Corefile"
        corefile.write_text(
            f""".:53 {{
    bind {NODE_ADDRESS}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.plane.kubeconfig} testbed
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
    cache 30
}}
"""
        )
        self._spawn("coredns", str(binary), "-conf", str(corefile))

    def _kubelet(self, binary: Path) -> None:
        assert self.plane is not None
        self._ports["kubelet"] = free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_ADDRESS,
            "port": self._ports["kubelet"],
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            # The apiserver calls the kubelet (logs, exec) without a client certificate in the test bed;
            # the kubelet listens on the node's own address only.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            # No systemd manages cgroups here, and this host mounts cgroup v1 (kubelet 1.35 refuses it
            # unless told otherwise: "kubelet is configured to not run on a host using cgroup v1").
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "podLogsDir": str(self.work_dir / "pod-logs"),
            "clusterDNS": [NODE_ADDRESS],
            "clusterDomain": CLUSTER_DOMAIN,
            # A shared test machine: never evict or garbage-collect the imported images on disk pressure.
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "maxPods": 30,
            "serializeImagePulls": False,
        }
        path = self.work_dir / "kubelet.yaml"
        path.write_text(json.dumps(config))
        self._spawn(
            "kubelet",
            str(binary),
            "--config", str(path),
            "--kubeconfig", str(self.plane.kubeconfig),
            "--root-dir", str(self.work_dir / "kubelet"),
            "--hostname-override", self.name,
            "--node-ip", NODE_ADDRESS,
            "--v", "1",
        )  # fmt: skip

    def _kube_proxy(self, binary: Path) -> None:
        assert self.plane is not None
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.plane.kubeconfig)},
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "hostnameOverride": self.name,
            "bindAddress": NODE_ADDRESS,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # NodePorts on the node's address only: no route_localnet, nothing on the host's addresses.
            "nodePortAddresses": [f"{NODE_ADDRESS}/32"],
            # Leave the host's conntrack sysctls alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }
        path = self.work_dir / "kube-proxy.yaml"
        path.write_text(json.dumps(config))
        self._spawn("kube-proxy", str(binary), "--config", str(path), "--v", "1")

    def _wait_ready(self) -> None:
        assert self.plane is not None
        plane = self.plane

        def node_ready() -> bool:
            got = plane.kubectl("get", "node", self.name, "-o", "json", check=False)
            if got.returncode != 0:
                return False
            conditions = json.loads(got.stdout)["status"].get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        def accounts_ready() -> bool:
            # The controller-manager's ServiceAccount and root-CA publishers: pods need both.
            sa = plane.kubectl("get", "serviceaccount", "default", "-n", "default", check=False)
            ca = plane.kubectl("get", "configmap", "kube-root-ca.crt", "-n", "default", check=False)
            return sa.returncode == 0 and ca.returncode == 0

        self._wait("node Ready", node_ready, 180)
        self._wait("ServiceAccounts", accounts_ready, 60)
        self._wait("cluster DNS", lambda: bool(dns_lookup(f"kubernetes.default.svc.{CLUSTER_DOMAIN}")), 60)

    def _spawn(self, name: str, *args: str) -> None:
        log = self.work_dir / f"{name}.log"
        self._procs[name] = subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT)
        (self.run_dir / "pids").mkdir(exist_ok=True)
        (self.run_dir / "pids" / name).write_text(str(self._procs[name].pid))

    def _wait(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode} while waiting for {what}:\n{self.tail(name)}"
                    )
            if predicate():
                return
            time.sleep(0.5)
        raise TimeoutError(f"{what} not ready after {timeout}s:\n" + "\n".join(self.tail(n, 15) for n in self._procs))

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.work_dir / f"{name}.log"
        text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
        return f"--- {name}.log\n" + "\n".join(text)

    # -- use ---------------------------------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self.plane is not None
        return self.plane.kubectl(*args, input=input, check=check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self.plane is not None
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.work_dir / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(self.work_dir / "helm" / "config"),
            "HELM_DATA_HOME": str(self.work_dir / "helm" / "data"),
        }
        command = [str(self.plane.bin_dir / "helm"), "--kubeconfig", str(self.plane.kubeconfig), *args]
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    # -- stop --------------------------------------------------------------------------------------------
    def stop(self) -> None:
        # No graceful pod shutdown: the controllers would only start the pods again. cleanup() kills what
        # runs in the pods' cgroups and the shims, then undoes the rest.
        for name in ("kube-proxy", "kubelet", "coredns", "kube-scheduler", "kube-controller-manager"):
            _terminate(self._procs.pop(name, None))
        if self.plane is not None:
            self.plane.stop()
            self.plane = None
        cleanup(self.run_dir, containerd=self._procs.pop("containerd", None))


def controller_manager_command(plane: ControlPlane, bins: Path, controllers: str = "*") -> list[str]:
    """kube-controller-manager for a test bed control plane: its ServiceAccount key and serving CA."""
    return [
        str(bins / "kube-controller-manager"),
        "--kubeconfig", str(plane.kubeconfig),
        "--bind-address", "127.0.0.1",
        "--secure-port", str(free_port()),
        "--leader-elect=false",
        "--controllers", controllers,
        "--service-account-private-key-file", str(plane.work_dir / "sa.key"),
        "--root-ca-file", str(plane.ca_file),
        "--use-service-account-credentials=false",
        "--cluster-name", "trafficmirror-node",
        "--v", "1",
    ]  # fmt: skip


def _terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def _pid_cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def cleanup(run_dir: Path, containerd: subprocess.Popen[bytes] | None = None) -> None:
    """Undo everything a node did, from its run directory's records: processes, pods' processes and
    shims, mounts, network namespaces and devices, iptables chains, cgroups, sysctls, directories."""
    state_file = run_dir / "host-state.json"
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}
    work_dir = Path(state["work_dir"]) if state.get("work_dir") else None
    # Control-plane processes a killed run left behind (pid files, checked against their command line).
    for pid_file in sorted((run_dir / "pids").glob("*")) if (run_dir / "pids").is_dir() else []:
        pid = int(pid_file.read_text())
        if pid_file.name in " ".join(_pid_cmdline(pid)):
            _kill_pids([pid])
    # The pods' shims outlive the kubelet and containerd: they are found by the containerd address they serve.
    sock = str(run_dir / "containerd.sock")
    shims = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and "containerd-shim" in " ".join(_pid_cmdline(int(p.name))[:1])
        and sock in _pid_cmdline(int(p.name))
    ]
    # The pods' own processes: whatever is left in the kubelet's cgroups.
    kubepods_before = set(state.get("cgroups", []))
    pod_cgroups = [p for p in CGROUP_ROOT.glob("*/kubepods") if str(p) not in kubepods_before]
    pod_pids: set[int] = set()
    for tree in pod_cgroups:
        for procs in tree.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pod_pids.update(int(x) for x in procs.read_text().split())
    _kill_pids(sorted(pod_pids | set(shims)))
    _terminate(containerd)
    # Mounts under the node's directories (rootfs, shm, volumes), deepest first.
    prefixes = [str(run_dir)] + ([str(work_dir)] if work_dir else [])
    mounts = _sh("findmnt", "-rn", "-o", "TARGET", check=False).stdout.split()
    for target in sorted((m for m in mounts if any(m.startswith(p + "/") for p in prefixes)), key=len, reverse=True):
        _sh("umount", "-l", target, check=False)
    # Pod network namespaces (containerd names them cni-<uuid>) created since the node started.
    before = set(state.get("netns", []))
    if os.path.isdir("/run/netns"):
        for ns in os.listdir("/run/netns"):
            if ns.startswith("cni-") and ns not in before:
                _sh("ip", "netns", "delete", ns, check=False)
    for link in (BRIDGE_LINK, NODE_LINK):
        _sh("ip", "link", "delete", link, check=False)
    _delete_kube_chains()
    # cgroups: the pods' first, then the QoS tree, deepest first (rmdir only removes empty ones).
    for tree in pod_cgroups:
        for directory in sorted((p for p in tree.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            tree.rmdir()
    for name, value in (state.get("sysctls") or {}).items():
        if value is not None and _read_sysctl(name) != value:
            with contextlib.suppress(OSError):
                Path("/proc/sys", name).write_text(value)
    for path in FIXED_PATHS:
        if path not in state.get("paths", FIXED_PATHS):
            shutil.rmtree(path, ignore_errors=True)
    if work_dir is not None:
        shutil.rmtree(work_dir, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)


def _delete_kube_chains() -> None:
    """kube-proxy's (and the kubelet's) KUBE-* chains, and the jumps into them from the built-in chains."""
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            rules = _sh(tool, "-w", "-t", table, "-S", check=False).stdout.splitlines()
            chains = [r.split()[1] for r in rules if r.startswith("-N KUBE-")]
            for rule in rules:
                parts = shlex.split(rule)  # rules carry quoted comments
                if (
                    parts[:1] == ["-A"]
                    and not parts[1].startswith("KUBE-")
                    and any(parts[i + 1].startswith("KUBE-") for i, p in enumerate(parts[:-1]) if p == "-j")
                ):
                    _sh(tool, "-w", "-t", table, "-D", *parts[1:], check=False)
            for chain in chains:
                _sh(tool, "-w", "-t", table, "-F", chain, check=False)
            for chain in chains:
                _sh(tool, "-w", "-t", table, "-X", chain, check=False)


def cleanup_stale() -> list[Path]:
    """Clean up after node runs whose process is gone (killed, not stopped)."""
    cleaned = []
    for run_dir in sorted(RUN_BASE.glob("*")) if RUN_BASE.is_dir() else []:
        if run_dir.name.isdigit() and Path(f"/proc/{run_dir.name}").exists() and int(run_dir.name) != os.getpid():
            continue  # a live run
        cleanup(run_dir)
        cleaned.append(run_dir)
    return cleaned


@contextlib.contextmanager
def running_node(images: list[Path], log: Callable[[str], None] = lambda _msg: None) -> Iterator[Node]:
    """A node for the duration of a with-block; everything it made goes with it (Ctrl-C included).

    The node's paths (/var/lib/kubelet, /run/containerd, the CNI bridge) are the machine's own, so
    two runs on one machine (two checkouts' test suites, a demo during a test run) take turns: the
    second waits on a lock rather than sharing a kubelet's directories with the first."""
    with machine_lock(log):
        cleanup_stale()
        work = Path(tempfile.mkdtemp(prefix="trafficmirror-node-"))
        node = Node(work_dir=work, images=images, log=log)
        try:
            yield node.start()
        finally:
            node.stop()


@contextlib.contextmanager
def machine_lock(log: Callable[[str], None] = lambda _msg: None) -> Iterator[None]:
    """The machine's one node slot: held while a node runs, released when its holder's file closes."""
    RUN_BASE.mkdir(parents=True, exist_ok=True)
    with open(RUN_BASE.parent / "trafficmirror-node.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another node runs on this machine: waiting for it to stop")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # the lock goes with the file's close, also when the process dies


def dns_lookup(name: str, server: str = NODE_ADDRESS) -> list[str]:
    """The A records cluster DNS gives for a name (one UDP query)."""
    query = struct.pack("!HHHHHH", 0x7E57, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    query += struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        try:
            sock.sendto(query, (server, 53))
            reply = sock.recv(4096)
        except OSError:
            return []
    answers = struct.unpack("!H", reply[6:8])[0]
    offset = len(query)
    found = []
    for _ in range(answers):
        while reply[offset] and reply[offset] < 0xC0:  # the owner name: labels, or a pointer
            offset += reply[offset] + 1
        offset += 2 if reply[offset] >= 0xC0 else 1
        kind, _cls, _ttl, length = struct.unpack("!HHIH", reply[offset : offset + 10])
        offset += 10
        if kind == 1 and length == 4:
            found.append(socket.inet_ntoa(reply[offset : offset + 4]))
        offset += length
    return found


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        port: int = sock.getsockname()[1]
        return port


if __name__ == "__main__":
    if sys.argv[1:] == ["cleanup"]:
        print("\n".join(f"cleaned up {p}" for p in cleanup_stale()) or "nothing to clean up")
    else:
        print(f"usage: {sys.argv[0]} cleanup", file=sys.stderr)
        raise SystemExit(2)
