"""``trafficmirror capture pod/<name>|deployment/<name>|node/<name>|-l <selector>``: create a MirrorSession
and a MirrorFilter for it, show progress, wait until the capture is over, download the merged pcapng and
delete what was created, on exit, Ctrl-C and SIGTERM alike.

Glue only: ``plan`` decides, ``kube`` calls the API server, ``trafficmirror.capture.fetch`` merges.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import secrets
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TextIO

from trafficmirror.kubecapture import plan
from trafficmirror.kubecapture.kube import Forbidden, KubeApi, KubeError, NotFound, crd_path

PROG = "trafficmirror capture"
POLL_SECONDS = 1.0
PACKET_REPORT_SECONDS = 5.0
# After the capture's end: how long the operator may take to mark it Completed and the agents to close,
# ship and list their files.
COMPLETION_GRACE_SECONDS = 90.0
FILES_GRACE_SECONDS = 60.0
# A selector session is Failed while none of its ENIs is mirrored, which can be a moment's state (a
# child waiting for its generated filter, a stopped instance starting again): the capture gives up
# only when Failed has held this long.
FAILED_GRACE_SECONDS = 20.0
DELETE_WAIT_SECONDS = 120.0
CAPTURE_ROLE_HINT = (
    "creating captures needs the built-in edit role in the namespace (the chart aggregates the ClusterRole "
    "trafficmirror-capture-edit into it): kubectl create rolebinding <name> -n <namespace> --clusterrole=edit "
    "--user=<you>"
)
PCAP_ROLE_HINT = (
    "reading the capture files needs the ClusterRole trafficmirror-pcap-reader, bound in the capture agent's "
    "namespace (kubectl create rolebinding pcap-reader -n <agent namespace> --clusterrole=trafficmirror-pcap-reader "
    "--user=<you>); with S3 files, the IAM policy iam/pcap-reader-policy.json"
)


def add_capture_command(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "capture",
        help="capture a pod, deployment, node or label selector into one pcapng (creates, waits, downloads, cleans up)",
        description="Creates a MirrorSession and a MirrorFilter for what you name, with the cluster's Ready "
        "MirrorTarget; shows progress; waits until the capture is over; downloads the merged pcapng; deletes "
        "what it created, on exit, Ctrl-C and SIGTERM alike. The first Ctrl-C ends the capture early and still "
        "downloads it; a second one quits at once. The capture agent itself runs as `trafficmirror agent`.",
    )
    p.add_argument("what", nargs="?", metavar="pod/NAME|deployment/NAME|node/NAME")
    p.add_argument("-l", "--selector", help="capture the pods matching this label selector (e.g. app=web)")
    p.add_argument("-n", "--namespace", help="namespace of the pods and the objects created (default: kubeconfig's)")
    p.add_argument(
        "--for", dest="duration", metavar="DURATION", help="capture this long (30s, 5m, 1h30m); default: until Ctrl-C"
    )
    p.add_argument(
        "-o", "--output", help="the merged pcapng (- for stdout: | wireshark -k -i -); default <session>.pcapng"
    )
    p.add_argument(
        "--filter",
        metavar="PROTO[:PORT[-PORT]],...",
        help="mirror only these, e.g. tcp:443,udp:53 (default: everything)",
    )
    p.add_argument("--target", help="the MirrorTarget to send to (needed when the namespace has several)")
    p.add_argument(
        "--pool", metavar="[KEY=]VALUE", help=f"a pool of MirrorTargets by label (default key {plan.POOL_LABEL})"
    )
    p.add_argument("--keep", action="store_true", help="leave the MirrorSession and MirrorFilter in place on exit")
    p.add_argument(
        "--agent-namespace",
        default=os.environ.get("TRAFFICMIRROR_NAMESPACE", "trafficmirror"),
        help="namespace of the capture agent pods, which hold files kept on the nodes (default trafficmirror)",
    )
    src = p.add_argument_group("where the files are, when the capture agent does not list them in the session's status")
    src.add_argument("--dir", help="the capture agent's --output-dir, mounted here")
    src.add_argument("--s3-bucket")
    src.add_argument("--s3-prefix", default="pcap")
    src.add_argument("--cluster", default=os.environ.get("TRAFFICMIRROR_CLUSTER", "default"))
    src.add_argument("--s3-endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL") or None)
    src.add_argument(
        "--s3-region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    )
    p.set_defaults(func=run)


def agent_flags(argv: list[str], agent_options: set[str], capture_options: set[str]) -> list[str]:
    """The capture agent's own flags given to ``capture`` (its command before it became ``agent``)."""
    if not argv or argv[0] != "capture":
        return []
    given = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")]
    return [a for a in given if a in agent_options and a not in capture_options]


