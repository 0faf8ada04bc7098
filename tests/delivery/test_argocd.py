"""Argo CD fit: the Lua health checks under argocd/, run by a real Lua interpreter, and CRD defaults
that leave nothing for a server-side diff to find."""

from __future__ import annotations

import copy
import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from trafficmirror_testbed.kube import ControlPlane

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "argocd"
HEALTH = ARGOCD / "health" / "trafficmirror.io"
KINDS = ("MirrorFilter", "MirrorSession", "MirrorTarget")
PLURAL = {"MirrorFilter": "mirrorfilters", "MirrorSession": "mirrorsessions", "MirrorTarget": "mirrortargets"}
# Argo CD runs health scripts in gopher-lua, a Lua 5.1; 5.4 makes sure nothing version-specific slipped in.
LUA_VERSIONS = ("lua51", "lua54")
STALE = re.compile(r"^Waiting for the operator to observe generation \d+$")

lupa = pytest.importorskip("lupa", reason="lupa (Lua for Python) is in pyproject's test extra")


@pytest.fixture
def namespace(bare_namespace: str) -> str:
    """No operator and no pod runs in these tests: nothing holds their namespaces once deleted."""
    return bare_namespace


def cases() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for kind in KINDS:
        for case in yaml.safe_load((HEALTH / kind / "health_test.yaml").read_text())["tests"]:
            out.append((kind, case))
    return out


def case_id(value: Any) -> str:
    return Path(value["inputPath"]).stem if isinstance(value, dict) else str(value)


def to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items() if v is not None})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def health(kind: str, obj: dict[str, Any], version: str = "lua51") -> dict[str, Any]:
    """Run the kind's health.lua as Argo CD does: the object in the global ``obj``, a table returned."""
    runtime = importlib.import_module(f"lupa.{version}").LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = to_lua(runtime, obj)
    result = runtime.execute((HEALTH / kind / "health.lua").read_text())
    return {k: result[k] for k in ("status", "message") if result[k] is not None}


@pytest.mark.parametrize("version", LUA_VERSIONS)
@pytest.mark.parametrize(("kind", "case"), cases(), ids=[f"{k}-{case_id(c)}" for k, c in cases()])
def test_health_of_each_sample(kind: str, case: dict[str, Any], version: str) -> None:
    obj = yaml.safe_load((HEALTH / kind / case["inputPath"]).read_text())
    assert obj["kind"] == kind
    assert health(kind, obj, version) == case["healthStatus"]


def test_every_phase_and_sample_is_covered() -> None:
    for kind in KINDS:
        listed = {c["inputPath"] for c in yaml.safe_load((HEALTH / kind / "health_test.yaml").read_text())["tests"]}
        present = {p.relative_to(HEALTH / kind).as_posix() for p in (HEALTH / kind / "testdata").glob("*.yaml")}
        assert listed == present, kind
        statuses = {c["healthStatus"]["status"] for _, c in cases() if _ == kind}
        assert statuses == {"Healthy", "Degraded", "Progressing"}, kind
    phases = {
        (yaml.safe_load((HEALTH / k / c["inputPath"]).read_text()).get("status") or {}).get("phase") for k, c in cases()
    }
    assert phases == {None, "Pending", "Ready", "Failed", "Deleting", "Completed"}


def test_the_three_kinds_share_one_script() -> None:
    scripts = {(HEALTH / kind / "health.lua").read_text() for kind in KINDS}
    assert len(scripts) == 1


