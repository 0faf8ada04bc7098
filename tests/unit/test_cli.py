"""One `trafficmirror` command serves the operator, the capture agent and the pcap tools."""

from __future__ import annotations

import pytest

from trafficmirror.cli import build_parser


@pytest.mark.parametrize(
    "argv",
    [
        ["operator", "--namespace", "shop"],
        ["capture", "--port", "4789", "--session", "12388352=shop/web"],
        ["pcap", "ls", "--dir", "/captures"],
        ["pcap", "get", "shop/web", "--dir", "/captures"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_every_subcommand_reaches_its_handler(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert callable(args.func)