def options_of(parser: argparse.ArgumentParser, command: str) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            sub = action.choices[command]
            return {o for a in sub._actions for o in a.option_strings if o.startswith("--")}
    return set()


class Interrupted(Exception):
    """A second Ctrl-C, or SIGTERM: stop at once, clean up, download nothing more."""


@dataclass
class Signals:
    """First Ctrl-C: end the capture early and still download it. Second Ctrl-C or SIGTERM: clean up now."""

    stop: threading.Event = field(default_factory=threading.Event)
    count: int = 0
    previous: dict[int, Any] = field(default_factory=dict)

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.count += 1
        if signum == signal.SIGINT and self.count == 1:
            self.stop.set()
            return
        raise Interrupted(signal.Signals(signum).name)


@dataclass
class Progress:
    out: TextIO
    last: str = ""
    last_packets: str = ""
    last_packets_at: float = 0.0

    def say(self, text: str) -> None:
        print(f"{PROG}: {text}", file=self.out, flush=True)

    def update(self, session: dict[str, Any], now: float) -> None:
        status = session.get("status") or {}
        phase = status.get("phase") or "Pending"
        parts = [phase]
        reason = next((c.get("reason") for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        if phase != "Ready" and reason and reason != phase:
            parts.append(f"({reason})")
        parts.append(sources_summary(status))
        line = " ".join(p for p in parts if p)
        if line != self.last:
            self.say(line)
            for skipped in status.get("skippedPods") or []:
                self.say(
                    f"  not mirrored: pod {skipped.get('namespace')}/{skipped.get('name')}: "
                    f"{skipped.get('reason')}: {skipped.get('message', '')}"
                )
            if phase == "Completed":
                cost = status.get("estimatedCost") or {}
                if cost:
                    self.say(f"  mirroring cost: {cost.get('eniHours')} ENI-hours, about {cost.get('usd')} USD")
                self.say("  waiting for the capture agents to close and list their files")
            self.last = line
        packets, size = packet_totals(status)
        left = time_left(status.get("stopAt"), dt.datetime.now(dt.UTC)) if phase != "Completed" else None
        nodes = ", ".join(sorted(status.get("captureNodes") or {})) or "no capture node reporting yet"
        remaining = f", {left} left" if left is not None else ""
        report = f"{packets} packets, {human_bytes(size)} ({nodes}){remaining}"
        changed = report.split(",")[0] != self.last_packets.split(",")[0] or left is not None
        if changed and report != self.last_packets and now - self.last_packets_at >= PACKET_REPORT_SECONDS:
            self.say(report)
            self.last_packets, self.last_packets_at = report, now


def sources_summary(status: dict[str, Any]) -> str:
    sources = status.get("sources")
    if sources is None:
        eni = status.get("sourceNetworkInterfaceId")
        return f"source {eni}" if eni else ""
    mirroring = [s for s in sources if s.get("state") == "Mirroring"]
    pods = sum(len(s.get("pods") or []) for s in sources)
    described = "; ".join(
        f"{s.get('networkInterfaceId')} on {s.get('nodeName')} ({s.get('state')})" for s in sources[:5]
    ) + ("; …" if len(sources) > 5 else "")
    return f"{len(sources)} source ENI(s), {len(mirroring)} mirroring, {pods} pod(s)" + (
        f": {described}" if described else ""
    )


def packet_totals(status: dict[str, Any]) -> tuple[int, int]:
    nodes = (status.get("captureNodes") or {}).values()
    return sum(int(n.get("packets") or 0) for n in nodes), sum(int(n.get("bytes") or 0) for n in nodes)


def time_left(stop_at: str | None, now: dt.datetime) -> str | None:
    if not stop_at:
        return None
    try:
        end = dt.datetime.fromisoformat(stop_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    return plan.format_duration(int((end - now).total_seconds())) if end > now else "0s"


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def capture_files(status: dict[str, Any]) -> list[tuple[str, str]]:
    """Where the capture agents put this session's closed files: (node, path on that node or s3:// URI)."""
    found: list[tuple[str, str]] = []
    for node_name, node in sorted((status.get("captureNodes") or {}).items()):
        for entry in node.get("files") or []:
            location = entry if isinstance(entry, str) else (entry or {}).get("uri") or (entry or {}).get("path")
            if location and (node_name, str(location)) not in found:
                found.append((node_name, str(location)))
    return found


def is_done(session: dict[str, Any]) -> bool:
    return (session.get("status") or {}).get("phase") == "Completed"


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Created:
    api: KubeApi
    namespace: str
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    objects: list[tuple[str, str]] = field(default_factory=list)  # (plural, name), in creation order
    attempted: list[str] = field(default_factory=list)  # plurals a create was sent for

    def create(self, plural: str, manifest: dict[str, Any]) -> dict[str, Any]:
        self.attempted.append(plural)
        made = self.api.request("POST", crd_path(self.namespace, plural), manifest)
        self.objects.append((plural, made["metadata"]["name"]))
        return made

    def find_unanswered(self) -> None:
        """Objects whose create was sent but whose answer never came (interrupted): found by this run's label."""
        for plural in self.attempted:
            listed = self.api.get(
                crd_path(self.namespace, plural), {"labelSelector": f"{plan.RUN_LABEL}={self.run_id}"}
            )
            for item in listed.get("items", []):
                if (plural, item["metadata"]["name"]) not in self.objects:
                    self.objects.append((plural, item["metadata"]["name"]))

    def delete_all(self, progress: Progress, wait: bool, interruptible: Signals) -> bool:
        """Delete in reverse order (the session before its filter); True when all are gone."""
        try:
            self.find_unanswered()
        except KubeError as error:
            progress.say(f"could not look for objects of this run (label {plan.RUN_LABEL}={self.run_id}): {error}")
        if not self.objects:
            return True
        for plural, name in reversed(self.objects):
            with contextlib.suppress(NotFound):
                try:
                    self.api.request("DELETE", crd_path(self.namespace, plural, name))
                except KubeError as error:
                    progress.say(f"could not delete {plural}/{name}: {error}")
        if not wait:
            return False
        deadline = time.monotonic() + DELETE_WAIT_SECONDS
        remaining = list(self.objects)
        try:
            while remaining and time.monotonic() < deadline:
                remaining = [(p, n) for p, n in remaining if _exists(self.api, self.namespace, p, n)]
                if remaining:
                    time.sleep(POLL_SECONDS)
        except Interrupted:
            pass
        if remaining:
            names = ", ".join(f"{p}/{n}" for p, n in remaining)
            progress.say(
                f"still deleting {names} (the operator removes them from AWS first): "
                f"kubectl get -n {self.namespace} {names.split(',')[0]}"
            )
            return False
        progress.say("deleted " + ", ".join(f"{p}/{n}" for p, n in self.objects) + " (and their AWS resources)")
        return True


def _exists(api: KubeApi, namespace: str, plural: str, name: str) -> bool:
    try:
        api.get(crd_path(namespace, plural, name))
    except NotFound:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    progress = Progress(sys.stderr)
    signals = Signals()
    signals.install()  # first: a signal from here on ends the run cleanly
    try:
        target = plan.parse_target(args.what, args.selector)
        duration, seconds = plan.parse_duration(args.duration) if args.duration else (None, None)
        matches = plan.parse_filter(args.filter)
        plan.filter_rules(matches)  # refuse a filter over AWS's budget before creating anything
    except plan.PlanError as error:
        signals.restore()
        progress.say(str(error))
        return 2
    try:
        api = KubeApi.connect()
    except Interrupted as why:
        signals.restore()
        progress.say(f"{why}: stopping; nothing was created")
        return 130 if str(why) == "SIGINT" else 143
    except Exception as error:  # kopf's login raises several kinds; the message is what matters
        signals.restore()
        progress.say(f"no Kubernetes credentials: {error}")
        return 1
    namespace = args.namespace or api.namespace
    created = Created(api, namespace)
    downloading = threading.Event()
    code = 1
    try:
        code = _capture(
            args, api, namespace, target, duration, seconds, matches, created, progress, signals, downloading
        )
    except plan.PlanError as error:
        progress.say(str(error))
        code = 1
    except Forbidden as error:
        # Pods are read (listed, exec'd into) only to fetch files kept on the capture nodes.
        hint = PCAP_ROLE_HINT if error.resource in ("pods", "pods/exec") and downloading.is_set() else CAPTURE_ROLE_HINT
        progress.say(f"permission denied: cannot {error.verb} {error.resource} ({error}); {hint}")
        code = 1
    except KubeError as error:
        progress.say(f"{error.verb} {error.resource}: {error}")
        code = 1
    except Interrupted as why:
        progress.say(f"{why}: stopping")
        code = 130 if str(why) == "SIGINT" else 143
    finally:
        try:
            if created.attempted and not args.keep:
                created.delete_all(progress, wait=True, interruptible=signals)
            elif created.objects:
                progress.say("kept " + ", ".join(f"{p}/{n}" for p, n in created.objects) + f" in namespace {namespace}")
        except Interrupted:
            progress.say("interrupted while deleting: the deletions are requested; the operator finishes them")
        finally:
            signals.restore()
    return code


def _capture(
    args: argparse.Namespace,
    api: KubeApi,
    namespace: str,
    target: plan.CaptureTarget,
    duration: str | None,
    seconds: int | None,
    matches: list[plan.PortMatch],
    created: Created,
    progress: Progress,
    signals: Signals,
    downloading: threading.Event,
) -> int:
    try:
        api.get(f"/apis/{plan.API_VERSION}")
    except NotFound:
        raise plan.PlanError(plan.NOT_INSTALLED) from None
    source = _source(api, namespace, target)
    targets = api.get(crd_path(namespace, "mirrortargets")).get("items", [])
    choice = plan.choose_target(targets, namespace, args.target, args.pool)
    what = plan.describe(target, args.selector)
    prefix = plan.object_prefix(target)
    if signals.stop.is_set():
        progress.say("Ctrl-C before the capture started: nothing was created")
        return 130
    mirror_filter = created.create("mirrorfilters", plan.build_filter(prefix, namespace, matches, what, created.run_id))
    session = created.create(
        "mirrorsessions",
        plan.build_session(
            prefix, namespace, source, choice, mirror_filter["metadata"]["name"], duration, what, created.run_id
        ),
    )
    name = session["metadata"]["name"]
    filtered = f"filter {args.filter}" if args.filter else "everything"
    length = f"for {duration}" if duration else "until Ctrl-C"
    progress.say(
        f"capturing {what} in {namespace} ({filtered}, {length}) to {choice.description}: mirrorsession/{name}"
    )
    started = time.monotonic()
    session = _wait(api, namespace, name, seconds, started, progress, signals)
    if (session.get("status") or {}).get("phase") == "Failed":
        status = session.get("status") or {}
        reason: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        progress.say(f"the session failed: {reason.get('reason')}: {reason.get('message')}")
        return 1
    downloading.set()
    return _download(args, api, namespace, name, session, progress)


def _source(api: KubeApi, namespace: str, target: plan.CaptureTarget) -> dict[str, Any]:
    if target.kind == "pod":
        try:
            pod = api.get(f"/api/v1/namespaces/{urllib.parse.quote(namespace)}/pods/{target.name}")
        except NotFound:
            raise plan.PlanError(f"no pod {target.name!r} in namespace {namespace} (-n to choose another)") from None
        return plan.session_source(target, pod=pod)
    if target.kind == "deployment":
        try:
            deployment = api.get(f"/apis/apps/v1/namespaces/{urllib.parse.quote(namespace)}/deployments/{target.name}")
        except NotFound:
            raise plan.PlanError(
                f"no deployment {target.name!r} in namespace {namespace} (-n to choose another)"
            ) from None
        return plan.session_source(target, deployment=deployment)
    if target.kind == "node":
        try:
            api.get(f"/api/v1/nodes/{target.name}")
        except NotFound:
            raise plan.PlanError(f"no node {target.name!r} in this cluster") from None
        except Forbidden:
            pass  # reading nodes is not part of the edit role; the session's status will say if it is wrong
    return plan.session_source(target)


def _wait(
    api: KubeApi,
    namespace: str,
    name: str,
    seconds: int | None,
    started: float,
    progress: Progress,
    signals: Signals,
) -> dict[str, Any]:
    """Until the session is Completed with its files listed (or Failed); the first Ctrl-C ends it early."""
    path = crd_path(namespace, "mirrorsessions", name)
    completed_at: float | None = None
    stop_requested_at: float | None = None
    failed_since: float | None = None
    while True:
        session = api.get(path)
        now = time.monotonic()
        progress.update(session, now)
        status = session.get("status") or {}
        if status.get("phase") == "Failed":
            failed_since = failed_since if failed_since is not None else now
            if now - failed_since > FAILED_GRACE_SECONDS:
                return session
        else:
            failed_since = None
        if is_done(session):
            completed_at = completed_at or now
            if _files_settled(status) or now - completed_at > FILES_GRACE_SECONDS:
                return session
        elif signals.stop.is_set() and stop_requested_at is None:
            stop_requested_at = now
            elapsed = plan.format_duration(int(now - started))
            progress.say(f"Ctrl-C: ending the capture now (after {elapsed}); Ctrl-C again to quit without the file")
            try:
                api.request("PATCH", path, {"spec": {"duration": elapsed}}, content_type="application/merge-patch+json")
            except KubeError as error:
                progress.say(f"could not end the capture early ({error}); quitting without the file")
                raise Interrupted("SIGINT") from error
        deadline_passed = seconds is not None and now - started > seconds + COMPLETION_GRACE_SECONDS
        stop_timed_out = stop_requested_at is not None and now - stop_requested_at > COMPLETION_GRACE_SECONDS
        if completed_at is None and (deadline_passed or stop_timed_out):
            progress.say(
                "the session was not marked Completed in time (is the operator running, and does it know "
                "spec.duration?); downloading what the capture agents listed so far"
            )
            return session
        signals.stop.wait(POLL_SECONDS) if not signals.stop.is_set() else time.sleep(POLL_SECONDS)


def _files_settled(status: dict[str, Any]) -> bool:
    """Every capture node that wrote packets has listed its files."""
    nodes = (status.get("captureNodes") or {}).values()
    return all(n.get("files") for n in nodes if int(n.get("packets") or 0) > 0)


def _download(
    args: argparse.Namespace, api: KubeApi, namespace: str, name: str, session: dict[str, Any], progress: Progress
) -> int:
    from trafficmirror.capture import fetch, pcapng

    status = session.get("status") or {}
    packets, _ = packet_totals(status)
    locations = capture_files(status)

    def listing() -> tuple[Any, list[Any]]:
        return _file_source(args, api, namespace, name, locations)

    source, refs = _await_shipped(listing, locations, args.dir, progress) if args.dir else listing()
    output = args.output or f"{name}.pcapng"
    if not refs:
        if packets:
            progress.say(f"{packets} packets were captured but no file of {namespace}/{name} could be found")
            return 1
        progress.say("no packets were mirrored: nothing to download (is the workload sending or receiving?)")
        return 0
    try:
        stats = fetch._write(source, fetch.select(refs, None, None), output, None, None)
    except BrokenPipeError:
        # The reader (Wireshark) went away: not an error of ours. stdout goes to /dev/null so that the
        # interpreter's final flush does not complain again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        progress.say("the reader of stdout went away; the capture is still deleted")
        return 0
    except (OSError, pcapng.FormatError) as error:
        progress.say(f"writing {output}: {error}")
        return 1
    where = "stdout" if output == "-" else output
    progress.say(f"{where}: {stats.packets} packets from {len(refs)} file(s)")
    return 0


def _plain_name(location: str) -> str:
    base = location.rstrip("/").rsplit("/", 1)[-1]
    return base.removesuffix(".gz")


Listing = Callable[[], tuple[Any, list[Any]]]


def _await_shipped(
    relist: Listing, locations: list[tuple[str, str]], directory: str, progress: Progress
) -> tuple[Any, list[Any]]:
    """With --dir: an agent lists a Completed session's files as soon as it has closed them, some still in
    its spool; the directory has them once they are shipped, moments later. Wait (up to FILES_GRACE_SECONDS)
    until every listed file is there (compressed or not); a file listed by a node that ships elsewhere is
    waited for that long, then left out."""
    source, refs = relist()
    listed = {_plain_name(loc) for _node, loc in locations}
    deadline = time.monotonic() + FILES_GRACE_SECONDS
    said = False
    while (missing := listed - {_plain_name(r.name) for r in refs}) and time.monotonic() < deadline:
        if not said:
            progress.say(f"waiting for {len(missing)} listed file(s) to be shipped to {directory}")
            said = True
        time.sleep(POLL_SECONDS / 4)
        source, refs = relist()
    return source, refs


def _file_source(
    args: argparse.Namespace, api: KubeApi, namespace: str, name: str, locations: list[tuple[str, str]]
) -> tuple[Any, list[Any]]:
    from trafficmirror.capture import fetch

    if args.dir:
        local = fetch.DirSource(args.dir)
        return local, local.list(namespace, name)
    s3 = [urllib.parse.urlparse(u) for _node, u in locations if u.startswith("s3://")]
    if s3:
        bucket, key = s3[0].netloc, s3[0].path.lstrip("/")
        # Keys are <prefix>/<cluster>/<namespace>/<session>/<file>: the listing under them finds every file.
        base = key.rsplit("/", 3)[0]
        prefix, _, cluster = base.rpartition("/")
        remote = fetch.S3Source(bucket, prefix, cluster, args.s3_endpoint_url, args.s3_region)
        return remote, remote.list(namespace, name)
    if args.s3_bucket:
        remote = fetch.S3Source(args.s3_bucket, args.s3_prefix, args.cluster, args.s3_endpoint_url, args.s3_region)
        return remote, remote.list(namespace, name)
    if locations:
        from trafficmirror.kubecapture.podfiles import AgentPodFiles

        pods = AgentPodFiles(api, args.agent_namespace)
        return pods, pods.refs(namespace, name, locations)
    return None, []
