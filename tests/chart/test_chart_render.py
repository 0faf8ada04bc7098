"""The chart on its own (helm lint/template, no apiserver): values schema, CRD copies, rendered manifests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import CHART, RELEASE_NAMESPACE, helm, render
from trafficmirror.cli import build_parser
from trafficmirror_testbed.kube import REPO_ROOT

KEEP = "helm.sh/resource-policy"


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = by_kind(docs, kind)
    return found


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "rbac.namespaced=true", "--set", "serviceMonitor.enabled=true"],
        ["--set", "capture.s3.bucket=pcaps", "--set", "capture.storage.keepFiles=false", "--set", "crds.enabled=false"],
    ],
    ids=["defaults", "namespaced-servicemonitor", "s3-only"],
)
def test_helm_lint_strict_is_clean(bin_dir: Path, values: list[str]) -> None:
    result = helm(bin_dir, "lint", "--strict", str(CHART), *values)
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_crds_are_templates_kept_on_uninstall_and_identical_to_the_repository_crds(bin_dir: Path) -> None:
    assert not (CHART / "crds").exists(), "Helm's crds/ folder is never upgraded: CRDs belong in templates/"
    expected = {
        doc["metadata"]["name"]: doc
        for path in sorted((REPO_ROOT / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    }
    rendered = {doc["metadata"]["name"]: doc for doc in by_kind(render(bin_dir), "CustomResourceDefinition")}
    assert set(rendered) == set(expected)
    for name, crd in rendered.items():
        metadata = dict(crd["metadata"])
        assert metadata.pop("annotations") == {KEEP: "keep"}, name
        assert metadata.pop("labels")["app.kubernetes.io/managed-by"] == "Helm"
        assert {**crd, "metadata": metadata} == expected[name], f"{name} differs from crds/"
    assert not by_kind(render(bin_dir, "--set", "crds.enabled=false"), "CustomResourceDefinition")
    without_keep = by_kind(render(bin_dir, "--set", "crds.keep=false"), "CustomResourceDefinition")
    assert all(KEEP not in d["metadata"].get("annotations", {}) for d in without_keep)


def test_deploy_manifest_and_chart_crd_copy_are_in_sync(bin_dir: Path) -> None:
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "render-manifests.sh"), "--check"],
        env={**os.environ, "HELM": str(bin_dir / "helm")},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr + "\n(run hack/render-manifests.sh)"


@pytest.mark.parametrize(
    "bad",
    [
        "operator.bogus=1",
        "capture.storage.type=nfs",
        "capture.port=70000",
        "operator.instanceSupport.allow={c5 large}",
        "image.pullPolicy=Sometimes",
        "capture.s3.sse=KMS",
        "operator.watchNamespaces={Not_A_Namespace}",
    ],
)
def test_values_schema_rejects_invalid_values(bin_dir: Path, bad: str) -> None:
    result = helm(bin_dir, "template", "x", str(CHART), "--set", bad, check=False)
    assert result.returncode != 0
    assert "schema" in result.stderr.lower() or "values don't meet" in result.stderr.lower(), result.stderr


def test_capture_refuses_a_configuration_that_ships_nowhere(bin_dir: Path) -> None:
    result = helm(bin_dir, "template", "x", str(CHART), "--set", "capture.storage.keepFiles=false", check=False)
    assert result.returncode != 0 and "closed files go nowhere" in result.stderr


@pytest.mark.parametrize(
    "values",
    [
        [],
        [
            "--set", "capture.s3.bucket=pcaps", "--set", "capture.s3.sse=aws:kms", "--set", "capture.s3.kmsKeyId=k",
            "--set", "capture.storage.retainFiles=5", "--set", "capture.storage.retainBytes=2GiB",
            "--set", "capture.gzip=true", "--set", "rbac.namespaced=true", "--set", "capture.sourceCheck=false",
        ],
    ],
    ids=["defaults", "s3-namespaced"],
)  # fmt: skip
def test_rendered_commands_are_accepted_by_the_cli(bin_dir: Path, values: list[str]) -> None:
    docs = render(bin_dir, *values)
    for kind in ("Deployment", "DaemonSet"):
        spec = container(one(docs, kind))
        assert spec["command"] == ["trafficmirror"]
        args = build_parser().parse_args(spec["args"])  # exits (SystemExit) on an unknown or malformed flag
        if kind == "DaemonSet":
            # The source check is on unless the values turn it off.
            assert args.check_sources == ("capture.sourceCheck=false" not in values)


def test_operator_deployment_is_pss_restricted_single_and_probed(bin_dir: Path) -> None:
    deployment = one(render(bin_dir), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    assert all("hostPath" not in v for v in pod["volumes"])
    main = container(deployment)
    context = main["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert {m["mountPath"] for m in main["volumeMounts"]} >= {"/tmp"}
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--liveness=http://0.0.0.0:8081/healthz" in main["args"]
    assert "--peering=trafficmirror" in main["args"]
    assert main["resources"]["requests"] and main["resources"]["limits"]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["TRAFFICMIRROR_SUPPORT_OVERRIDES"] == "/etc/trafficmirror/instance-support.yaml"
    assert {"TRAFFICMIRROR_CLUSTER_NAME", "TRAFFICMIRROR_RESYNC_SECONDS", "TRAFFICMIRROR_METRICS_PORT"} <= set(env)


def test_capture_daemonset_uses_host_network_without_privileges(bin_dir: Path) -> None:
    daemonset = one(render(bin_dir), "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["nodeSelector"] == {"trafficmirror.io/capture": "true"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    main = container(daemonset)
    context = main["securityContext"]
    assert context["capabilities"] == {"drop": ["ALL"]}, "no capability may be added"
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    assert not context.get("privileged")
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert {"name": "vxlan", "containerPort": 4789, "protocol": "UDP"} in main["ports"]
    assert {"containerPort": 9090, "name": "metrics", "protocol": "TCP"} in main["ports"]
    (data,) = [v for v in pod["volumes"] if v["name"] == "data"]
    assert data == {"name": "data", "emptyDir": {"sizeLimit": "10Gi"}}
    on_host = one(render(bin_dir, "--set", "capture.storage.type=hostPath"), "DaemonSet")["spec"]["template"]["spec"]
    assert {"name": "data", "hostPath": {"path": "/var/lib/trafficmirror", "type": "DirectoryOrCreate"}} in on_host[
        "volumes"
    ]
    pvc = render(
        bin_dir, "--set", "capture.storage.type=persistentVolumeClaim", "--set", "capture.storage.existingClaim=pcaps"
    )
    volumes = one(pvc, "DaemonSet")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "pcaps"}} in volumes


def test_service_accounts_carry_irsa_annotations(bin_dir: Path) -> None:
    arn = "arn:aws:iam::111122223333:role/tm"
    docs = render(
        bin_dir,
        "--set", f"operator.serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn={arn}-operator",
        "--set", f"capture.serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn={arn}-capture",
    )  # fmt: skip
    accounts = {sa["metadata"]["name"]: sa["metadata"].get("annotations", {}) for sa in by_kind(docs, "ServiceAccount")}
    assert accounts == {
        "trafficmirror-operator": {"eks.amazonaws.com/role-arn": f"{arn}-operator"},
        "trafficmirror-capture": {"eks.amazonaws.com/role-arn": f"{arn}-capture"},
    }


USER_ROLES = {"trafficmirror-capture-edit", "trafficmirror-capture-view", "trafficmirror-pcap-reader"}


def test_users_roles_aggregate_captures_into_edit_and_view_and_bind_pcap_readers_in_the_release_namespace(
    bin_dir: Path,
) -> None:
    docs = render(
        bin_dir, "--set", "rbac.pcapReaders[0].kind=Group", "--set", "rbac.pcapReaders[0].name=netops",
        "--set", "rbac.pcapReaders[0].apiGroup=rbac.authorization.k8s.io",
    )  # fmt: skip
    roles = {r["metadata"]["name"]: r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"] in USER_ROLES}
    assert set(roles) == USER_ROLES
    aggregated = {
        n: {k for k in r["metadata"]["labels"] if k.startswith("rbac.authorization.k8s.io/")} for n, r in roles.items()
    }
    assert aggregated == {
        "trafficmirror-capture-edit": {"rbac.authorization.k8s.io/aggregate-to-edit"},
        "trafficmirror-capture-view": {"rbac.authorization.k8s.io/aggregate-to-view"},
        "trafficmirror-pcap-reader": set(),
    }
    # Nothing in the users' roles reaches secrets, MirrorTargets' writes or the status subresources.
    for role in roles.values():
        for rule in role["rules"]:
            assert not {"secrets", "mirrortargets/status", "mirrorsessions/status"} & set(rule["resources"])
            if "mirrortargets" in rule["resources"]:
                assert set(rule["verbs"]) <= {"get", "list", "watch"}
    (binding,) = [b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["name"] == "trafficmirror-pcap-reader"]
    assert binding["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert binding["subjects"] == [{"kind": "Group", "name": "netops", "apiGroup": "rbac.authorization.k8s.io"}]
    assert not [
        b for b in by_kind(render(bin_dir), "RoleBinding") if b["roleRef"]["name"] == "trafficmirror-pcap-reader"
    ]
    without = {r["metadata"]["name"] for r in by_kind(render(bin_dir, "--set", "rbac.userRoles=false"), "ClusterRole")}
    assert not without & USER_ROLES


def test_namespaced_rbac_uses_roles_and_scopes_the_operator(bin_dir: Path) -> None:
    docs = render(
        bin_dir,
        "--set", "rbac.namespaced=true", "--set", "operator.watchNamespaces={team-a,team-b}",
        "--set", "capture.watchSessions=false",
    )  # fmt: skip
    args = container(one(docs, "Deployment"))["args"]
    assert [a for a in args if a.startswith("--namespace=")] == ["--namespace=team-a", "--namespace=team-b"]
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in by_kind(docs, "Role")}
    assert roles == {("team-a", "trafficmirror-operator"), ("team-b", "trafficmirror-operator")}
    assert {p["metadata"]["namespace"] for p in by_kind(docs, "KopfPeering")} == {"team-a", "team-b"}
    assert not by_kind(docs, "ClusterKopfPeering")
    # Besides the users' roles (ClusterRoles by nature: aggregated into edit and view), one for the operator.
    (cluster_role,) = [r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"] == "trafficmirror-operator"]
    assert {r["metadata"]["name"] for r in by_kind(docs, "ClusterRole")} == {"trafficmirror-operator", *USER_ROLES}
    cluster_resources = {res for rule in cluster_role["rules"] for res in rule["resources"]}
    assert cluster_resources == {"nodes", "namespaces", "customresourcedefinitions"}
    assert all(set(rule["verbs"]) <= {"list", "watch"} for rule in cluster_role["rules"])
    too_many = helm(
        bin_dir, "template", "x", str(CHART), "--set", "rbac.namespaced=true", "--set",
        "operator.watchNamespaces={a,b}", check=False,
    )  # fmt: skip
    assert too_many.returncode != 0 and "watches one namespace or all" in too_many.stderr


def test_instance_support_overrides_reach_the_configmap(bin_dir: Path) -> None:
    docs = render(
        bin_dir, "--set", "operator.instanceSupport.allow={c6i}", "--set", "operator.instanceSupport.deny={c5.large}"
    )
    (config,) = by_kind(docs, "ConfigMap")
    assert yaml.safe_load(config["data"]["instance-support.yaml"]) == {"allow": ["c6i"], "deny": ["c5.large"]}


def test_capture_load_balancer_service_fronts_every_agent_on_udp_with_the_agents_readiness_as_health_check(
    bin_dir: Path,
) -> None:
    assert not [s for s in by_kind(render(bin_dir), "Service") if s["spec"].get("type") == "LoadBalancer"]
    docs = render(bin_dir, "--set", "capture.loadBalancer.enabled=true")
    (service,) = [s for s in by_kind(docs, "Service") if s["spec"].get("type") == "LoadBalancer"]
    daemonset = one(docs, "DaemonSet")
    assert service["spec"]["selector"] == daemonset["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "vxlan", "port": 4789, "targetPort": 4789, "protocol": "UDP"}]
    assert service["spec"]["loadBalancerClass"] == "service.k8s.aws/nlb"
    annotations = service["metadata"]["annotations"]
    metrics = next(p for p in container(daemonset)["ports"] if p["name"] == "metrics")
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-port"] == str(metrics["containerPort"])
    probe_path = container(daemonset)["readinessProbe"]["httpGet"]["path"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-path"] == probe_path
    moved = render(bin_dir, "--set", "capture.loadBalancer.enabled=true", "--set", "capture.metricsPort=9191")
    (service,) = [s for s in by_kind(moved, "Service") if s["spec"].get("type") == "LoadBalancer"]
    assert service["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-healthcheck-port"] == "9191"
