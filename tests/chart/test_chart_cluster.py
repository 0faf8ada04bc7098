"""The chart against a real kube-apiserver: server-side validation, `helm install`, and the operator doing its
job with nothing but the chart's RBAC."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import (
    CAPTURE_SA,
    CHART,
    OPERATOR_SA,
    RELEASE,
    Release,
    can_i,
    helm,
)
from tests.integration.conftest import Cluster, ready_condition
from trafficmirror_testbed.kube import REPO_ROOT, ControlPlane

# Rules every authenticated account has (system:basic-user / system:discovery); not the chart's doing.
SELF_REVIEWS = {
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
    "selfsubjectreviews.authentication.k8s.io",
}


def server_dry_run(plane: ControlPlane, manifest: str) -> str:
    result = plane.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "rbac.namespaced=true", "--set", "capture.s3.bucket=pcaps", "--set", "capture.storage.type=emptyDir"],
    ],
    ids=["defaults", "namespaced-s3"],
)
def test_rendered_chart_is_accepted_by_the_apiserver(
    control_plane: ControlPlane, release: Release, namespace: str, values: list[str]
) -> None:
    # `release` installed the CRDs, so the ClusterKopfPeering/KopfPeering kinds are known.
    manifest = helm(control_plane, "template", "dry", str(CHART), "--namespace", namespace, *values).stdout
    out = server_dry_run(control_plane, manifest)
    assert "deployment.apps/dry-trafficmirror-operator created (server dry run)" in out
    assert "daemonset.apps/dry-trafficmirror-capture created (server dry run)" in out


def test_plain_manifest_is_accepted_by_the_apiserver(control_plane: ControlPlane, release: Release) -> None:
    out = server_dry_run(control_plane, (REPO_ROOT / "deploy" / "trafficmirror.yaml").read_text())
    assert "namespace/trafficmirror-system" in out


def test_helm_install_creates_crds_rbac_and_workloads(control_plane: ControlPlane, release: Release) -> None:
    def get(*what: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(control_plane.kubectl("get", *what, "-o", "json").stdout)
        return loaded

    for crd in ("mirrortargets", "mirrorfilters", "mirrorsessions"):
        meta = get("crd", f"{crd}.trafficmirror.io")["metadata"]
        assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
        assert meta["annotations"]["meta.helm.sh/release-name"] == RELEASE
    get("crd", "clusterkopfpeerings.kopf.dev")
    get("clusterkopfpeering", "trafficmirror")
    for kind in ("clusterrole", "clusterrolebinding"):
        get(kind, f"{RELEASE}-operator")
        get(kind, f"{RELEASE}-capture")
    ns = ["-n", release.namespace]
    for sa in (OPERATOR_SA, CAPTURE_SA):
        get("serviceaccount", sa, *ns)
    deployment = get("deployment", f"{RELEASE}-operator", *ns)
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == OPERATOR_SA
    daemonset = get("daemonset", f"{RELEASE}-capture", *ns)
    assert daemonset["spec"]["template"]["spec"]["serviceAccountName"] == CAPTURE_SA
    get("configmap", f"{RELEASE}-instance-support", *ns)
    get("networkpolicy", f"{RELEASE}-operator", *ns)
    assert "kubectl apply -f examples/03-session-web.yaml" in release.install_output  # NOTES.txt


def test_helm_upgrade_updates_the_release_and_keeps_crds(control_plane: ControlPlane, release: Release) -> None:
    helm(control_plane, "upgrade", RELEASE, str(CHART), "-n", release.namespace, "--set", "operator.resyncSeconds=30")
    deployment = json.loads(
        control_plane.kubectl("get", "deployment", f"{RELEASE}-operator", "-n", release.namespace, "-o", "json").stdout
    )
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRAFFICMIRROR_RESYNC_SECONDS"] == "30"
    helm(control_plane, "upgrade", RELEASE, str(CHART), "-n", release.namespace)  # back to the defaults
    crd = json.loads(control_plane.kubectl("get", "crd", "mirrorsessions.trafficmirror.io", "-o", "json").stdout)
    assert crd["metadata"]["labels"]["helm.sh/chart"].startswith("trafficmirror-")


def rules_of(plane: ControlPlane, release: Release, account: str, where: str) -> dict[str, set[str]]:
    """resource[(names)] -> verbs, as `kubectl auth can-i --list` reports them for a ServiceAccount in a namespace."""
    out = plane.kubectl(
        "auth", "can-i", "--list", "-n", where, f"--as=system:serviceaccount:{release.namespace}:{account}"
    ).stdout
    rules: dict[str, set[str]] = {}
    for line in out.splitlines()[1:]:
        match = re.fullmatch(r"(\S*)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*", line)
        assert match, line
        resource, _urls, names, verbs = match.groups()
        if not resource or resource in SELF_REVIEWS:
            continue  # non-resource URLs and the rules every account has
        rules.setdefault(f"{resource}({names})" if names else resource, set()).update(verbs.split())
    return rules


def test_capture_agent_may_only_read_mirrorsessions_and_patch_their_status(
    control_plane: ControlPlane, release: Release, namespace: str
) -> None:
    assert rules_of(control_plane, release, CAPTURE_SA, namespace) == {
        "mirrorsessions.trafficmirror.io": {"get", "list", "watch"},
        "mirrorsessions.trafficmirror.io/status": {"patch"},
    }
    assert can_i(control_plane, release.namespace, CAPTURE_SA, "watch", "mirrorsessions.trafficmirror.io", None)
    for verb, allowed in (("patch", True), ("update", False), ("get", False)):
        answer = control_plane.kubectl(
            "auth", "can-i", verb, "mirrorsessions.trafficmirror.io", "--subresource=status", "-n", namespace,
            f"--as=system:serviceaccount:{release.namespace}:{CAPTURE_SA}", check=False,
        ).stdout.strip()  # fmt: skip
        assert answer == ("yes" if allowed else "no"), (verb, answer)
    for verb, resource in [
        ("patch", "mirrorsessions"),
        ("create", "mirrorsessions"),
        ("delete", "mirrorsessions"),
        ("list", "mirrortargets"),
        ("list", "secrets"),
        ("get", "nodes"),
    ]:
        assert not can_i(control_plane, release.namespace, CAPTURE_SA, verb, resource, namespace), (verb, resource)


def test_operator_rbac_is_exactly_what_kopf_needs(
    control_plane: ControlPlane, release: Release, namespace: str
) -> None:
    assert rules_of(control_plane, release, OPERATOR_SA, namespace) == {
        "events": {"create"},
        "services": {"list", "watch"},
        "nodes": {"list", "watch"},
        "namespaces": {"list", "watch"},
        "pods": {"list", "watch"},
        "customresourcedefinitions.apiextensions.k8s.io": {"list", "watch"},
        "clusterkopfpeerings.kopf.dev": {"list", "watch"},
        "clusterkopfpeerings.kopf.dev(trafficmirror)": {"get", "patch"},
        "mirrorfilters.trafficmirror.io": {"list", "watch", "patch", "get", "create", "delete"},
        "mirrorsessions.trafficmirror.io": {"list", "watch", "patch", "get", "create", "delete"},
        "mirrortargets.trafficmirror.io": {"list", "watch", "patch"},
        "mirrorfilters.trafficmirror.io/status": {"patch"},
        "mirrorsessions.trafficmirror.io/status": {"patch"},
        "mirrortargets.trafficmirror.io/status": {"patch"},
    }
    for verb, resource, where in [
        ("create", "secrets", namespace),
        ("get", "secrets", namespace),
        ("delete", "nodes", None),
        ("patch", "nodes", None),
        ("create", "pods", namespace),
        ("delete", "pods", namespace),
        ("delete", "mirrortargets.trafficmirror.io", namespace),
        ("create", "clusterrolebindings", None),
    ]:
        assert not can_i(control_plane, release.namespace, OPERATOR_SA, verb, resource, where), (verb, resource)


def test_requests_outside_the_operator_rbac_get_403(
    control_plane: ControlPlane, release: Release, operator_kubeconfig: Path
) -> None:
    def kubectl_as_operator(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(control_plane.bin_dir / "kubectl"), "--kubeconfig", str(operator_kubeconfig), *args],
            capture_output=True,
            text=True,
        )

    allowed = kubectl_as_operator("get", "nodes")
    assert allowed.returncode == 0, allowed.stderr
    for args in (["get", "secrets", "-n", "default"], ["delete", "node", "web-node", "--dry-run=server"]):
        denied = kubectl_as_operator(*args)
        assert denied.returncode != 0
        assert (
            "Forbidden" in denied.stderr and f"system:serviceaccount:{release.namespace}:{OPERATOR_SA}" in denied.stderr
        )


def test_operator_with_only_its_service_account_makes_a_session_ready(chart_cluster: Cluster) -> None:
    for path in sorted((REPO_ROOT / "examples").glob("0[123]-*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        manifest.pop("apiVersion")
        chart_cluster.apply(manifest)
    for kind, name in [("mirrorfilter", "accept-all"), ("mirrortarget", "capture-node"), ("mirrorsession", "web")]:
        ready = chart_cluster.wait_phase(kind, name, "Ready", timeout=90)
        assert ready_condition(ready)["status"] == "True"
    log = chart_cluster.operator.log.read_text()
    assert "Forbidden" not in log and "Not enough permissions" not in log, chart_cluster.operator.log_tail()
