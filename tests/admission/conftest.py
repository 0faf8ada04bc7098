"""The admission tests' namespaces: no operator and no pod runs here, so nothing holds a deleted one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import create_test_namespace
from trafficmirror_testbed.kube import ControlPlane


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test whose deletion is not waited for: the objects in it carry no finalizer,
    and waiting for the namespace controller cost about 5 s a test (over 300 tests)."""
    name = create_test_namespace(control_plane, request)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
