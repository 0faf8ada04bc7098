"""One real single-node cluster (kubelet, containerd, controller-manager, scheduler, kube-proxy) for
every end-to-end test of the session, the product image imported into it, and the AWS emulator on
the node's address so that the pods reach it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from trafficmirror_testbed import story
from trafficmirror_testbed.emulator import Emulator
from trafficmirror_testbed.kube import free_port, testbed_bin_dir
from trafficmirror_testbed.node import Node, free_udp_port, missing_requirements, product_image, running_node
from trafficmirror_testbed.seed import World

BUCKET = "trafficmirror-e2e"
CLUSTER = "e2e"
EXAMPLES_NAMESPACE = "default"


@dataclass
class E2E:
    node: Node
    access: story.Access
    emulator: Emulator
    world: World
    capture_port: int
    capture_metrics_port: int
    work_dir: Path

    def values(self) -> dict[str, object]:
        return story.chart_values(
            self.emulator.endpoint_url,
            region=self.emulator.region,
            bucket=BUCKET,
            cluster=CLUSTER,
            capture_port=self.capture_port,
            capture_metrics_port=self.capture_metrics_port,
        )


@pytest.fixture(scope="session")
def e2e() -> Iterator[E2E]:
    problems = missing_requirements()
    assert not problems, f"the end-to-end tests need a node here: {problems}"
    image = product_image()
    with running_node([image]) as node, tempfile.TemporaryDirectory(prefix="trafficmirror-e2e-") as tmp:
        assert node.plane is not None
        work = Path(tmp)
        access = story.Access(node.plane.kubeconfig, node.plane.bin_dir, work)
        with Emulator(host=node.address, log_path=work / "emulator.log") as emulator:
            world = story.register_world(access, emulator, capture_node=node.name)
            emulator.client("s3").create_bucket(Bucket=BUCKET)
            yield E2E(node, access, emulator, world, free_udp_port(), free_port(), work)


def testbed_bins() -> Path:
    return testbed_bin_dir()
