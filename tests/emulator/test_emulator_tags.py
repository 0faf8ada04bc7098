"""The emulator reads a resource's tags from its own entry, where moto filters every tag of the region.

Same answer, different cost: a Describe of N resources scanned N times all tags, which paced a 10,000-object
benchmark at the emulator's speed instead of the operator's. Seeded random tag sets over resource IDs that
prefix one another (tms-1, tms-12) and over every kind the operator tags: the patched lookup answers exactly
what moto's own filter does, in the same order, without walking the other resources' tags.
"""

from __future__ import annotations

import random

import pytest
from moto.ec2.models import ec2_backends
from moto.ec2.models.core import TaggedEC2Resource

from trafficmirror_testbed.emulator import install

ACCOUNT, REGION = "123456789012", "eu-west-3"
PREFIXES = ("tms", "tmt", "tmf", "eni", "i", "vpc", "subnet")


class Resource:
    """What moto's `TaggedEC2Resource.get_tags` reads of a resource (moto's models need a moto module)."""

    def __init__(self, resource_id: str, backend: object) -> None:
        self.id = resource_id
        self.ec2_backend = backend

    def get_tags(self) -> list[dict[str, str]]:
        return TaggedEC2Resource.get_tags(self)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(6))
def test_a_resources_tags_are_what_moto_filters_for_it(seed: int) -> None:
    install()
    rng = random.Random(seed)
    backend = ec2_backends[ACCOUNT][REGION]
    backend.tags.clear()
    ids = [f"{rng.choice(PREFIXES)}-{rng.randrange(1, 60)}" for _ in range(120)]
    ids += [f"{i}{rng.randrange(10)}" for i in ids[:20]]  # IDs that extend others
    for resource_id in ids:
        keys = rng.sample(["owner", "owner-uid", "Name", "team", "aws:cloudformation:stack-name"], rng.randrange(4))
        if keys:
            backend.create_tags([resource_id], {k: f"{k}-{rng.randrange(1000)}" for k in keys})
    for resource_id in {*ids, "tms-absent", "eni-0"}:
        assert Resource(resource_id, backend).get_tags() == backend.describe_tags(
            filters={"resource-id": [resource_id]}
        ), resource_id
    backend.tags.clear()


def test_a_resources_tags_are_read_without_filtering_the_regions_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    """The class of cost: moto's `describe_tags` walks every tag of the region; the lookup never calls it."""
    install()
    backend = ec2_backends[ACCOUNT][REGION]
    backend.tags.clear()
    backend.create_tags([f"tms-{i}" for i in range(2_000)], {"owner": "other"})
    backend.create_tags(["tms-own"], {"owner": "me"})

    def scan(*_: object, **__: object) -> None:
        raise AssertionError("a resource's tags were looked up by filtering every tag of the region")

    monkeypatch.setattr(backend, "describe_tags", scan)
    assert Resource("tms-own", backend).get_tags() == [
        {"resource_id": "tms-own", "key": "owner", "value": "me", "resource_type": "traffic-mirror-session"}
    ]
    backend.tags.clear()
