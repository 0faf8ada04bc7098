"""The IAM policies in iam/ allow exactly what the code calls, with conditions AWS actually evaluates.

The operations are found statically (AST) in the installed package's source: EC2 operations named
in ``_call("...")``/``_pages("...")``, and every method called on a boto3 client (``boto3.client("s3")``
assigned to a name), with managed transfers expanded to the API calls they make. They are mapped to
IAM actions, and each policy must allow each of them and nothing else. Every action, resource ARN
and condition key is then checked against an excerpt of the AWS Service Authorization Reference
(tests/delivery/data/service-authorization.json), so a condition on a key the action does not
support — which IAM would silently ignore or never match — fails here.
"""

from __future__ import annotations

import ast
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import botocore.session
import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "trafficmirror"
IAM = REPO / "iam"
AUTHZ = json.loads((Path(__file__).parent / "data" / "service-authorization.json").read_text())["services"]

# Which policy covers the AWS calls of which module. A new module calling AWS fails the test until
# someone decides which identity makes that call.
POLICY_OF_MODULE = {
    "aws/ec2.py": "operator-policy.json",
    "capture/ship.py": "capture-agent-policy.json",
    "capture/fetch.py": "pcap-reader-policy.json",
    "aws/inventory.py": "doctor-policy.json",
    "aws/elbv2.py": "operator-policy.json",
}

# boto3's managed transfers, as the API calls s3transfer makes for them.
MANAGED_TRANSFERS = {
    "upload_file": {
        "put_object",
        "create_multipart_upload",
        "upload_part",
        "complete_multipart_upload",
        "abort_multipart_upload",
    },
    "upload_fileobj": {
        "put_object",
        "create_multipart_upload",
        "upload_part",
        "complete_multipart_upload",
        "abort_multipart_upload",
    },
    "download_file": {"head_object", "get_object"},
    "download_fileobj": {"head_object", "get_object"},
}
CLIENT_HELPERS = {"get_paginator", "get_waiter", "can_paginate", "close", "meta", "exceptions"}

# S3 API operations are authorized under IAM actions with other names.
S3_IAM_ACTION = {
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "HeadObject": "s3:GetObject",
    "GetObject": "s3:GetObject",
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
}
# SSE-KMS: S3 asks KMS for a data key to write an object, and to decrypt it for multipart parts
# and for reading it back. kms:Encrypt is never called by S3.
KMS_FOR_SSE_WRITE = {"kms:GenerateDataKey", "kms:Decrypt"}
KMS_FOR_SSE_READ = {"kms:Decrypt"}

# boto3 service names whose IAM action prefix differs.
IAM_PREFIX = {"elbv2": "elasticloadbalancing"}

# Global condition keys that every action supports (those we could plausibly use).
GLOBAL_KEYS = {"aws:RequestedRegion", "aws:SourceVpc", "aws:SourceVpce", "aws:PrincipalTag/${TagKey}"}


@dataclass
class ModuleCalls:
    services: set[str] = field(default_factory=set)
    operations: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # service -> snake ops
    tagged_creates: set[str] = field(default_factory=set)  # snake ops sent with TagSpecifications
    sse: bool = False  # passes ServerSideEncryption / SSEKMSKeyId to S3


