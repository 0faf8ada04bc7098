"""What a user gets from `kubectl apply` with only the CRDs installed: no operator runs here.

Every manifest under invalid/ is refused by the real kube-apiserver with a message naming the
offending field, and nothing is created; every manifest under valid/ is stored as written. The
header of each invalid manifest says what the refusal must contain and whether the pydantic model
refuses it too:

    # expect: spec.ingressRules[0].sourcePortRange     (a substring of kubectl's output; one or more)
    # model: rejects                                    (or: accepts (why the model lets it through))
"""

from __future__ import annotations

import copy
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from trafficmirror.api import KINDS, Kind
from trafficmirror_testbed.kube import ControlPlane

HERE = Path(__file__).parent
INVALID_FILES = sorted((HERE / "invalid").glob("*.yaml"))
VALID_FILES = sorted((HERE / "valid").glob("*.yaml"))
KIND_BY_NAME = {kind.kind: kind for kind in KINDS}


@dataclass(frozen=True)
class Manifest:
    path: Path
    doc: dict[str, Any]
    expects: tuple[str, ...]
    model: str  # "rejects", or "accepts (reason)"

    @property
    def kind(self) -> Kind:
        return KIND_BY_NAME[self.doc["kind"]]

    @property
    def name(self) -> str:
        name: str = self.doc["metadata"]["name"]
        return name

    @property
    def spec(self) -> Any:
        return self.doc.get("spec")


def load(path: Path) -> Manifest:
    text = path.read_text()
    header: list[str] = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    expects = tuple(line.removeprefix("# expect:").strip() for line in header if line.startswith("# expect:"))
    models = [line.removeprefix("# model:").strip() for line in header if line.startswith("# model:")]
    return Manifest(path, yaml.safe_load(text), expects, models[0] if models else "")


def output(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout or "") + (result.stderr or "")


def apply(
    plane: ControlPlane, namespace: str, *, path: Path | None = None, doc: Any = None
) -> subprocess.CompletedProcess[str]:
    source = str(path) if path is not None else "-"
    text = None if doc is None else yaml.safe_dump(doc)
    return plane.kubectl("apply", "--server-side", "-n", namespace, "-f", source, input=text, check=False)


def get(plane: ControlPlane, namespace: str, kind: Kind, name: str) -> subprocess.CompletedProcess[str]:
    return plane.kubectl("get", kind.crd_name, name, "-n", namespace, "-o", "json", check=False)


def assert_contains(stored: Any, written: Any, where: str = "spec") -> None:
    """Everything written is stored unchanged; the apiserver may only add defaults."""
    if isinstance(written, dict):
        assert isinstance(stored, dict), f"{where}: stored {stored!r}, written {written!r}"
        for key, value in written.items():
            assert key in stored, f"{where}.{key} was dropped"
            assert_contains(stored[key], value, f"{where}.{key}")
    elif isinstance(written, list):
        assert isinstance(stored, list) and len(stored) == len(written), f"{where}: stored {stored!r}"
        for index, (s, w) in enumerate(zip(stored, written, strict=True)):
            assert_contains(s, w, f"{where}[{index}]")
    else:
        assert stored == written, f"{where}: stored {stored!r}, written {written!r}"


# ---------------------------------------------------------------------------------------------
# The data set itself


def test_the_data_set_covers_every_kind_with_enough_cases() -> None:
    invalid = [load(p) for p in INVALID_FILES]
    valid = [load(p) for p in VALID_FILES]
    assert len(invalid) >= 55 and len(valid) >= 12, (len(invalid), len(valid))
    for manifests in (invalid, valid):
        assert {m.doc["kind"] for m in manifests} == set(KIND_BY_NAME)
        assert all(m.doc["apiVersion"] == "trafficmirror.io/v1alpha1" for m in manifests)
        # the object is named after its file, so a leftover points straight at its manifest
        assert [m.name for m in manifests] == [m.path.stem for m in manifests]
    for manifest in invalid:
        assert manifest.path.read_text().startswith("# expect: "), manifest.path.name
        assert manifest.model == "rejects" or manifest.model.startswith("accepts ("), manifest.path.name


# ---------------------------------------------------------------------------------------------
# kubectl apply against the real apiserver


