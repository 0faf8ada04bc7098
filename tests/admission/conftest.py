"""Fixtures of the admission tests: a namespace whose name is unique per parametrized test."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import pytest

from trafficmirror_testbed.kube import ControlPlane


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test.

    Overrides the suite-wide fixture, which keeps only the first 40 characters of the test name:
    every case of a parametrized test here shares those, and a namespace never finishes deleting
    without a controller manager, so the names would collide. A digest of the node ID keeps them apart.
    """
    readable = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:45].strip("-")
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:10]
    name = f"adm-{readable}-{digest}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
