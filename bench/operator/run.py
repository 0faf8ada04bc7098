"""Operator benchmark (`make bench-operator`): N MirrorSessions (with their targets and filters) at once.

One AWS emulator (moto + traffic mirroring) and one real kube-apiserver + etcd, both on loopback, fresh for
each phase.

World: ceil(N/3) t3.small source instances (an ENI takes at most 3 sessions: session numbers 1..3) and
ceil(N/10) c5.large target instances; session i mirrors source ENI i//3 (number i%3+1) to target i//10
through filter i%F (F = N/10 by default, one ingress accept rule each). A target then has at most 5
distinct source ENIs, under the emulator's default `sources_per_target_limit` of 10, which is left as is.

Phases (--phases):
- unthrottled: first the limit, measured in the same run: the same objects applied (as the operator run
  applies them), the same AWS resources made directly with boto3 (targets + filters, then one rule per
  filter, then the sessions, each on a thread pool of the operator's size, one shared client), and one
  status patch per object through the Kubernetes API (keep-alive connections, the same pool size).
  limit = apply + creates + status patches. Then the operator: all objects applied at once (--apply-chunks
  parallel `kubectl apply --server-side`), sessions listed straight from the apiserver at most every 2 s
  until all are Ready. operator_converge_ratio = time from the start of the apply to all Ready / limit.
- throttled: the operator talks to EC2 through the fault proxy enforcing EC2's documented per-API token
  buckets (trafficmirror_testbed.ec2_throttling), all full at the start. The bucket-bound minimum is
  computed from the bucket parameters and the plan's create calls (one per AWS resource): per bucket
  (calls - capacity) / refill rate, the slowest bucket bounding the whole. operator_bucket_ratio = time to
  all Ready / that minimum; the proxy counts the calls its buckets refused (throttled fraction).
- rss: --rss-objects custom resources (sessions plus a tenth each of targets and filters), unthrottled,
  for the operator's peak RSS (VmHWM from /proc) with that many objects.
In every phase: creates per AWS resource (the operator's successful Create* calls / resources made), and
the steady state: once `trafficmirror_reconciles_total` has not moved for a period, EC2 calls and the
resync's batched Describes per period (median over --periods windows).

Full figures go to bench/results/operator.json (this run's phases, and one summary line per run under
`history`, with the git HEAD under test). The last line is the summary:
operator_bucket_ratio=<x> operator_converge_ratio=<x> creates_per_resource=<x> resync_calls_per_period=<n>
rss_mb_10k=<n>  (`none` for what a failed phase could not measure, with exit status 1).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import http.client
import json
import math
import os
import platform
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "operator"))

from trafficmirror_testbed.emulator import Emulator  # noqa: E402
from trafficmirror_testbed.faultproxy import FaultProxy  # noqa: E402
from trafficmirror_testbed.kube import ControlPlane, free_port, testbed_bin_dir  # noqa: E402
from trafficmirror_testbed.seed import seed_world  # noqa: E402

RESULTS = REPO / "bench" / "results" / "operator.json"
NAMESPACE = "bench"
API_VERSION = "trafficmirror.io/v1alpha1"
SESSIONS_PER_ENI = 3
SESSIONS_PER_TARGET = 10
OPERATOR_WORKER_THREADS = int(os.environ.get("TRAFFICMIRROR_WORKER_THREADS", "32"))
POLL_SECONDS = 2.0
TICK = os.sysconf("SC_CLK_TCK")
TARGETS = {
    "operator_bucket_ratio": 1.1,
    "operator_converge_ratio": 1.5,
    "creates_per_resource": 1.0,
    "throttled_fraction": 0.05,
    "resync_describes_per_kind_per_period": 1,
    "rss_mb_10k": 256,
}


class GaveUp(Exception):
    pass


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------------------
# /proc helpers
# ---------------------------------------------------------------------------------------------------------
def cpu_seconds(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class RssWatcher(threading.Thread):
    """Polls VmHWM/VmRSS of one process; keeps the peak and a coarse time series."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True, name="rss-watch")
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self.samples: list[tuple[float, float]] = []  # (seconds since start, RSS MB), every ~5 s
        self._stop = threading.Event()
        self._start = time.monotonic()

    def run(self) -> None:
        last_sample = -10.0
        while not self._stop.is_set():
            self.poll()
            now = time.monotonic() - self._start
            if now - last_sample >= 5:
                rss = proc_status_kb(self.pid, "VmRSS")
                if rss is not None:
                    self.samples.append((round(now, 1), round(rss / 1024, 1)))
                last_sample = now
            self._stop.wait(self.interval)

    def poll(self) -> None:
        hwm = proc_status_kb(self.pid, "VmHWM")
        if hwm is not None:
            self.peak_kb = max(self.peak_kb, hwm)

    def stop(self) -> None:
        self.poll()
        self._stop.set()


