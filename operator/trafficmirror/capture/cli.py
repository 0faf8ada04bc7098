"""``trafficmirror agent`` (the capture agent) and ``trafficmirror pcap ls|get``.

``add_capture_commands(subparsers)`` is what the top-level CLI wires in; until then
``python -m trafficmirror.capture ...`` runs the same parser.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import Any

from trafficmirror.capture import vxlan
from trafficmirror.capture.writer import UnknownVniPolicy

_UNITS = {
    "": 1,
    "k": 1 << 10,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 10**6,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 10**9,
    "gib": 1 << 30,
}


def parse_size(text: str) -> int:
    """``64MiB``, ``500k``, ``1000000`` -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 64MiB, 500k, 1000000)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_duration(text: str) -> int:
    """``300``, ``5m``, ``1h`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (e.g. 300, 5m, 1h)")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def add_capture_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cap = subparsers.add_parser(
        "agent", help="run the capture agent (VXLAN mirror traffic -> pcapng); the DaemonSet's command"
    )
    g = cap.add_argument_group("receive")
    g.add_argument("--address", default="0.0.0.0", help="address to bind (default all)")
    g.add_argument("--port", type=int, default=vxlan.VXLAN_PORT)
    g.add_argument(
        "--rcvbuf",
        type=parse_size,
        default=64 << 20,
        help="receive buffer to ask for (capped by net.core.rmem_max; the granted size is logged and exported)",
    )
    g.add_argument("--workers", type=int, default=1, help="worker processes (SO_REUSEPORT, steered by VNI)")
    g.add_argument(
        "--kernel-vni-filter",
        action="store_true",
        help="drop datagrams of VNIs no known session has in the kernel (classic BPF)",
    )
    g.add_argument("--no-accelerate", action="store_true", help="use the Python receive loop")
    g = cap.add_argument_group("sessions (VNI -> namespace/name)")
    g.add_argument(
        "--session",
        action="append",
        default=[],
        metavar="VNI=NS/NAME[@ENI][:IP,...]",
        help="a session; with :IP,... its datagrams are accepted only from those outer source addresses",
    )
    g.add_argument("--sessions-file", help="YAML/JSON list of {vni, namespace, name, sourceEni} or MirrorSessions")
    g.add_argument("--kube", action="store_true", help="watch MirrorSessions (read-only) on the apiserver")
    g.add_argument("--kube-server", help="apiserver URL (default: in-cluster)")
    g.add_argument("--kube-token-file")
    g.add_argument("--kube-ca-file")
    g.add_argument("--kube-namespace", help="watch one namespace only")
    g.add_argument("--kube-insecure", action="store_true")
    g.add_argument(
        "--status-interval",
        type=float,
        default=30.0,
        help="with --kube: seconds between this node's reports (packets, drops by layer, Lossy) into each "
        "MirrorSession's status.captureNodes; 0 disables",
    )
    g.add_argument(
        "--unknown-vni",
        choices=["write", "drop"],
        default=None,
        help="datagrams of VNIs no session claims: a per-VNI file (bounded by the two options below), or only "
        "counted. Default: drop with --kube (the watch knows every session, so an unknown VNI is a stray or a "
        "flood), write otherwise",
    )
    g.add_argument(
        "--unknown-vni-max-open",
        type=int,
        default=UnknownVniPolicy.max_open,
        help="unknown-VNI files open at once per worker; the least recently written is closed to make room",
    )
    g.add_argument(
        "--unknown-vni-new-per-second",
        type=float,
        default=UnknownVniPolicy.new_per_second,
        help="new unknown-VNI files per second per worker; the packets of the rest are counted as refused",
    )
    g.add_argument("--keep-malformed", action="store_true", help="keep malformed datagrams in a separate file")
    g.add_argument(
        "--no-source-check",
        dest="check_sources",
        action="store_false",
        help="accept a known VNI's datagrams from any outer source, not only from its session's source addresses "
        "(only where a NAT or tunnel between the sources and this node rewrites them)",
    )
    g = cap.add_argument_group("files")
    g.add_argument("--work-dir", default="/var/lib/trafficmirror", help="open files and the shipping spool")
    g.add_argument("--format", choices=["pcapng", "pcap"], default="pcapng")
    g.add_argument("--snaplen", type=int, default=0, help="bytes kept per frame (0: all)")
    g.add_argument("--rotate-size", type=parse_size, default=64 << 20, help="rotate at this size (0: never)")
    g.add_argument(
        "--rotate-interval",
        type=parse_duration,
        default=300,
        help="rotate at wall-clock multiples of this (0: never)",
    )
    g.add_argument("--flush-interval", type=float, default=1.0)
    g.add_argument("--no-fsync", action="store_true")
    g.add_argument("--gzip", action="store_true", help="compress closed files")
    g.add_argument("--node", default=_env("NODE_NAME") or os.uname().nodename)
    g.add_argument("--cluster", default=_env("TRAFFICMIRROR_CLUSTER", "default"))
    g = cap.add_argument_group("shipping")
    g.add_argument("--output-dir", help="ship closed files to this directory (PVC / hostPath)")
    g.add_argument("--retain-files", type=int, help="keep at most this many files per session in --output-dir")
    g.add_argument("--retain-bytes", type=parse_size, help="keep at most this many bytes per session")
    g.add_argument("--s3-bucket", help="ship closed files to this bucket")
    g.add_argument("--s3-prefix", default="pcap")
    g.add_argument("--s3-sse", choices=["", "AES256", "aws:kms"], default="", help="server-side encryption")
    g.add_argument("--s3-kms-key-id", default="")
    g.add_argument("--s3-region", default=_env("AWS_REGION") or _env("AWS_DEFAULT_REGION") or None)
    g.add_argument("--s3-endpoint-url", default=_env("AWS_ENDPOINT_URL") or None)
    g.add_argument("--s3-multipart-threshold", type=parse_size, default=16 << 20)
    g = cap.add_argument_group("operations")
    g.add_argument("--metrics-address", default="0.0.0.0")
    g.add_argument("--metrics-port", type=int, default=9090, help="-1 disables; 0 picks a free port")
    g.add_argument("--shutdown-timeout", type=float, default=25.0, help="seconds to flush and ship on SIGTERM")
    g.add_argument("--log-level", default="INFO")
    cap.set_defaults(func=run_capture)

    pcap = subparsers.add_parser("pcap", help="list and download captured sessions")
    psub = pcap.add_subparsers(dest="pcap_command", required=True)
    for name, helptext in (
        ("ls", "list sessions, or one session's files"),
        ("get", "download one session's files merged in time order"),
    ):
        p = psub.add_parser(name, help=helptext)
        p.add_argument("session", nargs="?" if name == "ls" else None, metavar="NAMESPACE/SESSION")
        src = p.add_argument_group("source (one of)")
        src.add_argument("--dir", help="the agent's --output-dir")
        src.add_argument("--s3-bucket")
        src.add_argument("--s3-prefix", default="pcap")
        src.add_argument("--cluster", default=_env("TRAFFICMIRROR_CLUSTER", "default"))
        src.add_argument("--s3-endpoint-url", default=_env("AWS_ENDPOINT_URL") or None)
        src.add_argument("--s3-region", default=_env("AWS_REGION") or _env("AWS_DEFAULT_REGION") or None)
        p.add_argument(
            "--pod",
            metavar="NAMESPACE/POD",
            help="a podSelector session with files perPod: only this pod's files (default: all pods, merged)",
        )
        p.add_argument("--since", help="ISO time or epoch seconds")
        p.add_argument("--until", help="ISO time or epoch seconds")
        if name == "get":
            p.add_argument("-o", "--output", help="output file (default <namespace>-<session>.pcapng)")
        p.set_defaults(func=run_pcap)


def run_capture(args: argparse.Namespace) -> int:
    from trafficmirror.capture import agent, sessions
    from trafficmirror.capture.writer import WriterConfig

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
    )
    if not args.output_dir and not args.s3_bucket:
        print("trafficmirror agent: give --output-dir and/or --s3-bucket", file=sys.stderr)
        return 2
    static = [sessions.parse_mapping(m) for m in args.session]
    if args.sessions_file:
        static += sessions.load_file(args.sessions_file)
    kube = _prefixed(args, "kube_", ("server", "token_file", "ca_file", "namespace", "insecure")) if args.kube else None
    s3_keys = ("bucket", "prefix", "sse", "kms_key_id", "region", "endpoint_url", "multipart_threshold")
    s3 = _prefixed(args, "s3_", s3_keys) if args.s3_bucket else None
    wcfg = WriterConfig(
        work_dir=args.work_dir,
        node=args.node,
        cluster=args.cluster,
        fmt=args.format,
        snaplen=args.snaplen,
        rotate_bytes=args.rotate_size or None,
        rotate_seconds=args.rotate_interval or None,
        flush_interval_s=args.flush_interval,
        fsync=not args.no_fsync,
    )
    cfg = agent.AgentConfig(
        writer=wcfg,
        address=args.address,
        port=args.port,
        rcvbuf=args.rcvbuf,
        workers=max(1, args.workers),
        sessions=static,
        kube=kube,
        kernel_vni_filter=args.kernel_vni_filter,
        unknown=UnknownVniPolicy(
            write=(args.unknown_vni or ("drop" if args.kube else "write")) == "write",
            max_open=args.unknown_vni_max_open,
            new_per_second=args.unknown_vni_new_per_second,
        ),
        keep_malformed=args.keep_malformed,
        check_sources=args.check_sources,
        output_dir=args.output_dir,
        retain_files=args.retain_files,
        retain_bytes=args.retain_bytes,
        gzip=args.gzip,
        s3=s3,
        metrics_address=args.metrics_address,
        metrics_port=args.metrics_port,
        shutdown_timeout_s=args.shutdown_timeout,
        accelerate=not args.no_accelerate,
        status_interval_s=args.status_interval,
    )
    return agent.run(cfg)


def _prefixed(args: argparse.Namespace, prefix: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """The options ``--<prefix><key>`` as keyword arguments ``key``."""
    return {k: getattr(args, prefix + k) for k in keys}


def run_pcap(args: argparse.Namespace) -> int:
    from trafficmirror.capture import fetch

    return fetch.main(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trafficmirror")
    sub = parser.add_subparsers(dest="command", required=True)
    add_capture_commands(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))