@pytest.mark.testbed
@pytest.mark.parametrize("path", INVALID_FILES, ids=lambda p: p.name)
def test_kubectl_apply_refuses_a_malformed_manifest_and_names_the_field(
    control_plane: ControlPlane, namespace: str, path: Path
) -> None:
    manifest = load(path)

    result = apply(control_plane, namespace, path=path)

    message = output(result)
    assert result.returncode != 0, f"{path.name} was accepted:\n{message}"
    missing = [expected for expected in manifest.expects if expected not in message]
    assert missing == [], f"{path.name}: the refusal does not say {missing}:\n{message}"
    leftover = get(control_plane, namespace, manifest.kind, manifest.name)
    assert leftover.returncode != 0 and "NotFound" in output(leftover), f"{path.name} left an object behind"


@pytest.mark.testbed
@pytest.mark.parametrize("path", VALID_FILES, ids=lambda p: p.name)
def test_kubectl_apply_accepts_a_valid_manifest_as_written(
    control_plane: ControlPlane, namespace: str, path: Path
) -> None:
    manifest = load(path)

    result = apply(control_plane, namespace, path=path)

    assert result.returncode == 0, f"{path.name} was refused:\n{output(result)}"
    stored = get(control_plane, namespace, manifest.kind, manifest.name)
    assert stored.returncode == 0, output(stored)
    obj = json.loads(stored.stdout)
    assert (obj["kind"], obj["metadata"]["name"]) == (manifest.doc["kind"], manifest.name)
    assert_contains(obj["spec"], manifest.spec)


# ---------------------------------------------------------------------------------------------
# Updates: region and adoptId are fixed at creation, the rest may change


@dataclass(frozen=True)
class Transition:
    story: str
    base: str  # a file under valid/
    changes: dict[str, Any]  # spec keys to set; None removes the key
    refused_with: tuple[str, ...] = field(default=())

    def changed(self, doc: dict[str, Any]) -> dict[str, Any]:
        new = copy.deepcopy(doc)
        for key, value in self.changes.items():
            if value is None:
                new["spec"].pop(key, None)
            else:
                new["spec"][key] = value
        return new


REGION_IMMUTABLE = ("spec.region", "region is immutable")
ADOPT_ID_IMMUTABLE = ("spec.adoptId", "adoptId is immutable")

REFUSED_UPDATES = [
    Transition("target-moved-to-another-region", "target-maximal.yaml", {"region": "eu-west-1"}, REGION_IMMUTABLE),
    Transition(
        "target-given-a-region-after-creation",
        "target-eni-minimal.yaml",
        {"region": "us-east-1"},
        REGION_IMMUTABLE,
    ),
    Transition(
        "target-adopting-another-aws-target",
        "target-maximal.yaml",
        {"adoptId": "tmt-00000000000000001"},
        ADOPT_ID_IMMUTABLE,
    ),
    Transition(
        "target-adopting-after-creation",
        "target-nlb.yaml",
        {"adoptId": "tmt-0123456789abcdef0"},
        ADOPT_ID_IMMUTABLE,
    ),
    Transition("filter-region-removed", "filter-maximal.yaml", {"region": None}, REGION_IMMUTABLE),
    Transition(
        "filter-adopting-after-creation",
        "filter-minimal.yaml",
        {"adoptId": "tmf-0123456789abcdef0"},
        ADOPT_ID_IMMUTABLE,
    ),
    Transition(
        "filter-adopting-another-aws-filter",
        "filter-maximal.yaml",
        {"adoptId": "tmf-fedcba9876543210f"},
        ADOPT_ID_IMMUTABLE,
    ),
    Transition("session-moved-to-another-region", "session-maximal.yaml", {"region": "us-east-2"}, REGION_IMMUTABLE),
    Transition(
        "session-adopting-after-creation",
        "session-minimal.yaml",
        {"adoptId": "tms-0123456789abcdef0"},
        ADOPT_ID_IMMUTABLE,
    ),
    Transition("session-adopt-id-removed", "session-maximal.yaml", {"adoptId": None}, ADOPT_ID_IMMUTABLE),
    Transition(
        "session-update-breaking-a-range",
        "session-minimal.yaml",
        {"sessionNumber": 0},
        ("spec.sessionNumber", "greater than or equal to 1"),
    ),
]