# ---------------------------------------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------------------------------------
def launch(
    ec2: Any, image_id: str, subnet_id: str, instance_type: str, count: int, role: str, instances: list[str]
) -> list[str]:
    """`count` instances (their IDs appended to `instances`); their primary ENIs, in launch order."""
    enis: list[str] = []
    ids: list[str] = []
    while len(ids) < count:
        batch = min(100, count - len(ids))
        reply = ec2.run_instances(
            ImageId=image_id,
            InstanceType=instance_type,
            MinCount=batch,
            MaxCount=batch,
            SubnetId=subnet_id,
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "trafficmirror.io/bench", "Value": role}]}
            ],
        )
        for instance in reply["Instances"]:
            ids.append(instance["InstanceId"])
            enis.append(instance["NetworkInterfaces"][0]["NetworkInterfaceId"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = [
            i["State"]["Name"]
            for chunk in range(0, len(ids), 200)
            for r in ec2.describe_instances(InstanceIds=ids[chunk : chunk + 200])["Reservations"]
            for i in r["Instances"]
        ]
        if all(s == "running" for s in states):
            instances += ids
            return enis
        time.sleep(1)
    raise GaveUp(f"{role} instances not running after 60 s")


class Plan:
    def __init__(self, sessions: int, filters: int, source_enis: list[str], target_enis: list[str]) -> None:
        self.sessions = sessions
        self.filters = filters
        self.source_enis = source_enis
        self.target_enis = target_enis

    @property
    def targets(self) -> int:
        return len(self.target_enis)

    @property
    def resources(self) -> int:
        """AWS resources the plan makes: targets, filters, one rule per filter, sessions."""
        return self.targets + 2 * self.filters + self.sessions

    def create_calls(self) -> dict[str, int]:
        """The fewest EC2 calls that make the plan's AWS state: one create per resource."""
        return {
            "CreateTrafficMirrorTarget": self.targets,
            "CreateTrafficMirrorFilter": self.filters,
            "CreateTrafficMirrorFilterRule": self.filters,
            "CreateTrafficMirrorSession": self.sessions,
        }

    def session(self, i: int) -> tuple[str, int, int, int]:
        """(source ENI, session number, target index, filter index) of session i."""
        return (
            self.source_enis[i // SESSIONS_PER_ENI],
            i % SESSIONS_PER_ENI + 1,
            i // SESSIONS_PER_TARGET,
            i % self.filters,
        )

    def manifests(self) -> list[dict[str, Any]]:
        def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
            return {
                "apiVersion": API_VERSION,
                "kind": kind,
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": spec,
            }

        rule = {
            "ruleNumber": 100,
            "action": "accept",
            "sourceCidrBlock": "0.0.0.0/0",
            "destinationCidrBlock": "0.0.0.0/0",
        }
        items = [obj("MirrorTarget", f"t{t}", {"networkInterfaceId": eni}) for t, eni in enumerate(self.target_enis)]
        items += [obj("MirrorFilter", f"f{f}", {"ingressRules": [rule]}) for f in range(self.filters)]
        for i in range(self.sessions):
            eni, number, target, flt = self.session(i)
            spec = {
                "source": {"networkInterfaceId": eni},
                "targetRef": {"name": f"t{target}"},
                "filterRef": {"name": f"f{flt}"},
                "sessionNumber": number,
            }
            items.append(obj("MirrorSession", f"s{i}", spec))
        return items


# ---------------------------------------------------------------------------------------------------------
# Baseline: the same AWS resources, straight boto3
# ---------------------------------------------------------------------------------------------------------
def baseline(emulator: Emulator, plan: Plan, threads: int) -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "ec2",
        endpoint_url=emulator.endpoint_url,
        region_name=emulator.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "max_attempts": 8}, max_pool_connections=threads),
    )
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    def call(operation: str, **kwargs: Any) -> dict[str, Any]:
        reply: dict[str, Any] = getattr(client, operation)(**kwargs)
        with lock:
            calls[operation] += 1
        return reply

    def rule_args(filter_id: str) -> dict[str, Any]:
        return {
            "TrafficMirrorFilterId": filter_id,
            "TrafficDirection": "ingress",
            "RuleNumber": 100,
            "RuleAction": "accept",
            "SourceCidrBlock": "0.0.0.0/0",
            "DestinationCidrBlock": "0.0.0.0/0",
        }

    phases: dict[str, float] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        start = time.monotonic()
        target_futures = [
            pool.submit(call, "create_traffic_mirror_target", NetworkInterfaceId=eni) for eni in plan.target_enis
        ]
        filter_futures = [pool.submit(call, "create_traffic_mirror_filter") for _ in range(plan.filters)]
        target_ids = [f.result()["TrafficMirrorTarget"]["TrafficMirrorTargetId"] for f in target_futures]
        filter_ids = [f.result()["TrafficMirrorFilter"]["TrafficMirrorFilterId"] for f in filter_futures]
        phases["targets_and_filters_s"] = time.monotonic() - start
        list(pool.map(lambda fid: call("create_traffic_mirror_filter_rule", **rule_args(fid)), filter_ids))
        phases["rules_s"] = time.monotonic() - start - phases["targets_and_filters_s"]

        def make_session(i: int) -> str:
            eni, number, target, flt = plan.session(i)
            reply = call(
                "create_traffic_mirror_session",
                NetworkInterfaceId=eni,
                TrafficMirrorTargetId=target_ids[target],
                TrafficMirrorFilterId=filter_ids[flt],
                SessionNumber=number,
            )
            return str(reply["TrafficMirrorSession"]["TrafficMirrorSessionId"])

        session_ids = list(pool.map(make_session, range(plan.sessions)))
        elapsed = time.monotonic() - start
        phases["sessions_s"] = elapsed - phases["targets_and_filters_s"] - phases["rules_s"]

        # Not timed: leave the emulator as the operator should find it.
        cleanup_start = time.monotonic()
        list(pool.map(lambda s: client.delete_traffic_mirror_session(TrafficMirrorSessionId=s), session_ids))
        list(pool.map(lambda t: client.delete_traffic_mirror_target(TrafficMirrorTargetId=t), target_ids))
        list(pool.map(lambda f: client.delete_traffic_mirror_filter(TrafficMirrorFilterId=f), filter_ids))
        cleanup = time.monotonic() - cleanup_start
    left = {
        "sessions": len(client.describe_traffic_mirror_sessions(MaxResults=1000)["TrafficMirrorSessions"]),
        "targets": len(client.describe_traffic_mirror_targets(MaxResults=1000)["TrafficMirrorTargets"]),
        "filters": len(client.describe_traffic_mirror_filters(MaxResults=1000)["TrafficMirrorFilters"]),
    }
    if any(left.values()):
        raise GaveUp(f"baseline cleanup left resources in the emulator: {left}")
    return {
        "seconds": round(elapsed, 3),
        "threads": threads,
        "calls": dict(calls),
        "total_calls": sum(calls.values()),
        "phases": {k: round(v, 3) for k, v in phases.items()},
        "cleanup_seconds_untimed": round(cleanup, 3),
    }