def _const_str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _client_service(node: ast.AST) -> str | None:
    """'ec2' for ``boto3.client("ec2", …)`` / ``boto3.session.Session().client("ec2", …)``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "client":
        return _const_str(node.args[0]) if node.args else None
    return None


def scan_module(path: Path) -> ModuleCalls:
    tree = ast.parse(path.read_text(), str(path))
    calls = ModuleCalls()
    clients: dict[str, str] = {}  # dotted name -> service
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and (service := _client_service(node.value)):
            calls.services.add(service)
            for target in node.targets:
                clients[ast.unparse(target)] = service
    # An adapter holding one client and naming operations by string (``self._call("op", …)``).
    # Clients reach it through a constructor argument of the same name as the attribute.
    for name, service in list(clients.items()):
        clients.setdefault(f"self.{name}", service)
    only_service = next(iter(calls.services)) if len(calls.services) == 1 else None

    parents: dict[ast.AST, ast.AST] = {}
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            parents[child] = parent

    def enclosing_function(node: ast.AST) -> str | None:
        while node in parents:
            node = parents[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                return node.name
        return None

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("_call", "_pages"):
            op = _const_str(node.args[0]) if node.args else None
            if op is None and enclosing_function(node) in ("_call", "_pages"):
                continue  # the dispatchers pass on what their callers named
            assert op is not None, f"{path}:{node.lineno}: {func.attr} with a non-literal operation"
            assert only_service, f"{path}:{node.lineno}: {func.attr}(...) in a module without exactly one client"
            calls.operations[only_service].add(op)
            if any(k.arg == "TagSpecifications" for k in node.keywords):
                calls.tagged_creates.add(op)
            continue
        if isinstance(func, ast.Name) and func.id == "getattr" and node.args:
            receiver = ast.unparse(node.args[0])
            if receiver in clients and _const_str(node.args[1]) is None:
                # Only the adapter's dispatcher may call an operation named at run time.
                where = enclosing_function(node)
                assert where == "_call", f"{path}:{node.lineno}: dynamic call on {receiver} in {where}"
            continue
        if isinstance(func, ast.Attribute) and (service := clients.get(ast.unparse(func.value))):
            method = func.attr
            if method == "get_paginator":
                op = _const_str(node.args[0]) if node.args else None
                assert op is not None, f"{path}:{node.lineno}: paginator with a non-literal name"
                calls.operations[service].add(op)
            elif method in MANAGED_TRANSFERS:
                calls.operations[service] |= MANAGED_TRANSFERS[method]
            elif method not in CLIENT_HELPERS:
                calls.operations[service].add(method)
    source = path.read_text()
    calls.sse = "ServerSideEncryption" in source or "SSEKMSKeyId" in source
    return calls


@cache
def scan_package() -> dict[str, ModuleCalls]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        calls = scan_module(path)
        if calls.operations or calls.services:
            found[path.relative_to(PACKAGE).as_posix()] = calls
    return found


@cache
def api_names(service: str) -> dict[str, str]:
    """snake_case method name -> API operation name, from botocore's own service model."""
    model = botocore.session.get_session().get_service_model(service)
    return {botocore.xform_name(name): name for name in model.operation_names}


def iam_actions(service: str, snake_ops: set[str]) -> set[str]:
    names = api_names(service)
    unknown = snake_ops - names.keys()
    assert not unknown, f"not {service} operations: {sorted(unknown)}"
    apis = {names[op] for op in snake_ops}
    if service == "s3":
        missing = apis - S3_IAM_ACTION.keys()
        assert not missing, f"add the IAM action of {sorted(missing)} to S3_IAM_ACTION"
        return {S3_IAM_ACTION[a] for a in apis}
    return {f"{IAM_PREFIX.get(service, service)}:{a}" for a in apis}


def load_policy(name: str) -> dict[str, Any]:
    return json.loads((IAM / name).read_text())


def listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def allowed_actions(policy: dict[str, Any]) -> set[str]:
    return {a for s in policy["Statement"] for a in listed(s["Action"])}


def expected_actions() -> dict[str, set[str]]:
    expected: dict[str, set[str]] = defaultdict(set)
    for module, calls in scan_package().items():
        assert module in POLICY_OF_MODULE, f"{module} calls AWS; say in POLICY_OF_MODULE which policy covers it"
        policy = POLICY_OF_MODULE[module]
        for service, ops in calls.operations.items():
            expected[policy] |= iam_actions(service, ops)
        if calls.tagged_creates:
            expected[policy].add("ec2:CreateTags")
        if calls.sse and "s3:PutObject" in expected[policy]:
            expected[policy] |= KMS_FOR_SSE_WRITE
    # Objects the agent may have written with SSE-KMS are read back by `trafficmirror pcap get`.
    if any(c.sse for c in scan_package().values()) and "s3:GetObject" in expected["pcap-reader-policy.json"]:
        expected["pcap-reader-policy.json"] |= KMS_FOR_SSE_READ
    return expected


# --- what the code calls ------------------------------------------------------------------------


def test_the_scan_finds_the_known_calls() -> None:
    """Guards the scanner itself: if it found nothing, the equality tests below would prove nothing."""
    found = scan_package()
    ec2 = found["aws/ec2.py"].operations["ec2"]
    assert {"create_traffic_mirror_session", "describe_traffic_mirror_targets", "describe_instance_types"} <= ec2
    assert "upload_file" not in found["capture/ship.py"].operations["s3"]
    assert "complete_multipart_upload" in found["capture/ship.py"].operations["s3"]
    assert {"list_objects_v2", "get_object"} <= found["capture/fetch.py"].operations["s3"]
    assert found["aws/ec2.py"].tagged_creates == {
        "create_traffic_mirror_target",
        "create_traffic_mirror_filter",
        "create_traffic_mirror_session",
    }


