"""`trafficmirror`: the operator, the capture agent, one-command captures and the pcap tools, in one command."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each busy thread its own malloc arena and keeps their freed memory: with the
    reconcile threads that multiplies the operator's RSS. Two arenas, as MALLOC_ARENA_MAX=2 would."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to limit
        return


def _run_operator(args: argparse.Namespace) -> int:
    # Imported here so that `trafficmirror agent` never loads kopf.
    import asyncio

    import kopf

    import trafficmirror.handlers  # noqa: F401  (registers the handlers)

    _limit_malloc_arenas()
    if args.usd_per_eni_hour is not None:  # read with the other settings (OperatorConfig) at startup
        os.environ["TRAFFICMIRROR_USD_PER_ENI_HOUR"] = str(args.usd_per_eni_hour)

    # JSON lines by default (one object per record, with the resource's namespace/name): what log
    # pipelines index; `--log-format full` for reading by eye.
    log_format = kopf.LogFormat[args.log_format.upper()]
    # Text lines name their object ("[namespace/name]"); JSON carries it under "object".
    kopf.configure(log_format=log_format, log_prefix=log_format is not kopf.LogFormat.JSON, log_refkey="object")
    logging.getLogger().setLevel(args.log_level)
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace or [],
            liveness_endpoint=args.liveness,
            peering_name=None if args.standalone else args.peering,
            standalone=args.standalone,
        )
    )
    return 0


def _price(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"a price per ENI-hour is a number of USD, 0 or more, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trafficmirror", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    operator = commands.add_parser("operator", help="run the operator (kopf) against the current kubeconfig")
    operator.add_argument(
        "--namespace",
        action="append",
        help="watch only this namespace (repeatable); cluster-wide when omitted",
    )
    operator.add_argument("--liveness", default="http://0.0.0.0:8081/healthz", help="liveness endpoint URL")
    operator.add_argument("--peering", default="trafficmirror", help="kopf peering object: a second instance pauses")
    operator.add_argument("--standalone", action="store_true", help="no peering (development only)")
    operator.add_argument("--log-level", default="INFO")
    operator.add_argument("--log-format", choices=["json", "full", "plain"], default="json")
    operator.add_argument(
        "--usd-per-eni-hour",
        type=_price,
        help="price of mirroring per ENI-hour for status.estimatedCost (TRAFFICMIRROR_USD_PER_ENI_HOUR); "
        "AWS's published price when omitted",
    )
    operator.set_defaults(func=_run_operator)
    from trafficmirror.doctor import add_doctor_command

    add_doctor_command(commands)
    try:
        from trafficmirror.capture.cli import add_capture_commands
    except ImportError:  # the capture package is optional in a minimal install
        pass
    else:
        add_capture_commands(commands)
    from trafficmirror.kubecapture.command import add_capture_command

    add_capture_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    from trafficmirror.kubecapture.command import agent_flags, options_of

    moved = agent_flags(argv, options_of(parser, "agent"), options_of(parser, "capture"))
    if moved:
        print(
            f"trafficmirror capture: {', '.join(moved)} {'is an option' if len(moved) == 1 else 'are options'} "
            "of the capture agent, which is now "
            "`trafficmirror agent` (e.g. trafficmirror agent " + " ".join(argv[1:]) + "). "
            "`trafficmirror capture` captures a workload: trafficmirror capture pod/<name> --for 5m -o file.pcapng",
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
