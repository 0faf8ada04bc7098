"""Fixtures for the capture agent's real-packet tests (root: network namespaces, tc, vxlan)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from netbed import NOBODY, REPO, Bed


@pytest.fixture
def bed() -> Iterator[Bed]:
    b = Bed().up()
    try:
        yield b
    finally:
        b.down()


@pytest.fixture
def work() -> Iterator[Path]:
    """A directory the unprivileged agent can write (pytest's tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="tm-capture-", dir="/tmp"))
    os.chmod(d, 0o755)
    for sub in ("", "out", "work"):
        (d / sub).mkdir(exist_ok=True)
        os.chown(d / sub, NOBODY, NOBODY)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def vxsend(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The C sendmmsg VXLAN sender shared with the benchmark, compiled once per session."""
    out = tmp_path_factory.mktemp("bin") / "vxsend"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(out), str(REPO / "bench/capture/vxsend.c")], check=True)
    return out
