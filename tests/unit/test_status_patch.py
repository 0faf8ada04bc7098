"""Status is written with a JSON merge patch: a map that lost keys must send them as null, or they stay."""

from __future__ import annotations

from typing import Any

import pytest

from trafficmirror.handlers.apply import merge_patch_value


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the apiserver applies it."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@pytest.mark.parametrize(
    ("stored", "wanted"),
    [
        # a filter's rule IDs after a rule was removed from the spec
        ({"ingress/48": "tmfr-1", "egress/80": "tmfr-2"}, {"egress/80": "tmfr-2"}),
        ({"ingress/48": "tmfr-1"}, {}),
        ({}, {"egress/80": "tmfr-2"}),
        (None, {"egress/80": "tmfr-2"}),
        ({"ingress/1": "tmfr-1"}, {"ingress/1": "tmfr-9"}),
        (["tmt-1", "tmt-2"], ["tmt-2"]),  # lists are replaced whole anyway
        ("tmt-1", None),
        (None, "tmt-1"),
    ],
)
def test_a_status_field_patched_becomes_exactly_the_wanted_value(stored: Any, wanted: Any) -> None:
    status = {"field": stored} if stored is not None else {}
    patched = merge_patch(status, {"field": merge_patch_value(stored, wanted)})
    assert patched.get("field") == wanted