ACCEPTED_UPDATES = [
    Transition("session-renumbered", "session-minimal.yaml", {"sessionNumber": 7}),
    Transition(
        "session-vni-packet-length-and-tags-changed",
        "session-maximal.yaml",
        {"virtualNetworkId": 4242, "packetLength": 128, "description": "narrower", "tags": {"team": "sre"}},
    ),
    Transition(
        "session-pointed-at-another-target-and-filter",
        "session-minimal.yaml",
        {"targetRef": {"name": "other-target"}, "filterRef": {"name": "other-filter"}},
    ),
    Transition(
        "filter-rule-ports-changed",
        "filter-port-ranges.yaml",
        {
            "ingressRules": [
                {
                    "ruleNumber": 100,
                    "protocol": 6,
                    "destinationPortRange": {"fromPort": 8080, "toPort": 8443},
                },
                {
                    "ruleNumber": 110,
                    "protocol": 17,
                    "destinationPortRange": {"fromPort": 4789, "toPort": 4789},
                },
            ]
        },
    ),
    Transition(
        "filter-rules-and-network-services-added",
        "filter-defaults-only.yaml",
        {
            "networkServices": ["amazon-dns"],
            "egressRules": [{"ruleNumber": 100}, {"ruleNumber": 200, "action": "reject", "protocol": 17}],
        },
    ),
    Transition(
        "target-kept-in-aws-on-delete-and-retagged",
        "target-eni-minimal.yaml",
        {"deletionPolicy": "Orphan", "tags": {"team": "netops"}, "description": "now orphaned on delete"},
    ),
    Transition("target-reapplied-with-the-same-region-and-adopt-id", "target-maximal.yaml", {}),
]


def create(plane: ControlPlane, namespace: str, base: str) -> Manifest:
    manifest = load(HERE / "valid" / base)
    created = apply(plane, namespace, path=manifest.path)
    assert created.returncode == 0, output(created)
    return manifest


def stored_spec(plane: ControlPlane, namespace: str, manifest: Manifest) -> dict[str, Any]:
    result = get(plane, namespace, manifest.kind, manifest.name)
    assert result.returncode == 0, output(result)
    spec: dict[str, Any] = json.loads(result.stdout)["spec"]
    return spec


@pytest.mark.testbed
@pytest.mark.parametrize("transition", REFUSED_UPDATES, ids=lambda t: t.story)
def test_an_update_changing_a_field_fixed_at_creation_or_breaking_a_rule_is_refused(
    control_plane: ControlPlane, namespace: str, transition: Transition
) -> None:
    manifest = create(control_plane, namespace, transition.base)
    before = stored_spec(control_plane, namespace, manifest)

    result = apply(control_plane, namespace, doc=transition.changed(manifest.doc))

    message = output(result)
    assert result.returncode != 0, f"{transition.story} was accepted:\n{message}"
    missing = [expected for expected in transition.refused_with if expected not in message]
    assert missing == [], f"{transition.story}: the refusal does not say {missing}:\n{message}"
    assert stored_spec(control_plane, namespace, manifest) == before


@pytest.mark.testbed
@pytest.mark.parametrize("transition", ACCEPTED_UPDATES, ids=lambda t: t.story)
def test_changing_a_mutable_field_is_accepted(
    control_plane: ControlPlane, namespace: str, transition: Transition
) -> None:
    manifest = create(control_plane, namespace, transition.base)
    changed = transition.changed(manifest.doc)

    result = apply(control_plane, namespace, doc=changed)

    assert result.returncode == 0, f"{transition.story} was refused:\n{output(result)}"
    assert_contains(stored_spec(control_plane, namespace, manifest), changed["spec"])


# ---------------------------------------------------------------------------------------------
# The pydantic models, which the operator reads specs with, agree with the CRDs


@pytest.mark.parametrize("path", VALID_FILES, ids=lambda p: p.name)
def test_the_model_reads_every_manifest_the_apiserver_accepts(path: Path) -> None:
    manifest = load(path)
    manifest.kind.spec_model.model_validate(manifest.spec)