@pytest.mark.parametrize("policy", sorted(set(POLICY_OF_MODULE.values())))
def test_policy_allows_exactly_what_the_code_calls(policy: str) -> None:
    want = expected_actions()[policy]
    have = allowed_actions(load_policy(policy))
    assert not want - have, f"{policy} misses {sorted(want - have)}"
    assert not have - want, f"{policy} allows {sorted(have - want)}, which the code never calls"


def test_tags_on_the_creates_that_send_them_and_on_this_clusters_resources_only() -> None:
    creates = scan_package()["aws/ec2.py"].tagged_creates
    policy = load_policy("operator-policy.json")
    statements = [s for s in policy["Statement"] if "ec2:CreateTags" in listed(s["Action"])]
    assert all(listed(s["Action"]) == ["ec2:CreateTags"] for s in statements)
    on_create = [s for s in statements if "ec2:CreateAction" in s["Condition"].get("StringEquals", {})]
    [statement] = on_create
    allowed = set(listed(statement["Condition"]["StringEquals"]["ec2:CreateAction"]))
    assert allowed == {api_names("ec2")[op] for op in creates}
    # Tag reconciling (spec edits, tags removed outside): only on resources of this cluster already.
    [retagging] = [s for s in statements if s not in on_create]
    assert retagging["Condition"] == {"StringEquals": {"aws:ResourceTag/trafficmirror.io/cluster": "CLUSTER_NAME"}}


def test_untagging_never_removes_the_ownership_tags() -> None:
    [statement] = [
        s for s in load_policy("operator-policy.json")["Statement"] if "ec2:DeleteTags" in listed(s["Action"])
    ]
    assert listed(statement["Action"]) == ["ec2:DeleteTags"]
    assert statement["Condition"] == {
        "StringEquals": {"aws:ResourceTag/trafficmirror.io/cluster": "CLUSTER_NAME"},
        "ForAllValues:StringNotLike": {"aws:TagKeys": ["trafficmirror.io/*"]},
    }


def test_creates_require_the_ownership_tags_and_changes_the_cluster_tag() -> None:
    for statement in load_policy("operator-policy.json")["Statement"]:
        actions = listed(statement["Action"])
        resources = listed(statement["Resource"])
        condition = statement.get("Condition", {})
        own = [r for r in resources if re.search(r":traffic-mirror-(target|filter|session)/", r)]
        if not own:
            continue
        if all(a.startswith("ec2:Create") and a != "ec2:CreateTags" for a in actions) and len(own) == 1:
            created = own[0].rsplit(":", 1)[1].split("/")[0]
            if all(_kind_of(a) == created for a in actions):
                assert condition["StringEquals"]["aws:RequestTag/trafficmirror.io/cluster"] == "CLUSTER_NAME"
                assert condition["Null"]["aws:RequestTag/trafficmirror.io/owner-uid"] == "false"
                continue
        if actions == ["ec2:CreateTags"]:
            equals = condition["StringEquals"]
            own_cluster = {"aws:ResourceTag/trafficmirror.io/cluster": "CLUSTER_NAME"}
            assert "ec2:CreateAction" in equals or equals == own_cluster
            continue
        if actions == ["ec2:DeleteTags"]:
            continue  # test_untagging_never_removes_the_ownership_tags
        assert condition == {"StringEquals": {"aws:ResourceTag/trafficmirror.io/cluster": "CLUSTER_NAME"}}, statement


def _kind_of(action: str) -> str:
    words = re.findall(r"[A-Z][a-z]*", action.split(":")[1])
    return "traffic-mirror-" + words[-1].lower() if words[:3] == ["Create", "Traffic", "Mirror"] else ""


def test_every_mirror_action_on_an_existing_resource_is_tag_conditioned() -> None:
    """No statement grants Delete*/Modify* on a target, filter or session without the cluster tag."""
    for statement in load_policy("operator-policy.json")["Statement"]:
        actions = listed(statement["Action"])
        if not any(a.startswith(("ec2:Delete", "ec2:Modify")) for a in actions):
            continue
        for resource in listed(statement["Resource"]):
            if re.search(r":traffic-mirror-(target|filter|session)/", resource):
                assert statement["Condition"]["StringEquals"]["aws:ResourceTag/trafficmirror.io/cluster"]