def test_argocd_cm_carries_the_current_scripts() -> None:
    docs = [d for d in yaml.safe_load_all((ARGOCD / "argocd-cm.yaml").read_text()) if d]
    [cm] = docs
    assert (cm["kind"], cm["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    assert cm["data"] == {
        f"resource.customizations.health.trafficmirror.io_{kind}": (HEALTH / kind / "health.lua").read_text()
        for kind in KINDS
    }


def test_a_script_error_is_not_hidden() -> None:
    """A status of an unexpected shape must fail loudly (Argo CD shows the error), not read as Healthy."""
    with pytest.raises(importlib.import_module("lupa.lua51").LuaError):
        health("MirrorSession", {"metadata": {"generation": 1}, "status": {"phase": "Ready", "conditions": 5}})


# --- against the real API server --------------------------------------------------------------


def _kubectl_json(plane: ControlPlane, *args: str) -> dict[str, Any]:
    return json.loads(plane.kubectl(*args, "-o", "json").stdout)


@pytest.mark.testbed
@pytest.mark.parametrize(("kind", "case"), cases(), ids=[f"{k}-{case_id(c)}" for k, c in cases()])
def test_samples_are_valid_statuses_and_judged_alike_when_live(
    control_plane: ControlPlane, namespace: str, kind: str, case: dict[str, Any]
) -> None:
    """Store the sample's status through the status subresource — the API server validates it against
    the CRD schema — and run the script on the object the API server hands back."""
    sample = yaml.safe_load((HEALTH / kind / case["inputPath"]).read_text())
    manifest = {
        "apiVersion": sample["apiVersion"],
        "kind": kind,
        "metadata": {"name": sample["metadata"]["name"], "namespace": namespace},
        "spec": sample["spec"],
    }
    control_plane.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(manifest))
    if "status" in sample:
        status = copy.deepcopy(sample["status"])
        live = _kubectl_json(control_plane, "get", PLURAL[kind], sample["metadata"]["name"], "-n", namespace)
        if "observedGeneration" in status:  # keep the sample's lag behind metadata.generation
            lag = sample["metadata"]["generation"] - status["observedGeneration"]
            status["observedGeneration"] = live["metadata"]["generation"] - lag
        control_plane.kubectl(
            "patch",
            PLURAL[kind],
            sample["metadata"]["name"],
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )
    live = _kubectl_json(control_plane, "get", PLURAL[kind], sample["metadata"]["name"], "-n", namespace)
    if "status" in sample:
        assert live["status"]["phase"] == sample["status"]["phase"]
    expected = dict(case["healthStatus"])
    if STALE.match(expected["message"]):
        expected["message"] = f"Waiting for the operator to observe generation {live['metadata']['generation']}"
    assert health(kind, live) == expected


MINIMAL = {
    "MirrorTarget": {"nodeName": "capture-node"},
    "MirrorFilter": {"ingressRules": [{"ruleNumber": 100}], "egressRules": [{"ruleNumber": 200, "protocol": 6}]},
    "MirrorSession": {
        "source": {"nodeName": "web-node"},
        "targetRef": {"name": "capture-node"},
        "filterRef": {"name": "accept-all"},
    },
}
DEFAULTED = {
    "MirrorTarget": {"deletionPolicy": "Delete"},
    "MirrorFilter": {"deletionPolicy": "Delete"},
    "MirrorSession": {"deletionPolicy": "Delete", "sessionNumber": 1},
}
RULE_DEFAULTS = {"action": "accept", "sourceCidrBlock": "0.0.0.0/0", "destinationCidrBlock": "0.0.0.0/0"}


@pytest.mark.testbed
@pytest.mark.parametrize("kind", KINDS)
def test_defaults_come_from_the_schema_so_a_server_side_diff_is_empty(
    control_plane: ControlPlane, namespace: str, kind: str
) -> None:
    manifest = json.dumps(
        {
            "apiVersion": "trafficmirror.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": "minimal", "namespace": namespace},
            "spec": MINIMAL[kind],
        }
    )
    manager = "--field-manager=argocd-controller"
    control_plane.kubectl("apply", "--server-side", manager, "-f", "-", input=manifest)
    diff = control_plane.kubectl("diff", "--server-side", manager, "-f", "-", input=manifest, check=False)
    assert diff.returncode == 0 and not diff.stdout.strip(), diff.stdout + diff.stderr

    spec = _kubectl_json(control_plane, "get", PLURAL[kind], "minimal", "-n", namespace)["spec"]
    for field, value in DEFAULTED[kind].items():
        assert spec[field] == value, (field, spec)
    for rule in spec.get("ingressRules", []) + spec.get("egressRules", []):
        assert RULE_DEFAULTS.items() <= rule.items(), rule
