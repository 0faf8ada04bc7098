"""One `trafficmirror` command serves the operator, the capture agent and the pcap tools."""

from __future__ import annotations

import pytest

from trafficmirror.cli import build_parser


@pytest.mark.parametrize(
    "argv",
    [
        ["operator", "--namespace", "shop"],
        ["agent", "--port", "4789", "--session", "12388352=shop/web"],
        ["pcap", "ls", "--dir", "/captures"],
        ["pcap", "get", "shop/web", "--dir", "/captures"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_every_subcommand_reaches_its_handler(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert callable(args.func)


@pytest.mark.parametrize(
    "argv",
    [
        ["capture", "--port", "4789", "--output-dir", "/captures"],
        ["capture", "--kube", "--s3-bucket=pcaps"],
        ["capture", "--node", "node-a", "--work-dir", "/var/lib/trafficmirror"],
        ["capture", "--session", "12388352=shop/web", "--output-dir=/captures"],
    ],
    ids=lambda argv: " ".join(argv[1:3]),
)
def test_the_agents_old_flags_on_capture_exit_2_naming_trafficmirror_agent(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from trafficmirror.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "trafficmirror agent" in err and argv[1].split("=")[0] in err
    # The same flags are accepted by the agent's own command.
    assert callable(build_parser().parse_args(["agent", *argv[1:]]).func)


def test_captures_own_flags_are_not_taken_for_the_agents() -> None:
    from trafficmirror.cli import build_parser as parser_of
    from trafficmirror.kubecapture.command import agent_flags, options_of

    parser = parser_of()
    argv = ["capture", "pod/web", "-n", "shop", "--for", "5m", "-o", "-", "--filter", "tcp:443", "--s3-bucket", "b"]
    assert agent_flags(argv, options_of(parser, "agent"), options_of(parser, "capture")) == []
    assert parser.parse_args(argv).func.__module__ == "trafficmirror.kubecapture.command"