@pytest.mark.parametrize("path", INVALID_FILES, ids=lambda p: p.name)
def test_the_model_refuses_what_the_apiserver_refuses_where_it_has_the_same_rule(path: Path) -> None:
    manifest = load(path)
    try:
        manifest.kind.spec_model.model_validate(manifest.spec)
    except ValidationError as error:
        assert manifest.model == "rejects", (
            f"the model now refuses {path.name} too ({error.errors()[0]['msg']}): "
            "change its header to '# model: rejects'"
        )
    else:
        assert manifest.model != "rejects", f"the model accepts {path.name}, which the CRD refuses"


# Rules both sides must enforce: each of these files must say '# model: rejects'.
SHARED_RULES = {
    "exactly one target kind": [
        "target-no-kind-set",
        "target-eni-and-instance-set",
        "target-nlb-and-gwlb-set",
    ],
    "exactly one source": [
        "session-source-none-set",
        "session-source-eni-and-node-set",
        "session-source-all-three-set",
    ],
    "ranges": [
        "session-number-zero",
        "session-number-32767",
        "filter-rule-number-zero",
        "filter-rule-number-32767",
        "session-vni-negative",
        "session-vni-too-large",
        "session-packet-length-zero",
        "filter-protocol-256",
        "filter-port-65536",
        "filter-port-negative",
    ],
    "ports only with TCP or UDP": [
        "filter-ports-without-protocol",
        "filter-ports-with-icmp",
        "filter-ports-with-icmpv6",
    ],
    "port ranges in order": ["filter-from-port-after-to-port"],
    "at most 10 rules": ["filter-eleven-rules-in-total", "filter-eleven-ingress-rules"],
    "unique rule numbers per direction": [
        "filter-duplicate-ingress-rule-number",
        "filter-duplicate-egress-rule-number",
    ],
    "CIDR syntax": [
        "filter-cidr-not-an-address",
        "filter-cidr-prefix-33",
        "filter-cidr-ipv6-prefix-129",
        "filter-cidr-without-prefix",
        "filter-cidr-octet-out-of-range",
        "filter-cidr-prefix-leading-zero",
        "filter-cidr-ipv4-mapped-ipv6",
        "filter-cidr-with-zone",
    ],
    "no host bits in a CIDR block": ["filter-cidr-host-bits-ipv4", "filter-cidr-host-bits-ipv6"],
    "a filter selects something": ["filter-no-rules", "filter-empty-rule-lists"],
    "ID patterns": [
        "target-eni-id-uppercase",
        "target-instance-id-bad",
        "target-gwlb-endpoint-is-a-vpc-id",
        "target-nlb-arn-is-an-alb",
        "target-adopt-id-is-a-filter-id",
        "filter-adopt-id-is-a-session-id",
        "session-adopt-id-is-a-target-id",
    ],
}


@pytest.mark.parametrize("rule", SHARED_RULES, ids=str)
def test_the_model_and_the_crd_share_the_rule(rule: str) -> None:
    for stem in SHARED_RULES[rule]:
        manifest = load(HERE / "invalid" / f"{stem}.yaml")
        assert manifest.model == "rejects", f"{stem}: the model must refuse it like the CRD ({rule})"
        with pytest.raises(ValidationError):
            manifest.kind.spec_model.model_validate(manifest.spec)


@pytest.mark.testbed
def test_a_misspelt_rules_field_applied_without_client_validation_is_refused_not_stored_empty(
    control_plane: ControlPlane, namespace: str
) -> None:
    """`kubectl apply --validate=false` lets `ingresRules` through to the apiserver, which prunes the
    unknown field: without the rule, what is left is a filter that mirrors nothing, stored as Ready."""
    doc = {
        "apiVersion": "trafficmirror.io/v1alpha1",
        "kind": "MirrorFilter",
        "metadata": {"name": "misspelt"},
        "spec": {"ingresRules": [{"ruleNumber": 100}]},
    }
    result = control_plane.kubectl(
        "apply", "--validate=false", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False
    )
    assert result.returncode != 0, output(result)
    assert "a filter needs at least one rule" in output(result) and "check the field names" in output(result)
    assert get(control_plane, namespace, KIND_BY_NAME["MirrorFilter"], "misspelt").returncode != 0
