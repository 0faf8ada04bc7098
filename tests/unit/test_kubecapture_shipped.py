"""`trafficmirror capture --dir`: a Completed session's status lists the agent's files as soon as they are
closed, some still in the agent's spool; the command waits until the directory has every listed file
(shipped moments later, perhaps compressed) instead of finding none and failing. On a real directory, the
shipping done by a thread after a delay."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest

from trafficmirror.capture import fetch
from trafficmirror.kubecapture import command
from trafficmirror.kubecapture.command import Progress

NAMES = ["node-a-20261130T100000.000Z-000001.pcapng", "node-a-20261130T100500.000Z-000003.pcapng"]


def _status(spool: Path) -> dict[str, object]:
    files = [str(spool / "ns" / "web" / n) for n in NAMES]
    return {"captureNodes": {"node-a": {"packets": 20, "files": files}}}


def _ship(out: Path, name: str) -> None:
    """As the agent ships into a directory: written aside, then renamed into place."""
    d = out / "ns" / "web"
    d.mkdir(parents=True, exist_ok=True)
    aside = out.parent / name
    aside.write_bytes(b"x")
    os.rename(aside, d / name)


def _await(out: Path, status: dict[str, object], progress: Progress) -> list[fetch.FileRef]:
    source = fetch.DirSource(str(out))

    def relist() -> tuple[fetch.DirSource, list[fetch.FileRef]]:
        return source, source.list("ns", "web")

    locations = command.capture_files(status)
    _, refs = command._await_shipped(relist, locations, str(out), progress)
    return refs


@pytest.mark.parametrize("compressed", [False, True])
def test_the_command_waits_for_every_listed_file_to_be_shipped(tmp_path: Path, compressed: bool) -> None:
    out = tmp_path / "out"
    _ship(out, NAMES[0])  # one already shipped, the other still in the spool
    later = NAMES[1] + (".gz" if compressed else "")
    shipper = threading.Timer(0.8, _ship, (out, later))
    shipper.start()
    said = io.StringIO()
    started = time.monotonic()
    try:
        refs = _await(out, _status(tmp_path / "spool"), Progress(said))
    finally:
        shipper.join()
    assert sorted(r.name for r in refs) == sorted([NAMES[0], later])
    assert time.monotonic() - started < command.FILES_GRACE_SECONDS
    assert "waiting for 1 listed file(s)" in said.getvalue()


def test_a_listed_file_that_never_arrives_is_waited_for_the_grace_then_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(command, "FILES_GRACE_SECONDS", 1.0)
    out = tmp_path / "out"
    _ship(out, NAMES[0])
    started = time.monotonic()
    refs = _await(out, _status(tmp_path / "spool"), Progress(io.StringIO()))
    assert [r.name for r in refs] == [NAMES[0]]
    assert time.monotonic() - started >= 1.0


def test_nothing_is_waited_for_when_every_listed_file_is_there(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for n in NAMES:
        _ship(out, n)
    said = io.StringIO()
    refs = _await(out, _status(tmp_path / "spool"), Progress(said))
    assert len(refs) == 2 and said.getvalue() == ""
