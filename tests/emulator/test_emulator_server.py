"""The emulator process: start-up, control endpoints, reset, S3, and reaching it via AWS_ENDPOINT_URL."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import boto3
import pytest

from trafficmirror_testbed.emulator import Emulator, start_emulator

pytestmark = pytest.mark.emulator

DEFAULTS = {
    "target_type_check": True,
    "sources_per_target_limit": None,
    "supported_types": [],
    "unsupported_types": [],
}


def test_control_endpoint_reports_and_changes_the_config(emulator: Emulator) -> None:
    assert emulator.config() == DEFAULTS
    changed = emulator.configure(target_type_check=False, unsupported_types=["c5.*"])
    assert changed == {**DEFAULTS, "target_type_check": False, "unsupported_types": ["c5.*"]}
    assert emulator.config() == changed


def test_control_endpoint_is_plain_http_json(emulator: Emulator) -> None:
    request = urllib.request.Request(
        emulator.endpoint_url + "/_trafficmirror/config",
        data=json.dumps({"sources_per_target_limit": 100}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["sources_per_target_limit"] == 100


@pytest.mark.parametrize(
    "settings",
    [
        {"no_such_switch": True},
        {"target_type_check": "yes"},
        {"sources_per_target_limit": 0},
        {"sources_per_target_limit": "10"},
        {"supported_types": 1},
    ],
)
def test_control_endpoint_refuses_bad_settings(emulator: Emulator, settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="HTTP 400"):
        emulator.configure(**settings)
    assert emulator.config() == DEFAULTS


def test_reset_forgets_resources_and_switches(emulator: Emulator) -> None:
    ec2 = emulator.client("ec2")
    ec2.create_traffic_mirror_filter(Description="before reset")
    emulator.configure(target_type_check=False)
    emulator.reset()
    assert ec2.describe_traffic_mirror_filters()["TrafficMirrorFilters"] == []
    assert emulator.config() == DEFAULTS


def test_s3_is_served_too(emulator: Emulator) -> None:
    s3 = emulator.client("s3")
    s3.create_bucket(Bucket="captures")
    s3.put_object(Bucket="captures", Key="ns/session/1.pcapng", Body=b"\x0a\x0d\x0d\x0a")
    assert s3.get_object(Bucket="captures", Key="ns/session/1.pcapng")["Body"].read() == b"\x0a\x0d\x0d\x0a"


def test_reachable_through_aws_endpoint_url(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # The operator finds "AWS" only through the environment, exactly as it would find AWS.
    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)
    ec2 = boto3.Session().client("ec2")
    filter_id = ec2.create_traffic_mirror_filter()["TrafficMirrorFilter"]["TrafficMirrorFilterId"]
    assert filter_id.startswith("tmf-")


def test_tagging_api_lists_mirror_resources(emulator: Emulator) -> None:
    ec2 = emulator.client("ec2")
    spec = [{"ResourceType": "traffic-mirror-filter", "Tags": [{"Key": "trafficmirror.io/uid", "Value": "u1"}]}]
    filter_id = ec2.create_traffic_mirror_filter(TagSpecifications=spec)["TrafficMirrorFilter"]["TrafficMirrorFilterId"]
    tagging = emulator.client("resourcegroupstaggingapi")
    found = tagging.get_resources(TagFilters=[{"Key": "trafficmirror.io/uid", "Values": ["u1"]}])
    assert [m["ResourceARN"].rsplit("/", 1)[1] for m in found["ResourceTagMappingList"]] == [filter_id]


def test_start_with_target_type_check_off() -> None:
    with start_emulator(target_type_check=False) as emulator:
        assert emulator.config()["target_type_check"] is False
        emulator.configure(target_type_check=True)
        emulator.reset()  # back to how it was started, not to the built-in default
        assert emulator.config()["target_type_check"] is False
        process = emulator.process
        assert process is not None
    assert process.poll() is not None


def test_a_port_can_be_chosen(emulator_server: Emulator) -> None:
    with Emulator(port=0) as first:
        taken = first.port
    with Emulator(port=taken) as second:  # the port is free again once the first one stopped
        assert second.endpoint_url == f"http://127.0.0.1:{taken}"
        assert second.config() == DEFAULTS