# ---------------------------------------------------------------------------------------------------------
# The limits
# ---------------------------------------------------------------------------------------------------------
def status_patch_limit(plane: ControlPlane, items: list[dict[str, Any]], threads: int, chunks: int) -> dict[str, Any]:
    """The Kubernetes side of the limit: the objects applied (as the operator run applies them), then one
    status patch per object (what a Ready status costs), on `threads` keep-alive connections. The objects
    are deleted afterwards (not timed; no operator runs, so no finalizer holds them)."""
    start = time.monotonic()
    procs = apply_all(plane, items, chunks)
    for proc in procs:
        proc.wait()
        if proc.returncode != 0:
            raise GaveUp(f"kubectl apply failed: {proc.stderr.read() if proc.stderr else ''}")
    apply_s = time.monotonic() - start
    id_fields = {
        "MirrorTarget": "trafficMirrorTargetId",
        "MirrorFilter": "trafficMirrorFilterId",
        "MirrorSession": "trafficMirrorSessionId",
    }
    local = threading.local()
    host = urllib.parse.urlsplit(plane.url)
    context = ssl.create_default_context(cafile=str(plane.ca_file))

    def patch(item: dict[str, Any]) -> None:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPSConnection(host.hostname or "", host.port, context=context, timeout=60)
        plural = item["kind"].lower() + "s"
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        conditions = [
            {
                "type": t,
                "status": "True",
                "reason": t,
                "message": "",
                "observedGeneration": 1,
                "lastTransitionTime": stamp,
            }
            for t in ("Ready", "Synced")
        ]
        status = {"phase": "Ready", "observedGeneration": 1, "conditions": conditions, id_fields[item["kind"]]: "x-1"}
        local.conn.request(
            "PATCH",
            f"/apis/{API_VERSION}/namespaces/{NAMESPACE}/{plural}/{item['metadata']['name']}/status",
            body=json.dumps({"status": status}),
            headers={
                "Authorization": f"Bearer {plane.admin_token}",
                "Content-Type": "application/merge-patch+json",
            },
        )
        response = local.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise GaveUp(f"status patch answered {response.status}: {body[:300]!r}")

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(patch, items))
    patch_s = time.monotonic() - start
    local.conn = http.client.HTTPSConnection(host.hostname or "", host.port, context=context, timeout=300)
    # One delete-collection request per kind (kubectl would send one per object), then wait until all are gone.
    for plural in ("mirrorsessions", "mirrortargets", "mirrorfilters"):
        local.conn.request(
            "DELETE",
            f"/apis/{API_VERSION}/namespaces/{NAMESPACE}/{plural}",
            headers={"Authorization": f"Bearer {plane.admin_token}"},
        )
        response = local.conn.getresponse()
        response.read()
        if response.status != 200:
            raise GaveUp(f"delete-collection of {plural} answered {response.status}")
    deadline = time.monotonic() + 300
    while any(phases_of(plane, p)[1] for p in ("mirrorsessions", "mirrortargets", "mirrorfilters")):
        if time.monotonic() > deadline:
            raise GaveUp("the limit's objects were not deleted within 300 s")
        time.sleep(1)
    return {"objects": len(items), "apply_s": round(apply_s, 3), "patch_s": round(patch_s, 3), "threads": threads}


def bucket_bound_of_calls(calls: dict[str, int]) -> dict[str, Any]:
    """The least time EC2's token buckets allow for these calls (by action), from the buckets' sizes and
    refill rates: per bucket, (calls - capacity) / refill, and the slowest bucket bounds the whole."""
    from trafficmirror_testbed.ec2_throttling import bucket_for

    per_bucket: dict[str, dict[str, float]] = {}
    for action, count in calls.items():
        # The operator's Describe calls name IDs or a filter; a create is in its own mutating bucket.
        key, spec = bucket_for(action, {"Filter.1.Name": "x"} if action.startswith("Describe") else None)
        entry = per_bucket.setdefault(key, {"calls": 0, "capacity": spec.capacity, "refill": spec.refill_per_second})
        entry["calls"] += count
    for entry in per_bucket.values():
        entry["seconds"] = round(max(0.0, entry["calls"] - entry["capacity"]) / entry["refill"], 2)
    slowest = max(per_bucket, key=lambda k: per_bucket[k]["seconds"]) if per_bucket else None
    return {
        "seconds": per_bucket[slowest]["seconds"] if slowest else 0.0,
        "bound_by": slowest,
        "buckets": per_bucket,
    }


def bucket_bound(plan: Plan) -> dict[str, Any]:
    """The bucket-bound minimum of the plan: its create calls only, each API's bucket full at the start."""
    bound = bucket_bound_of_calls(plan.create_calls())
    bound["calls"] = plan.create_calls()
    return bound


def creates_of(now_metrics: str, before: str) -> dict[str, Any]:
    """The operator's create calls since `before`: answered with a resource ('ok'), and all attempts."""
    ok = attempts = 0
    by_operation: Counter[str] = Counter()
    previous = samples(before, "trafficmirror_aws_calls_total")
    for labels, value in samples(now_metrics, "trafficmirror_aws_calls_total").items():
        named = dict(labels)
        if not named.get("operation", "").startswith("Create"):
            continue
        count = int(value - previous.get(labels, 0.0))
        attempts += count
        if named.get("result") == "ok":
            ok += count
            by_operation[named["operation"]] += count
    return {"ok": ok, "attempts": attempts, "ok_by_operation": dict(by_operation)}