# --- what AWS supports --------------------------------------------------------------------------


def _arn_regex(template: str) -> re.Pattern[str]:
    """The ARN template of a resource type as a regex; a policy's ``*`` and placeholders fill its variables."""
    variable = {"${Partition}": "[^:]+", "${Region}": "[^:]*", "${Account}": "[^:]*", "${BucketName}": "[^:/]+"}
    parts = re.split(r"(\$\{[^}]+\})", template)
    return re.compile("".join(variable.get(p, ".+") if p.startswith("${") else re.escape(p) for p in parts) + "$")


def _resource_types(service: str, arn: str) -> set[str]:
    return {rt for rt, template in AUTHZ[service]["resources"].items() if _arn_regex(template).match(arn)}


def _key_supported(key: str, supported: set[str]) -> bool:
    for candidate in supported | GLOBAL_KEYS:
        pattern = re.escape(candidate).replace(r"\$\{TagKey\}", ".+").replace(r"\$\{AttributeName\}", ".+")
        pattern = pattern.replace(r"\$\{EncryptionContextKey\}", ".+").replace("<key>", ".+")
        if re.fullmatch(pattern, key):
            return True
    return False


@pytest.mark.parametrize("policy", sorted(p.name for p in IAM.glob("*.json")))
def test_actions_resources_and_condition_keys_exist_for_each_other(policy: str) -> None:
    document = load_policy(policy)
    assert document["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in document["Statement"]]
    assert len(set(sids)) == len(sids)
    for statement in document["Statement"]:
        sid = statement["Sid"]
        assert statement["Effect"] == "Allow"
        assert not {"NotAction", "NotResource", "NotPrincipal", "Principal"} & statement.keys(), sid
        actions = listed(statement["Action"])
        resources = listed(statement["Resource"])
        assert actions == sorted(actions), f"{sid}: keep actions sorted"
        for action in actions:
            service, name = action.split(":")
            assert "*" not in name, f"{sid}: no wildcard actions"
            facts = AUTHZ[service]["actions"][name]
            types = {rt for rt in facts["resource_types"] if rt}
            if not types:
                assert resources == ["*"], f"{sid}: {action} supports no resource-level permissions"
                matched_types: set[str] = set()
            else:
                matched_types = {rt for r in resources for rt in _resource_types(service, r)} & types
                assert matched_types, f"{sid}: none of {resources} is a resource {action} is authorized on"
            supported = set(facts["resource_types"].get("", {}).get("condition_keys", []))
            for rt in matched_types:
                supported |= set(facts["resource_types"][rt]["condition_keys"])
            for operator_values in statement.get("Condition", {}).values():
                for key in operator_values:
                    assert _key_supported(key, supported), f"{sid}: {action} does not support condition {key}"
        for resource in resources:
            if resource == "*":
                continue
            assert any(
                _resource_types(a.split(":")[0], resource)
                & set(AUTHZ[a.split(":")[0]]["actions"][a.split(":")[1]]["resource_types"])
                for a in actions
            ), f"{sid}: {resource} matches no resource type of its actions"


def test_required_resource_types_of_each_operator_action_are_granted_somewhere() -> None:
    """EC2 authorizes every resource a request touches: a session create needs the ENI, the target,
    the filter and the new session each allowed by some statement."""
    statements = load_policy("operator-policy.json")["Statement"]
    for action in sorted(allowed_actions(load_policy("operator-policy.json"))):
        service, name = action.split(":")
        for rt, facts in AUTHZ[service]["actions"][name]["resource_types"].items():
            if not rt or not facts["required"]:
                continue
            assert any(
                action in listed(s["Action"]) and any(rt in _resource_types(service, r) for r in listed(s["Resource"]))
                for s in statements
            ), f"{action} needs {rt} granted"


def test_readme_explains_every_statement() -> None:
    readme = (IAM / "README.md").read_text()
    for policy in IAM.glob("*.json"):
        assert f"`{policy.name}`" in readme, policy.name
        for statement in load_policy(policy.name)["Statement"]:
            assert f"`{statement['Sid']}`" in readme, f"iam/README.md does not explain {statement['Sid']}"
