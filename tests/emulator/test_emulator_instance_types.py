"""The emulator's instance-type facts are AWS's, and the operator's decision agrees with its verdict."""

from __future__ import annotations

from typing import Any

import pytest

from trafficmirror.aws.instance_support import InstanceTypeFacts, SupportVerdict, decide_support, load_support_table
from trafficmirror_testbed.emulator import CURRENT_GENERATION_FAMILIES, instance_type_supported
from trafficmirror_testbed.seed import ROLES

# The types the tests and the demo launch, plus AWS's listed Xen families and a denied Nitro family.
TYPES = sorted(
    {t for t, _ in ROLES.values()} | {"c5.large", "m5.large", "r5.large", "m6i.large", "c4.large", "m4.large"}
)


def test_current_generation_is_what_aws_publishes_for_the_families_tests_use(ec2: Any) -> None:
    wanted = ["c5.large", "m5.large", "r5.large", "m6i.large", "t2.micro", "t3.small"]
    wanted += ["c4.large", "m4.large", "r4.large", "m1.small", "m3.medium", "r3.large"]
    found = {
        t["InstanceType"]: t["CurrentGeneration"]
        for t in ec2.describe_instance_types(InstanceTypes=wanted)["InstanceTypes"]
    }
    assert found == {t: CURRENT_GENERATION_FAMILIES[t.partition(".")[0]] for t in wanted}
    # The AWS facts the field report depends on, spelled out.
    assert found["c5.large"] and found["m5.large"] and found["t2.micro"] and not found["c4.large"]


@pytest.mark.parametrize("instance_type", TYPES)
def test_the_operator_decides_as_the_emulated_aws_accepts(ec2: Any, instance_type: str) -> None:
    """Decided from the facts DescribeInstanceTypes returns, as the operator does: no supported source
    is refused before AWS is asked, no refused one is let through."""
    [raw] = ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]
    facts = InstanceTypeFacts(
        instance_type,
        hypervisor=raw.get("Hypervisor"),
        bare_metal=raw.get("BareMetal"),
        current_generation=raw.get("CurrentGeneration"),
    )
    verdict = decide_support(facts, load_support_table()).verdict
    assert (verdict is SupportVerdict.SUPPORTED) == instance_type_supported(instance_type), verdict