def replay_lookups(
    emulator: Emulator,
    counts: dict[str, int],
    enis: list[str],
    instance_ids: list[str],
    threads: int,
    limit: int = 2000,
) -> dict[str, Any]:
    """Make the operator's per-object lookups (by one ID each, as it does) directly, timed."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "ec2",
        endpoint_url=emulator.endpoint_url,
        region_name=emulator.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "max_attempts": 8}, max_pool_connections=threads),
    )
    jobs: list[tuple[str, dict[str, Any]]] = []
    jobs += [
        ("describe_network_interfaces", {"NetworkInterfaceIds": [enis[i % len(enis)]]})
        for i in range(counts.get("describe_network_interfaces", 0))
    ]
    jobs += [
        ("describe_instances", {"InstanceIds": [instance_ids[i % len(instance_ids)]]})
        for i in range(counts.get("describe_instances", 0))
    ]
    # At most `limit` of them, interleaved, and the time scaled to all: thousands take minutes here.
    total = len(jobs)
    if total > limit:
        jobs = jobs[:: math.ceil(total / limit)]
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda job: getattr(client, job[0])(**job[1]), jobs))
    elapsed = time.monotonic() - start
    return {
        "calls": counts,
        "replayed": len(jobs),
        "seconds_replayed": round(elapsed, 2),
        "seconds_for_all": round(elapsed * total / max(1, len(jobs)), 1),
        "threads": threads,
    }


# ---------------------------------------------------------------------------------------------------------
# The operator
# ---------------------------------------------------------------------------------------------------------
class Operator:
    def __init__(
        self,
        control_plane: ControlPlane,
        emulator: Emulator,
        log_path: Path,
        resync: float,
        endpoint: str,
        pacing_scale: str,
    ) -> None:
        self.metrics_port = free_port()
        env = {
            **control_plane.env(),
            **emulator.env(),
            "AWS_ENDPOINT_URL": endpoint,
            "TRAFFICMIRROR_AWS_RATE_LIMIT_SCALE": pacing_scale,
            "TRAFFICMIRROR_RESYNC_SECONDS": str(resync),
            "TRAFFICMIRROR_METRICS_PORT": str(self.metrics_port),
            "TRAFFICMIRROR_CLUSTER_NAME": "bench",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "operator"), os.environ.get("PYTHONPATH")) if p),
        }
        self.log_path = log_path
        command = [sys.executable, "-m", "trafficmirror.cli", "operator", "--liveness"]
        command.append(f"http://127.0.0.1:{free_port()}/healthz")
        self.process = subprocess.Popen(command, env=env, stdout=log_path.open("ab"), stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            return str(response.read().decode())

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise GaveUp(f"operator exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.metrics_text()
            except OSError:
                time.sleep(0.2)
                continue
            # kopf starts its watches right after the startup handler that serves metrics; they may be
            # refused for a second while the apiserver's storage for the fresh CRDs initializes.
            time.sleep(3)
            return
        raise GaveUp(f"operator metrics never answered:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>.*)\})?\s+(?P<value>\S+)$")


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group("name") != name:
            continue
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', match.group("labels") or "")))
        out[labels] = float(match.group("value"))
    return out


def by_label(text: str, name: str, label: str) -> dict[str, float]:
    result: dict[str, float] = {}
    for labels, value in samples(text, name).items():
        key = dict(labels).get(label, "")
        result[key] = result.get(key, 0.0) + value
    return result


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


# ---------------------------------------------------------------------------------------------------------
# kubectl
# ---------------------------------------------------------------------------------------------------------
def apply_all(plane: ControlPlane, items: list[dict[str, Any]], chunks: int) -> list[subprocess.Popen[str]]:
    """Start `chunks` parallel server-side applies, each of one List mixing all three kinds."""
    procs = []
    kubectl = str(plane.bin_dir / "kubectl")
    for c in range(chunks):
        part = items[c::chunks]
        proc = subprocess.Popen(
            [
                kubectl,
                "--kubeconfig",
                str(plane.kubeconfig),
                "apply",
                "--server-side",
                "--field-manager=bench",
                "-f",
                "-",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"apiVersion": "v1", "kind": "List", "items": part}))
        proc.stdin.close()
        procs.append(proc)
    return procs


def phases_of(plane: ControlPlane, plural: str, via: str = "api") -> tuple[Counter[str], list[dict[str, Any]]]:
    """The objects of a kind in all namespaces, as `kubectl get <plural> -A -o json` lists them.

    via="api" asks the apiserver for the same list directly: kubectl's own decoding of ~1,000 objects
    costs seconds of CPU on this 2-core machine, which the operator under test would lose.
    """
    if via == "kubectl":
        result = plane.kubectl("get", plural, "-A", "-o", "json", check=False)
        if result.returncode != 0:
            return Counter({"<kubectl failed>": 1}), []
        text = result.stdout
    else:
        context = ssl.create_default_context(cafile=str(plane.ca_file))
        request = urllib.request.Request(
            f"{plane.url}/apis/{API_VERSION}/{plural}", headers={"Authorization": f"Bearer {plane.admin_token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60, context=context) as response:
                text = response.read().decode()
        except OSError as error:
            return Counter({f"<list failed: {error}>": 1}), []
    items: list[dict[str, Any]] = json.loads(text)["items"]
    return Counter((o.get("status") or {}).get("phase") or "<none>" for o in items), items


def ready_reason(obj: dict[str, Any]) -> str:
    for condition in (obj.get("status") or {}).get("conditions", []):
        if condition.get("type") == "Ready":
            return f"{condition.get('reason')}: {condition.get('message')}"
    return "<no Ready condition>"


# ---------------------------------------------------------------------------------------------------------
def machine_notes() -> dict[str, Any]:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "?",
    )
    mem_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    others = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "mem_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_avg_at_start": os.getloadavg(),
        "concurrent_pytest_seen": any("pytest" in line for line in others.splitlines()),
        "note": "shared 2-core VM: kube-apiserver, etcd, the emulator, the operator and kubectl share the cores; "
        "other processes on the machine may run at the same time, so timings carry noise",
    }


def operator_log_findings(text: str) -> dict[str, Any]:
    """Counts of telling lines; the operator logs plain text or JSON lines (--log-format), both handled."""
    lines = text.splitlines()
    patterns: dict[str, tuple[str, ...]] = {
        "connection_pool_full": ("Connection pool is full",),
        "handler_failed_temporarily": ("failed temporarily",),
        "waiting_for_target": ("failed temporarily: MirrorTarget", "is not ready"),
        "waiting_for_filter": ("failed temporarily: MirrorFilter", "is not ready"),
        "create_intent_passes": ("failed temporarily: creating the",),
        "creation_processed": ("Creation is processed",),
        "timer_follow_dependencies_runs": ("Timer 'follow_dependencies' succeeded",),
        "timer_resync_runs": ("Timer 'resync' succeeded",),
        "timer_orphaned": ("did not exit in time",),
        "inconsistent_patches": ("finished with inconsistencies",),
        "watch_request_retries": ("Request attempt",),
        "throttled": ("Throttl",),
        "tracebacks": ("Traceback",),
        "drift": ("drift:",),
    }
    counts = {name: sum(1 for line in lines if all(x in line for x in ns)) for name, ns in patterns.items()}

    def is_error(line: str) -> bool:
        return " ERROR " in line or '"severity": "error"' in line

    counts["error_lines"] = sum(1 for line in lines if is_error(line))
    counts["warning_lines"] = sum(1 for line in lines if " WARNING " in line or '"severity": "warn' in line)
    unexpected = [
        line[:400]
        for line in lines
        if is_error(line) and "failed temporarily" not in line and "Request attempt" not in line
    ][:5]
    return {"lines": len(lines), "bytes": len(text), "counts": counts, "unexpected_errors": unexpected}


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def git_state() -> dict[str, Any]:
    """The operator code under test (read-only git: the commit and whether the working tree differs)."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", "--no-optional-locks", *args], cwd=REPO, capture_output=True, text=True)
        return out.stdout.strip()

    return {
        "head": git("rev-parse", "HEAD"),
        "head_subject": git("log", "-1", "--format=%s"),
        "operator_dirty": git("status", "--porcelain", "--", "operator/trafficmirror").splitlines(),
    }


