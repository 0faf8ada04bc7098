"""The admission tests run no operator and no pod: nothing holds their namespaces once deleted."""

from __future__ import annotations

import pytest


@pytest.fixture
def namespace(bare_namespace: str) -> str:
    return bare_namespace
