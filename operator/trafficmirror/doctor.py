"""`trafficmirror doctor`: what can be mirrored in this cluster, read-only.

Glue only: it reads Nodes and the capture agent pods from the API server (and each agent's metrics
through the API server's pod proxy), asks EC2 through ``trafficmirror.aws.inventory``, and hands
everything to ``trafficmirror.reconcile.doctor``, which decides and renders.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trafficmirror.aws.errors import AwsError
from trafficmirror.aws.instance_support import InstanceSupportConfigError, load_support_table
from trafficmirror.aws.inventory import Ec2Inventory
from trafficmirror.aws.target_quotas import TargetQuotas
from trafficmirror.reconcile.doctor import VXLAN_PORT, AgentPod, NodeInput, diagnose, render_table

CAPTURE_LABEL = "trafficmirror.io/capture"
AGENT_SELECTOR = "app.kubernetes.io/name=trafficmirror,app.kubernetes.io/component=capture"
METRICS_TIMEOUT_S = 5.0


class DoctorError(RuntimeError):
    """Something doctor needs could not be read; the message says what."""


@dataclass
class KubeReader:
    """GETs against the API server with the current kubeconfig (or the pod's service account)."""

    server: str
    headers: dict[str, str]
    context: ssl.SSLContext

    @classmethod
    def connect(cls) -> KubeReader:
        # kopf's own login functions read the kubeconfig ($KUBECONFIG, ~/.kube/config) or the
        # in-cluster service account; doctor authenticates exactly as the operator would.
        import kopf

        settings = kopf.OperatorSettings()
        info = kopf.login_with_kubeconfig(settings=settings) or kopf.login_with_service_account(settings=settings)
        if info is None:
            raise DoctorError("no Kubernetes credentials: set KUBECONFIG or run inside the cluster")
        context = ssl.create_default_context()
        if info.ca_path:
            context.load_verify_locations(cafile=info.ca_path)
        elif info.ca_data:
            context.load_verify_locations(cadata=_pem(info.ca_data))
        if info.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if info.certificate_path or info.certificate_data:
            with tempfile.TemporaryDirectory() as tmp:
                cert = info.certificate_path or _write(Path(tmp) / "cert.pem", info.certificate_data)
                key = info.private_key_path or _write(Path(tmp) / "key.pem", info.private_key_data)
                context.load_cert_chain(cert, key)
        headers = {"Accept": "application/json"}
        if info.token:
            headers["Authorization"] = f"Bearer {info.token}"
        elif info.username and info.password:
            import base64

            basic = base64.b64encode(f"{info.username}:{info.password}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        return cls(server=str(info.server).rstrip("/"), headers=headers, context=context)

    def get_raw(self, path: str, params: dict[str, str] | None = None, timeout: float = 30.0) -> bytes:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        request = urllib.request.Request(f"{self.server}{path}{query}", headers=self.headers)
        with urllib.request.urlopen(request, context=self.context, timeout=timeout) as response:
            body: bytes = response.read()
            return body

    def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            loaded: dict[str, Any] = json.loads(self.get_raw(path, params))
            return loaded
        except urllib.error.HTTPError as error:
            raise DoctorError(f"GET {path}: {error.code} {error.reason}: {error.read()[:300]!r}") from error
        except (urllib.error.URLError, OSError) as error:
            raise DoctorError(f"GET {path}: {error}") from error


def _pem(data: bytes | str) -> str:
    return data.decode() if isinstance(data, bytes) else data


def _write(path: Path, data: bytes | str | None) -> str:
    path.write_bytes(data if isinstance(data, bytes) else (data or "").encode())
    return str(path)


def read_nodes(kube: KubeReader, selector: str | None) -> list[NodeInput]:
    items = kube.get("/api/v1/nodes", {"labelSelector": selector} if selector else None).get("items", [])
    return [
        NodeInput(
            name=item["metadata"]["name"],
            provider_id=(item.get("spec") or {}).get("providerID"),
            capture=(item["metadata"].get("labels") or {}).get(CAPTURE_LABEL) == "true",
        )
        for item in sorted(items, key=lambda i: i["metadata"]["name"])
    ]


def _termination_message(status: dict[str, Any]) -> str | None:
    for key in ("state", "lastState"):
        terminated = (status.get(key) or {}).get("terminated") or {}
        if terminated.get("message"):
            return str(terminated["message"])
    return None


def read_agent_pods(kube: KubeReader, namespace: str | None, node_names: set[str]) -> list[AgentPod]:
    path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
    items = kube.get(path, {"labelSelector": AGENT_SELECTOR}).get("items", [])
    pods = []
    for item in items:
        spec, status, meta = item.get("spec") or {}, item.get("status") or {}, item["metadata"]
        node = spec.get("nodeName")
        if node not in node_names:
            continue
        container: dict[str, Any] = next(iter(spec.get("containers") or []), {})
        ports = container.get("ports") or []
        udp = next((p["containerPort"] for p in ports if p.get("protocol") == "UDP"), VXLAN_PORT)
        metrics_port = next((p["containerPort"] for p in ports if p.get("name") == "metrics"), None)
        statuses = status.get("containerStatuses") or []
        ready = bool(statuses) and all(s.get("ready") for s in statuses)
        message = next((m for s in statuses if (m := _termination_message(s))), None)
        metrics_text = metrics_error = None
        if metrics_port is None:
            metrics_error = "its container declares no port named metrics"
        else:
            proxy = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}:{metrics_port}/proxy/metrics"
            try:
                metrics_text = kube.get_raw(proxy, timeout=METRICS_TIMEOUT_S).decode("utf-8", "replace")
            except urllib.error.HTTPError as error:
                detail = error.read()[:200].decode("utf-8", "replace").strip()
                metrics_error = f"its metrics could not be read through the API server ({error.code}: {detail})"
            except (urllib.error.URLError, OSError) as error:
                metrics_error = f"its metrics could not be read through the API server ({error})"
        pods.append(
            AgentPod(
                name=meta["name"],
                namespace=meta["namespace"],
                node_name=node,
                phase=status.get("phase", "Unknown"),
                ready=ready,
                udp_port=int(udp),
                termination_message=message,
                metrics_text=metrics_text,
                metrics_error=metrics_error,
            )
        )
    return pods


def run(args: argparse.Namespace) -> int:
    try:
        support = load_support_table(Path(args.support_overrides).read_text() if args.support_overrides else None)
        quotas = TargetQuotas.packaged()
        price = quotas.price(args.price_per_eni_hour)
        kube = KubeReader.connect()
        nodes = read_nodes(kube, args.selector)
        pods = read_agent_pods(kube, args.agent_namespace, {n.name for n in nodes})
        from trafficmirror.reconcile.endpoints import instance_id_from_provider_id

        instance_ids = [i for n in nodes if (i := instance_id_from_provider_id(n.provider_id))]
        inventory = Ec2Inventory.connect(args.region).snapshot(instance_ids)
    except (DoctorError, AwsError, InstanceSupportConfigError, ValueError, OSError) as error:
        print(f"trafficmirror doctor: {error}", file=sys.stderr)
        return 1
    report = diagnose(nodes, inventory, pods, support=support, quotas=quotas, price=price)
    if args.output == "json":
        json.dump(report.to_json(), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_table(report))
    return 0


def add_doctor_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    doctor = subparsers.add_parser(
        "doctor",
        help="read-only: which nodes can be mirror sources, sessions and target quotas used, capture nodes, cost",
    )
    doctor.add_argument("-l", "--selector", help="only nodes matching this label selector")
    doctor.add_argument("-o", "--output", choices=["table", "json"], default="table")
    doctor.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    )
    doctor.add_argument(
        "--price-per-eni-hour",
        type=float,
        default=float(p) if (p := os.environ.get("TRAFFICMIRROR_PRICE_PER_ENI_HOUR")) else None,
        help="USD per ENI-hour of mirroring (default: AWS's published US East price, cited in the output)",
    )
    doctor.add_argument("--agent-namespace", help="namespace of the capture agent pods (default: all namespaces)")
    doctor.add_argument(
        "--support-overrides",
        default=os.environ.get("TRAFFICMIRROR_SUPPORT_OVERRIDES"),
        help="the instance-support override file the operator uses (allow:/deny:)",
    )
    doctor.set_defaults(func=run)