def run(args: argparse.Namespace, work: Path, result: dict[str, Any], mode: str, n: int) -> None:
    """One phase on a fresh emulator and control plane: mode 'unthrottled' (with the measured limit),
    'throttled' (EC2's token buckets emulated in front of the emulator) or 'rss' (a large count, for memory)."""
    work.mkdir(parents=True, exist_ok=True)
    filters = args.filters or max(1, n // 10)
    result.update(
        sessions=n,
        filters=filters,
        rules_per_filter=1,
        resync_seconds=args.resync_seconds,
        apply_chunks=args.apply_chunks,
        poll=f"every {POLL_SECONDS:g} s at most, via {args.poll}",
        operator_worker_threads=OPERATOR_WORKER_THREADS,
        emulator_sources_per_target_limit="default (10), not raised: a target gets at most 5 distinct source ENIs",
        mode=mode,
    )
    deadline = time.monotonic() + args.timeout
    stack: list[Any] = []
    try:
        log("starting the emulator and the control plane")
        emulator = Emulator(log_path=work / "emulator.log").start()
        stack.append(emulator.stop)
        plane = ControlPlane(bin_dir=testbed_bin_dir(), work_dir=work / "kube").start()
        stack.append(plane.stop)
        plane.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        peering = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "trafficmirror"}}
        plane.kubectl("apply", "-f", "-", input=json.dumps(peering))
        plane.kubectl("create", "namespace", NAMESPACE)

        ec2 = emulator.client("ec2")
        world = seed_world(ec2)
        sources = math.ceil(n / SESSIONS_PER_ENI)
        targets = math.ceil(n / SESSIONS_PER_TARGET)
        log(f"launching {sources} t3.small sources and {targets} c5.large targets")
        # The seeded /24 subnets hold ~250 instances: the bench gets its own, larger ones in the same VPC.
        subnets = {
            role: ec2.create_subnet(VpcId=world.vpc_id, CidrBlock=cidr, AvailabilityZone=f"{emulator.region}{az}")[
                "Subnet"
            ]["SubnetId"]
            for role, cidr, az in (("source", "10.42.64.0/18", "a"), ("target", "10.42.128.0/18", "b"))
        }
        instance_ids: list[str] = []
        source_enis = launch(ec2, world.image_id, subnets["source"], "t3.small", sources, "source", instance_ids)
        target_enis = launch(ec2, world.image_id, subnets["target"], "c5.large", targets, "target", instance_ids)
        plan = Plan(n, filters, source_enis, target_enis)
        result["world"] = {"source_instances": sources, "target_instances": targets, "source_type": "t3.small"}
        result["world"]["target_type"] = "c5.large"

        items = plan.manifests()
        base: dict[str, Any] = {}
        if mode == "unthrottled":
            log(f"limit: {targets} targets, {filters} filters + rules, {n} sessions with boto3, {args.threads} threads")
            emu_cpu0 = cpu_seconds(emulator.process.pid if emulator.process else None)
            result["baseline"] = base = baseline(emulator, plan, args.threads)
            emu_cpu1 = cpu_seconds(emulator.process.pid if emulator.process else None)
            if emu_cpu0 is not None and emu_cpu1 is not None:
                base["emulator_cpu_s_incl_cleanup"] = round(emu_cpu1 - emu_cpu0, 2)
            log(f"limit, creates: {base['seconds']:.2f} s, {base['total_calls']} calls")
            result["status_patch_limit"] = patches = status_patch_limit(plane, items, args.threads, args.apply_chunks)
            log(f"limit, apply {patches['apply_s']:.2f} s + one status patch per object {patches['patch_s']:.2f} s")
            result["limit_seconds"] = round(patches["apply_s"] + base["seconds"] + patches["patch_s"], 3)
        result["bucket_bound"] = bucket_bound(plan)
        endpoint = emulator.endpoint_url
        proxy = None
        if mode == "throttled":
            proxy = FaultProxy(emulator.endpoint_url, seed=1, rate_limits=1.0).start()
            stack.append(proxy.stop)
            endpoint = proxy.endpoint_url
            log(f"EC2 token buckets emulated; bucket-bound minimum {result['bucket_bound']['seconds']:.1f} s")

        log("starting the operator")
        # Without emulated buckets the operator's client-side pacing (EC2's default rates) is switched off,
        # as for an account with raised limits: the phase measures the operator's own costs.
        pacing = "1.0" if mode == "throttled" else "0"
        operator = Operator(plane, emulator, work / "operator.log", args.resync_seconds, endpoint, pacing)
        stack.append(operator.stop)
        operator.wait_ready()
        watcher = RssWatcher(operator.pid)
        watcher.start()
        stack.append(watcher.stop)
        time.sleep(1)
        metrics_before = operator.metrics_text()
        rss_idle_mb = (proc_status_kb(operator.pid, "VmRSS") or 0) / 1024

        if proxy is not None:
            proxy.reset_counters()
            proxy.configure(rate_limits=1.0)  # full buckets at the start, as an idle account has them
        log(f"applying {len(items)} objects in {args.apply_chunks} parallel server-side applies")
        pids = {
            "operator": operator.pid,
            "emulator": emulator.process.pid if emulator.process else None,
            "kube-apiserver": plane._apiserver.pid if plane._apiserver else None,
            "etcd": plane._etcd.pid if plane._etcd else None,
        }
        cpu_start = {k: cpu_seconds(p) for k, p in pids.items()}
        jiffies_start = busy_jiffies()
        start = time.monotonic()
        start_wall = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        appliers = apply_all(plane, items, args.apply_chunks)
        apply_done: float | None = None
        progress: list[dict[str, Any]] = []
        milestones: dict[str, float] = {}
        converged: float | None = None
        last_poll = 0.0
        dependencies_failed_since: float | None = None

        def dependency_trouble() -> dict[str, int]:
            """Targets and filters not Ready, by kind, phase and reason."""
            trouble: Counter[str] = Counter()
            for plural in ("mirrortargets", "mirrorfilters"):
                for o in phases_of(plane, plural)[1]:
                    if (o.get("status") or {}).get("phase") != "Ready":
                        trouble[f"{o['kind']} {(o.get('status') or {}).get('phase')}: {ready_reason(o)[:200]}"] += 1
            return dict(trouble)

        def collect(converged: float | None) -> None:
            """What the operator did up to now (all Ready, or giving up)."""
            cpu_end = {k: cpu_seconds(p) for k, p in pids.items()}
            jiffies_end = busy_jiffies()
            now_metrics = operator.metrics_text()
            aws_calls = delta(
                by_label(now_metrics, "trafficmirror_aws_calls_total", "operation"),
                by_label(metrics_before, "trafficmirror_aws_calls_total", "operation"),
            )
            aws_results = delta(
                by_label(now_metrics, "trafficmirror_aws_calls_total", "result"),
                by_label(metrics_before, "trafficmirror_aws_calls_total", "result"),
            )
            reconciles = {
                f"{dict(k).get('kind')}/{dict(k).get('result')}": v
                for k, v in samples(now_metrics, "trafficmirror_reconciles_total").items()
            }
            watcher.poll()
            result["operator"] = {
                "apply_seconds": round(apply_done or 0, 1),
                "converge_seconds": round(converged, 1) if converged is not None else None,
                "converge_seconds_after_apply_finished": (
                    round(converged - (apply_done or 0), 1) if converged is not None else None
                ),
                "milestones": milestones,
                "started_utc": start_wall,
                "targets_by_phase": dict(phases_of(plane, "mirrortargets")[0]),
                "filters_by_phase": dict(phases_of(plane, "mirrorfilters")[0]),
                "aws_calls": {k: int(v) for k, v in sorted(aws_calls.items())},
                "aws_calls_total": int(sum(aws_calls.values())),
                "aws_results": {k: int(v) for k, v in aws_results.items()},
                "reconciles_total": {k: int(v) for k, v in sorted(reconciles.items())},
                "cpu_s": {
                    k: round(cpu_end[k] - cpu_start[k], 1)  # type: ignore[operator]
                    for k in pids
                    if cpu_start.get(k) is not None and cpu_end.get(k) is not None
                },
                "machine_cpu_busy_s": round((jiffies_end[0] - jiffies_start[0]) / TICK, 1),
                "machine_cpu_available_s": round((jiffies_end[1] - jiffies_start[1]) / TICK, 1),
                "rss_idle_mb": round(rss_idle_mb, 1),
                "peak_rss_mb_so_far": round(watcher.peak_kb / 1024, 1),
                "progress": progress,
            }

        try:
            while True:
                if operator.process.poll() is not None:
                    raise GaveUp(f"operator exited with {operator.process.returncode}:\n{operator.log_tail()}")
                if apply_done is None and all(p.poll() is not None for p in appliers):
                    apply_done = time.monotonic() - start
                    failed_applies = [p.stderr.read() for p in appliers if p.returncode != 0 and p.stderr]
                    if failed_applies:
                        raise GaveUp("kubectl apply failed:\n" + "\n".join(failed_applies)[:4000])
                    log(f"apply finished after {apply_done:.1f} s")
                if time.monotonic() > deadline:
                    last = progress[-1]["sessions"] if progress else "?"
                    raise GaveUp(
                        f"gave up after {args.timeout:.0f} s: sessions by phase {last}; "
                        f"targets/filters not Ready: {dependency_trouble()}"
                    )
                wait = POLL_SECONDS - (time.monotonic() - last_poll)
                if wait > 0:
                    time.sleep(min(wait, 0.2))
                    continue
                last_poll = time.monotonic()
                phases, objects = phases_of(plane, "mirrorsessions", args.poll)
                elapsed = time.monotonic() - start
                ready = phases.get("Ready", 0)
                op_cpu = cpu_seconds(operator.pid)
                progress.append(
                    {
                        "t": round(elapsed, 1),
                        "poll_s": round(time.monotonic() - last_poll, 2),
                        "operator_cpu_s": round(op_cpu - (cpu_start["operator"] or 0), 1) if op_cpu else None,
                        "sessions": dict(phases),
                    }
                )
                for fraction in (0.01, 0.5, 0.9, 1.0):
                    key = f"{int(fraction * 100)}pct_ready_s"
                    if key not in milestones and ready >= math.ceil(fraction * n):
                        milestones[key] = round(elapsed, 1)
                if len(progress) % 5 == 1:
                    log(f"t={elapsed:.0f}s sessions {dict(phases)}")
                failed = [o for o in objects if (o.get("status") or {}).get("phase") == "Failed"]
                if failed:
                    reasons = Counter(ready_reason(o) for o in failed)
                    raise GaveUp(f"{len(failed)} sessions Failed: {reasons.most_common(5)}")
                if ready == n and apply_done is not None:
                    converged = elapsed
                    break
                # A Failed target or filter strands its sessions: give up when one stays Failed for 3 periods.
                if apply_done is not None and len(progress) % 5 == 0:
                    trouble = dependency_trouble()
                    if any(" Failed:" in k for k in trouble):
                        dependencies_failed_since = dependencies_failed_since or time.monotonic()
                        if time.monotonic() - dependencies_failed_since > 3 * args.resync_seconds:
                            raise GaveUp(f"targets/filters stay Failed, stranding sessions {dict(phases)}: {trouble}")
                    else:
                        dependencies_failed_since = None
        except GaveUp:
            try:
                collect(None)
                result["operator"]["log_findings"] = operator_log_findings(
                    operator.log_path.read_text(errors="replace")
                )
            except Exception as error:  # the report of what happened must not hide why
                log(f"could not collect partial figures: {error!r}")
            raise
        assert converged is not None
        collect(converged)
        log(f"all {n} sessions Ready after {converged:.1f} s")
        aws_calls = {k: float(v) for k, v in result["operator"]["aws_calls"].items()}
        creates = creates_of(operator.metrics_text(), metrics_before)
        result["creates"] = creates
        result["creates_per_resource"] = round(creates["ok"] / plan.resources, 3)
        if mode == "unthrottled":
            result["converge_ratio"] = round(converged / result["limit_seconds"], 2)
            result["converge_ratio_vs_creates_only"] = round(converged / base["seconds"], 2)
        if mode == "throttled" and proxy is not None:
            counters = proxy.counters()
            calls, limited = sum(counters["calls"].values()), sum(counters["rate_limited"].values())
            result["proxy"] = {
                "calls": calls,
                "rate_limited": limited,
                "rate_limited_by_action": counters["rate_limited"],
            }
            result["throttled_fraction"] = round(limited / max(1, calls), 4)
            result["bucket_ratio"] = round(converged / result["bucket_bound"]["seconds"], 3)
            result["bucket_bound_of_operator_calls"] = bucket_bound_of_calls({k: int(v) for k, v in aws_calls.items()})

        # Steady state: no reconcile (retry, follow-up, drift) for a whole period; then one window per period.
        period = args.resync_seconds
        settle_start = time.monotonic()
        reconciled = samples(operator.metrics_text(), "trafficmirror_reconciles_total")
        quiet = False
        while True:
            time.sleep(period)
            now_reconciled = samples(operator.metrics_text(), "trafficmirror_reconciles_total")
            if now_reconciled == reconciled:
                quiet = True
                break
            reconciled = now_reconciled
            if time.monotonic() - settle_start > args.settle_timeout:
                log(f"no quiet period within {args.settle_timeout:.0f} s after convergence: measuring anyway")
                break
        settle = time.monotonic() - settle_start
        log(f"settled after {settle:.0f} s; measuring {args.periods} resync periods of {period:.0f} s")
        windows: list[dict[str, Any]] = []
        totals: list[int] = []
        previous = operator.metrics_text()
        for _ in range(args.periods):
            if time.monotonic() > deadline + 10 * period:
                raise GaveUp("out of time measuring the resync")
            time.sleep(period)
            current = operator.metrics_text()
            calls = delta(
                by_label(current, "trafficmirror_aws_calls_total", "operation"),
                by_label(previous, "trafficmirror_aws_calls_total", "operation"),
            )
            describes = delta(
                by_label(current, "trafficmirror_resync_describe_calls_total", "kind"),
                by_label(previous, "trafficmirror_resync_describe_calls_total", "kind"),
            )
            totals.append(int(sum(calls.values())))
            windows.append(
                {
                    "aws_calls_total": totals[-1],
                    "aws_calls_by_operation": {k: int(v) for k, v in calls.items()},
                    "resync_describes_by_kind": {k: int(v) for k, v in describes.items()},
                }
            )
            previous = current
        per_period = statistics.median(totals)
        result["steady_state"] = {
            "period_s": period,
            "settle_s": round(settle, 1),
            "quiet_period_reached": quiet,
            "windows": windows,
            "aws_calls_per_period_median": per_period,
            "aws_calls_per_period_max": max(totals),
        }
        result["resync_calls_per_period"] = per_period
        result["resync_describes_per_kind_per_period_max"] = max(
            (v for w in windows for v in w["resync_describes_by_kind"].values()), default=0
        )

        # Diagnostic: how long the operator's extra lookups take when made directly (same pool size).
        lookups = {
            "describe_network_interfaces": int(aws_calls.get("DescribeNetworkInterfaces", 0)),
            "describe_instances": int(aws_calls.get("DescribeInstances", 0)),
        }
        if mode == "unthrottled":
            result["replay_of_operator_lookups"] = replay_lookups(
                emulator, lookups, [*source_enis, *target_enis], instance_ids, args.threads
            )

        watcher.stop()
        result["operator"]["rss_samples_mb"] = watcher.samples
        result["rss_mb"] = round(watcher.peak_kb / 1024, 1)
        result["operator"]["peak_rss_mb"] = result["rss_mb"]
        del result["operator"]["peak_rss_mb_so_far"]
        result["operator"]["log_findings"] = operator_log_findings(operator.log_path.read_text(errors="replace"))
    finally:
        for stop in reversed(stack):
            try:
                stop()
            except Exception as error:  # cleanup must go on
                log(f"cleanup: {error!r}")


