"""A real kube-apiserver + etcd on loopback, envtest style, for tests and the demo.

The binaries are built from source by hack/build-testbed.sh (no release download works here)
into a cache outside the repository; KUBEBUILDER_ASSETS may point at other ones.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-testbed.sh"
ADMIN_USER = "testbed-admin"


def testbed_bin_dir() -> Path:
    """The directory holding kube-apiserver, etcd, kubectl and helm, building them if needed."""
    out = subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait(predicate: object, what: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout}s:\n{log.read_text()[-4000:]}")


@dataclass
class ControlPlane:
    """etcd + kube-apiserver on free loopback ports, with an admin token and a kubeconfig."""

    bin_dir: Path
    work_dir: Path
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    apiserver_port: int = field(default_factory=free_port)
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    address: str = "127.0.0.1"
    service_cidr: str = "10.0.0.0/24"
    _etcd: subprocess.Popen[bytes] | None = None
    _apiserver: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.apiserver_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.work_dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.work_dir / "certs" / "apiserver.crt"

    def start(self) -> ControlPlane:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._write_credentials()
        self.start_etcd()
        self.start_apiserver()
        return self

    def _write_credentials(self) -> None:
        (self.work_dir / "certs").mkdir(exist_ok=True)
        key = self.work_dir / "sa.key"
        if not key.exists():
            subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
            subprocess.run(
                ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(self.work_dir / "sa.pub")],
                check=True,
                capture_output=True,
            )
        (self.work_dir / "tokens.csv").write_text(f'{self.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')

    def start_etcd(self) -> None:
        log = self.work_dir / "etcd.log"
        self._etcd = subprocess.Popen(
            [
                str(self.bin_dir / "etcd"),
                "--data-dir", str(self.work_dir / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-cluster", f"default=http://127.0.0.1:{self.etcd_peer_port}",
                "--unsafe-no-fsync",
                "--log-level", "warn",
            ],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.etcd_port}/health", timeout=1) as r:
                    return bool(r.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        _wait(healthy, "etcd", 30, self._etcd, log)

    def apiserver_args(self) -> list[str]:
        return [
            "--etcd-servers", f"http://127.0.0.1:{self.etcd_port}",
            "--bind-address", self.address,
            "--advertise-address", self.address,
            "--secure-port", str(self.apiserver_port),
            "--cert-dir", str(self.work_dir / "certs"),
            "--token-auth-file", str(self.work_dir / "tokens.csv"),
            "--authorization-mode", "RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(self.work_dir / "sa.pub"),
            "--service-account-signing-key-file", str(self.work_dir / "sa.key"),
            "--service-cluster-ip-range", self.service_cidr,
            "--allow-privileged=true",
            "--disable-admission-plugins", "ServiceAccount",
            "--v", "1",
        ]  # fmt: skip

    def start_apiserver(self) -> None:
        log = self.work_dir / "kube-apiserver.log"
        self._apiserver = subprocess.Popen(
            [str(self.bin_dir / "kube-apiserver"), *self.apiserver_args()],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        _wait(self._ready, "kube-apiserver", 90, self._apiserver, log)
        self._write_kubeconfig()

    def _ready(self) -> bool:
        if not self.ca_file.exists():
            return False
        context = ssl.create_default_context(cafile=str(self.ca_file))
        request = urllib.request.Request(f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"})
        try:
            with urllib.request.urlopen(request, timeout=2, context=context) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(kubeconfig_text(self.url, str(self.ca_file), self.admin_token, user=ADMIN_USER))

    def stop_apiserver(self) -> None:
        _terminate(self._apiserver)
        self._apiserver = None

    def restart_apiserver(self) -> None:
        self.stop_apiserver()
        self.start_apiserver()

    def stop(self) -> None:
        self.stop_apiserver()
        _terminate(self._etcd)
        self._etcd = None

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
        )

    def env(self) -> dict[str, str]:
        """Environment for a child process that talks to this control plane."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


def kubeconfig_text(server: str, ca_file: str, token: str, user: str) -> str:
    return f"""apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: {server}
    certificate-authority: {ca_file}
contexts:
- name: testbed
  context:
    cluster: testbed
    user: {user}
    namespace: default
current-context: testbed
users:
- name: {user}
  user:
    token: {token}
"""


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running_control_plane(work_dir: Path | None = None):  # type: ignore[no-untyped-def]
    """Start a control plane for the duration of a with-block; its files go with it."""
    own_dir = work_dir is None
    directory = Path(tempfile.mkdtemp(prefix="trafficmirror-kube-")) if own_dir else work_dir
    assert directory is not None
    plane = ControlPlane(bin_dir=testbed_bin_dir(), work_dir=directory)
    try:
        yield plane.start()
    finally:
        plane.stop()
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)
