"""The agent's pure decisions: rotation boundaries, names, retention, S3 keys, backoff, mappings."""

from __future__ import annotations

import argparse

import pytest

from trafficmirror.capture.cli import parse_duration, parse_size
from trafficmirror.capture.fetch import FileRef, select, start_of
from trafficmirror.capture.sessions import Session, build_map, from_object, parse_mapping, source_checks
from trafficmirror.capture.ship import backoff_s, retention_victims, s3_key
from trafficmirror.capture.writer import file_basename, format_start, next_boundary

S = 1_000_000_000
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("t", "interval", "expected"),
    [
        (T0, 300, T0 + 300 * S),  # exactly on a boundary: the next one
        (T0 + 1, 300, T0 + 300 * S),
        (T0 + 299 * S + S - 1, 300, T0 + 300 * S),
        (T0 + 3601 * S, 3600, T0 + 7200 * S),
        (T0 + 7 * S + 5, 1, T0 + 8 * S),
    ],
)
def test_next_boundary_is_wall_clock_aligned(t: int, interval: int, expected: int) -> None:
    assert next_boundary(t, interval) == expected


def test_names_sort_by_time_and_carry_node_and_sequence() -> None:
    assert format_start(T0 + 123_456_789) == "20260101T000000.123Z"
    assert (
        file_basename("ip-10-0-0-1.ec2.internal", T0, 7, "pcapng")
        == "ip-10-0-0-1.ec2.internal-20260101T000000.000Z-000007.pcapng"
    )
    assert file_basename("bad/node name", T0, 1, "pcap").startswith("bad_node_name-")


def _f(i: int, size: int = 100, node: str = "n") -> tuple[str, int]:
    return (f"{node}-20260101T0000{i:02d}.000Z-{i:06d}.pcapng", size)


@pytest.mark.parametrize(
    ("files", "max_files", "max_bytes", "victims"),
    [
        ([_f(1), _f(2), _f(3)], 3, None, []),
        ([_f(3), _f(1), _f(2), _f(4)], 2, None, [_f(1)[0], _f(2)[0]]),  # oldest first, any listing order
        ([_f(1), _f(2), _f(3)], None, 250, [_f(1)[0]]),
        ([_f(1), _f(2, 1000)], None, 500, [_f(1)[0]]),  # the newest stays even alone over the limit
        ([_f(1, 1000)], 1, 10, []),
        ([_f(1, node="b"), _f(2, node="a")], 1, None, [_f(1, node="b")[0]]),  # by time, not node name
        ([], 1, 1, []),
    ],
)
def test_retention(
    files: list[tuple[str, int]], max_files: int | None, max_bytes: int | None, victims: list[str]
) -> None:
    assert retention_victims(files, max_files, max_bytes) == victims


def test_s3_key_layout() -> None:
    meta = {
        "cluster": "prod",
        "namespace": "shop",
        "session": "web",
        "start": T0 + 13 * 3600 * S,
        "file": "node-20260101T130000.000Z-000001.pcapng.gz",
    }
    assert s3_key("pcap/", meta) == "pcap/prod/shop/web/2026/01/01/13/node-20260101T130000.000Z-000001.pcapng.gz"
    assert s3_key("", meta).startswith("prod/shop/web/2026/")


@pytest.mark.parametrize(("failures", "expected"), [(1, 1.0), (2, 2.0), (5, 16.0), (7, 60.0), (50, 60.0)])
def test_backoff(failures: int, expected: float) -> None:
    assert backoff_s(failures) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12388352=default/web", Session("default", "web", 12388352)),
        (" 7=a/b@eni-0abc ", Session("a", "b", 7, "eni-0abc")),
        ("7=a/b@eni-0abc:10.0.0.9,10.0.0.1", Session("a", "b", 7, "eni-0abc", ("10.0.0.1", "10.0.0.9"))),
        ("7=a/b:10.0.0.9", Session("a", "b", 7, "", ("10.0.0.9",))),
    ],
)
def test_parse_mapping(text: str, expected: Session) -> None:
    assert parse_mapping(text) == expected


@pytest.mark.parametrize("text", ["x=a/b", "7=ab", "16777216=a/b", "7=/b"])
def test_parse_mapping_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_mapping(text)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (
            {
                "metadata": {"namespace": "n", "name": "s"},
                "status": {"virtualNetworkId": 5, "sourceNetworkInterfaceId": "eni-1"},
            },
            Session("n", "s", 5, "eni-1"),
        ),
        (
            {
                "metadata": {"namespace": "n", "name": "s"},
                "status": {"virtualNetworkId": 5, "sourceAddresses": ["10.0.0.7", 3, ""]},
            },
            Session("n", "s", 5, "", ("10.0.0.7",)),
        ),
        ({"metadata": {"namespace": "n", "name": "s"}, "status": {}}, None),  # not reconciled yet
        ({"metadata": {"namespace": "n", "name": "s"}}, None),
        ({"metadata": {"namespace": "n", "name": "s"}, "status": {"virtualNetworkId": 1 << 24}}, None),
    ],
)
def test_from_object(obj: dict[str, object], expected: Session | None) -> None:
    assert from_object(obj) == expected


def test_only_sessions_that_know_their_sources_are_checked() -> None:
    sessions = [Session("a", "s", 1, "", ("10.0.0.1",)), Session("a", "t", 2), Session("a", "u", 3, "", ("10.0.0.2",))]
    assert source_checks(sessions) == {1: {"10.0.0.1"}, 3: {"10.0.0.2"}}
    assert Session.from_json(sessions[0].to_json()) == sessions[0]


def test_build_map_first_by_name_wins_a_vni_conflict() -> None:
    m = build_map([Session("z", "s", 1), Session("a", "s", 1), Session("a", "t", 2)])
    assert m == {1: Session("a", "s", 1), 2: Session("a", "t", 2)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("64MiB", 64 << 20), ("500k", 500 << 10), ("1000", 1000), ("1.5m", 3 << 19), ("2GB", 2 * 10**9)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(("text", "expected"), [("300", 300), ("5m", 300), ("1h", 3600), ("0", 0)])
def test_parse_duration(text: str, expected: int) -> None:
    assert parse_duration(text) == expected


def test_bad_size_is_an_argparse_error() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size("lots")


def _ref(node: str, sec: int) -> FileRef:
    name = f"{node}-20260101T0000{sec:02d}.000Z-000001.pcapng"
    return FileRef("n", "s", name, 1, start_of(name), name)


def test_fetch_select_keeps_the_file_that_covers_since() -> None:
    files = [_ref("a", 0), _ref("a", 10), _ref("a", 20), _ref("b", 5)]
    got = select(files, since=T0 + 12 * S, until=T0 + 15 * S)
    assert [f.name for f in got] == [_ref("b", 5).name, _ref("a", 10).name]
    assert start_of(_ref("a", 10).name) == T0 + 10 * S


def test_fetch_select_allows_for_the_millisecond_names() -> None:
    # The second file's name says ...00.000Z, but it may start up to 1 ms later, so the first
    # file may still hold packets after a --since inside that millisecond.
    a = FileRef("n", "s", "a-20260101T000000.000Z-000001.pcapng", 1, T0, "x")
    b = FileRef("n", "s", "a-20260101T000000.000Z-000002.pcapng", 1, T0, "y")
    assert select([a, b], since=T0 + 500_000, until=None) == [a, b]
    assert select([a, b], since=T0 + 1_000_000, until=None) == [b]