def summary_line(result: dict[str, Any]) -> str:
    """The last line: `none` for what a phase could not measure."""
    phases = result.get("phases", {})

    def figure(phase: str, key: str, fmt: str = "{}") -> str:
        value = (phases.get(phase) or {}).get(key)
        return fmt.format(value) if value is not None else "none"

    creates = [p.get("creates_per_resource") for p in phases.values() if p.get("creates_per_resource") is not None]
    rss_phase = phases.get("rss") or {}
    # A phase that gave up still held every object: its peak so far is a lower bound (the JSON says which).
    rss = rss_phase.get("rss_mb") or (rss_phase.get("operator") or {}).get("peak_rss_mb_so_far")
    return (
        f"operator_bucket_ratio={figure('throttled', 'bucket_ratio', '{:.2f}')} "
        f"operator_converge_ratio={figure('unthrottled', 'converge_ratio', '{:.2f}')} "
        f"creates_per_resource={f'{max(creates):.2f}' if creates else 'none'} "
        f"resync_calls_per_period={figure('unthrottled', 'resync_calls_per_period', '{:g}')} "
        f"rss_mb_10k={f'{rss:.0f}' if rss is not None else 'none'}"
    )


def write_results(result: dict[str, Any], path: Path = RESULTS) -> None:
    existing: dict[str, Any] = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except ValueError:
            existing = {}
    phases = result.get("phases", {})
    # One line per run, kept across runs: the code moves while this benchmark is run.
    summary = {
        "started_utc": result.get("started_utc"),
        "sessions": result.get("sessions"),
        "code_head": (result.get("code") or {}).get("head", "")[:10],
        "operator_dirty": bool((result.get("code") or {}).get("operator_dirty")),
        "line": summary_line(result),
        "unthrottled_limit_s": (phases.get("unthrottled") or {}).get("limit_seconds"),
        "unthrottled_converge_s": ((phases.get("unthrottled") or {}).get("operator") or {}).get("converge_seconds"),
        "throttled_bound_s": ((phases.get("throttled") or {}).get("bucket_bound") or {}).get("seconds"),
        "throttled_converge_s": ((phases.get("throttled") or {}).get("operator") or {}).get("converge_seconds"),
        "throttled_fraction": (phases.get("throttled") or {}).get("throttled_fraction"),
        "load_avg_at_start": (result.get("machine") or {}).get("load_avg_at_start"),
        "error": (result.get("error") or "")[:300] or None,
    }
    history = [*existing.get("history", []), summary]
    out = {**result, "targets": TARGETS, "history": history}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--filters", type=int, default=0, help="default: sessions/10, one rule each")
    parser.add_argument("--threads", type=int, default=OPERATOR_WORKER_THREADS, help="limit's thread pools")
    parser.add_argument("--resync-seconds", type=float, default=10.0)
    parser.add_argument("--periods", type=int, default=3, help="resync periods to measure at steady state")
    parser.add_argument(
        "--settle-timeout", type=float, default=120.0, help="max wait after convergence for a quiet period"
    )
    parser.add_argument("--apply-chunks", type=int, default=4, help="parallel kubectl applies")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on convergence after this")
    parser.add_argument(
        "--poll", choices=("api", "kubectl"), default="api", help="list sessions via the API or via kubectl"
    )
    parser.add_argument(
        "--phases",
        default="unthrottled,throttled,rss",
        help="comma-separated: unthrottled (limit measured in the run), throttled (EC2 token buckets), rss",
    )
    parser.add_argument(
        "--rss-objects", type=int, default=10000, help="custom resources of the rss phase (sessions, targets, filters)"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the figures go")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) even on success")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="trafficmirror-bench-operator-"))
    result: dict[str, Any] = {
        "benchmark": "operator",
        "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_notes(),
        "work_dir": str(work),
        "code": git_state(),
        "sessions": args.sessions,
        "phases": {},
    }
    # rss: sessions s with s + 2 * s/10 (targets and filters) = the number of objects asked for.
    rss_sessions = math.ceil(args.rss_objects / 1.2)

    def out_of_time(signum: int, frame: Any) -> None:
        raise GaveUp("hard time limit reached")

    signal.signal(signal.SIGALRM, out_of_time)
    ok = True
    for mode in [m.strip() for m in args.phases.split(",") if m.strip()]:
        n = rss_sessions if mode == "rss" else args.sessions
        phase: dict[str, Any] = {}
        result["phases"][mode] = phase
        log(f"=== phase {mode}: {n} sessions")
        signal.alarm(int(args.timeout + 20 * args.resync_seconds + 600))
        try:
            run(args, work / mode, phase, mode, n)
        except GaveUp as problem:
            ok = False
            phase["error"] = str(problem)[:8000]
            log(f"GAVE UP in {mode}: {problem}")
        finally:
            signal.alarm(0)
            write_results(result, args.results)
    result["finished_utc"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    if ok and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
        result["work_dir"] = None
    else:
        log(f"logs kept in {work}")
    write_results(result, args.results)
    for mode, phase in result["phases"].items():
        op = phase.get("operator") or {}
        print(
            f"{mode}: {phase.get('sessions')} sessions, all Ready after {op.get('converge_seconds')} s; "
            f"limit {phase.get('limit_seconds')} s; bucket-bound {(phase.get('bucket_bound') or {}).get('seconds')} s; "
            f"creates {phase.get('creates')}; throttled {phase.get('throttled_fraction')}; "
            f"steady state {[w['aws_calls_total'] for w in (phase.get('steady_state') or {}).get('windows', [])]} "
            f"EC2 calls per period; peak RSS {phase.get('rss_mb')} MB"
        )
    print(summary_line(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
