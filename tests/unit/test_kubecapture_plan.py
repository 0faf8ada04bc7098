"""`trafficmirror capture`: what the user typed, the MirrorTarget chosen and the manifests built (pure tables)."""

from __future__ import annotations

import datetime as dt
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trafficmirror.api.filter import MirrorFilterSpec
from trafficmirror.kubecapture import plan
from trafficmirror.kubecapture.command import (
    agent_flags,
    capture_files,
    packet_totals,
    sources_summary,
    time_left,
)
from trafficmirror.kubecapture.kube import resource_of, verb_of

# --- what to capture --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "selector", "expected"),
    [
        ("pod/web-1", None, plan.CaptureTarget("pod", "web-1")),
        ("po/web-1", None, plan.CaptureTarget("pod", "web-1")),
        ("pods/web-1", None, plan.CaptureTarget("pod", "web-1")),
        ("deployment/web", None, plan.CaptureTarget("deployment", "web")),
        ("deploy/web", None, plan.CaptureTarget("deployment", "web")),
        ("Deployment/web", None, plan.CaptureTarget("deployment", "web")),
        ("node/ip-10-0-1-5.ec2.internal", None, plan.CaptureTarget("node", "ip-10-0-1-5.ec2.internal")),
        ("no/n1", None, plan.CaptureTarget("node", "n1")),
        (None, "app=web", plan.CaptureTarget("selector", selector={"matchLabels": {"app": "web"}})),
    ],
)
def test_what_to_capture_is_parsed_like_kubectl(what: str | None, selector: str | None, expected: Any) -> None:
    assert plan.parse_target(what, selector) == expected


@pytest.mark.parametrize(
    ("what", "selector", "message"),
    [
        (None, None, "pod/<name>, deployment/<name>, node/<name> or -l"),
        ("web-1", None, "expected pod/<name>"),
        ("service/web", None, "expected pod/<name>"),
        ("pod/", None, "not a Kubernetes object name"),
        ("pod/Web_1", None, "not a Kubernetes object name"),
        ("pod/web", "app=web", "not both"),
        (None, "", "empty selector"),
        (None, "app=", None),  # an empty value is a valid label value
        (None, "app in ()", "lists no values"),
        (None, "app=web,,tier=db", "not a label selector"),
        (None, "env in (a,b", "not a label selector"),
        (None, "-bad=x", "not a label key"),
        (None, "app=we b!", "not a label value"),
        (None, ",".join(f"l{i}=v" for i in range(21)), "at most 20 labels"),
    ],
)
def test_what_to_capture_refuses_with_a_message_naming_the_mistake(
    what: str | None, selector: str | None, message: str | None
) -> None:
    if message is None:
        assert plan.parse_target(what, selector).kind == "selector"
        return
    with pytest.raises(plan.PlanError, match=message.replace("(", r"\(")):
        plan.parse_target(what, selector)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("app=web", {"matchLabels": {"app": "web"}}),
        ("app==web,tier=front", {"matchLabels": {"app": "web", "tier": "front"}}),
        ("app.kubernetes.io/name=web", {"matchLabels": {"app.kubernetes.io/name": "web"}}),
        ("tier!=db", {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}),
        (
            "env in (prod, staging)",
            {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "staging"]}]},
        ),
        ("env notin (dev)", {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}),
        ("canary", {"matchExpressions": [{"key": "canary", "operator": "Exists"}]}),
        ("!legacy", {"matchExpressions": [{"key": "legacy", "operator": "DoesNotExist"}]}),
        (
            "app=web,env in (a,b),!legacy",
            {
                "matchLabels": {"app": "web"},
                "matchExpressions": [
                    {"key": "env", "operator": "In", "values": ["a", "b"]},
                    {"key": "legacy", "operator": "DoesNotExist"},
                ],
            },
        ),
    ],
)
def test_label_selector_syntax_becomes_a_label_selector(text: str, expected: dict[str, Any]) -> None:
    assert plan.parse_label_selector(text) == expected


_label = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=12)


@settings(max_examples=200, derandomize=True)
@given(st.dictionaries(_label, _label, min_size=1, max_size=6))
def test_any_equality_selector_round_trips_to_match_labels(labels: dict[str, str]) -> None:
    text = ",".join(f"{k}={v}" for k, v in labels.items())
    assert plan.parse_label_selector(text) == {"matchLabels": labels}


# --- duration ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec", "seconds"),
    [("10s", "10s", 10), ("5m", "5m", 300), ("1h30m", "1h30m", 5400), ("90", "90s", 90), (" 2H ", "2h", 7200)],
)
def test_for_becomes_the_sessions_duration(text: str, spec: str, seconds: int) -> None:
    assert plan.parse_duration(text) == (spec, seconds)


@pytest.mark.parametrize("text", ["", "0s", "5 minutes", "1d", "-5m", "1.5h", "m"])
def test_for_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(plan.PlanError, match="--for"):
        plan.parse_duration(text)


@settings(max_examples=300, derandomize=True)
@given(st.integers(min_value=1, max_value=10 * 86400))
def test_formatted_durations_parse_back_to_the_same_seconds(seconds: int) -> None:
    assert plan.parse_duration(plan.format_duration(seconds))[1] == seconds


# --- filter -----------------------------------------------------------------------------------------


def test_no_filter_mirrors_everything_with_one_accept_rule_per_direction() -> None:
    rules = plan.filter_rules(plan.parse_filter(None))
    assert rules == {
        "ingressRules": [{"ruleNumber": 100, "action": "accept"}],
        "egressRules": [{"ruleNumber": 100, "action": "accept"}],
    }
    MirrorFilterSpec.model_validate(rules)


def test_a_port_mirrors_both_ends_in_both_directions() -> None:
    rules = plan.filter_rules(plan.parse_filter("tcp:443"))
    for direction in ("ingressRules", "egressRules"):
        assert [(r["protocol"], r.get("destinationPortRange"), r.get("sourcePortRange")) for r in rules[direction]] == [
            (6, {"fromPort": 443, "toPort": 443}, None),
            (6, None, {"fromPort": 443, "toPort": 443}),
        ]
    MirrorFilterSpec.model_validate(rules)


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("tcp:443", [plan.PortMatch(6, 443, 443)]),
        ("tcp:443,udp:53", [plan.PortMatch(6, 443, 443), plan.PortMatch(17, 53, 53)]),
        ("TCP:8000-8100", [plan.PortMatch(6, 8000, 8100)]),
        ("icmp", [plan.PortMatch(1)]),
        ("udp", [plan.PortMatch(17)]),
    ],
)
def test_filter_syntax(text: str, matches: list[plan.PortMatch]) -> None:
    assert plan.parse_filter(text) == matches


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sctp:80", "protocol must be one of"),
        ("tcp:http", "expected a port or a range"),
        ("tcp:70000", "ports are 0-65535"),
        ("tcp:90-80", "the first not above the last"),
        ("icmp:8", "only tcp and udp have ports"),
        ("tcp:1,tcp:2,tcp:3", "need 12 filter rules"),
    ],
)
def test_filter_refusals_name_the_entry_and_the_budget(text: str, message: str) -> None:
    with pytest.raises(plan.PlanError, match=message):
        plan.filter_rules(plan.parse_filter(text))


_entry = st.one_of(
    st.sampled_from(["tcp", "udp", "icmp", "icmpv6"]),
    st.builds(
        lambda p, a, b: f"{p}:{min(a, b)}-{max(a, b)}",
        st.sampled_from(["tcp", "udp"]),
        st.integers(0, 65535),
        st.integers(0, 65535),
    ),
    st.builds(lambda p, a: f"{p}:{a}", st.sampled_from(["tcp", "udp"]), st.integers(0, 65535)),
)


@settings(max_examples=300, derandomize=True)
@given(st.lists(_entry, min_size=1, max_size=6))
def test_every_filter_is_either_refused_or_a_valid_filter_within_awss_budget(entries: list[str]) -> None:
    """Invariant: never a filter the CRD would refuse; refused exactly when over 10 rules; rule numbers unique."""
    matches = plan.parse_filter(",".join(entries))
    cost = sum(2 if m.from_port is None else 4 for m in matches)
    if cost > plan.MAX_FILTER_RULES:
        with pytest.raises(plan.PlanError, match="AWS allows 10"):
            plan.filter_rules(matches)
        return
    rules = plan.filter_rules(matches)
    MirrorFilterSpec.model_validate(rules)
    assert len(rules["ingressRules"]) + len(rules["egressRules"]) == cost
    for direction in rules.values():
        assert len({r["ruleNumber"] for r in direction}) == len(direction)


# --- the target -------------------------------------------------------------------------------------


def _target(name: str, phase: str | None = "Ready", **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "status": {"phase": phase} if phase else {}}


@pytest.mark.parametrize(
    ("targets", "requested", "pool", "expected"),
    [
        ([_target("capture")], None, None, plan.TargetChoice("capture", None, "MirrorTarget capture")),
        ([_target("a", "Failed"), _target("b")], None, None, plan.TargetChoice("b", None, "MirrorTarget b")),
        ([_target("a"), _target("b")], "a", None, plan.TargetChoice("a", None, "MirrorTarget a")),
        (
            [_target("a", **{plan.POOL_LABEL: "east"}), _target("b", **{plan.POOL_LABEL: "east"})],
            None,
            "east",
            plan.TargetChoice(None, {plan.POOL_LABEL: "east"}, f"pool {plan.POOL_LABEL}=east (2 Ready)"),
        ),
        ([_target("a", team="x")], None, "team=x", plan.TargetChoice(None, {"team": "x"}, "pool team=x (1 Ready)")),
    ],
)
def test_the_target_is_the_one_ready_one_the_one_named_or_the_pool(
    targets: list[dict[str, Any]], requested: str | None, pool: str | None, expected: plan.TargetChoice
) -> None:
    assert plan.choose_target(targets, "shop", requested, pool) == expected


@pytest.mark.parametrize(
    ("targets", "requested", "pool", "message"),
    [
        ([], None, None, "(?s)no Ready MirrorTarget in namespace shop.*kubectl label node"),
        (
            [_target("a", "Pending")],
            None,
            None,
            r"no Ready MirrorTarget in namespace shop; MirrorTargets here: a \(Pending\)",
        ),
        (
            [_target("a"), _target("b")],
            None,
            None,
            "2 Ready MirrorTargets in namespace shop \\(a, b\\): choose one with --target",
        ),
        ([_target("a", **{plan.POOL_LABEL: "p"}), _target("b")], None, None, "or --pool p"),
        ([_target("a")], "nope", None, r"no MirrorTarget 'nope' in namespace shop \(there are: a \(Ready\)\)"),
        ([_target("a", "Failed")], "a", None, "is Failed, not Ready"),
        ([_target("a")], None, "team=x", "no Ready MirrorTarget in namespace shop carries the label team=x"),
        ([_target("a")], "a", "x", "either --target or --pool"),
    ],
)
def test_target_refusals_say_what_exists_and_what_to_do(
    targets: list[dict[str, Any]], requested: str | None, pool: str | None, message: str
) -> None:
    with pytest.raises(plan.PlanError, match=message):
        plan.choose_target(targets, "shop", requested, pool)


# --- the manifests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "read", "source"),
    [
        (plan.CaptureTarget("node", "n1"), {}, {"nodeName": "n1"}),
        (
            plan.CaptureTarget("pod", "web-1"),
            {"pod": {"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}}}},
            {"podSelector": {"matchLabels": {"app": "web", "pod-template-hash": "abc"}}, "podNames": ["web-1"]},
        ),
        (plan.CaptureTarget("pod", "bare"), {"pod": {"metadata": {}}}, {"podSelector": {}, "podNames": ["bare"]}),
        (
            plan.CaptureTarget("pod", "labelled"),
            {"pod": {"metadata": {"labels": {f"l{i}": "v" for i in range(21)}}}},
            {"podSelector": {}, "podNames": ["labelled"]},
        ),
        (
            plan.CaptureTarget("deployment", "web"),
            {"deployment": {"spec": {"selector": {"matchLabels": {"app": "web"}}}}},
            {"podSelector": {"matchLabels": {"app": "web"}}},
        ),
        (
            plan.CaptureTarget("selector", selector={"matchLabels": {"app": "web"}}),
            {},
            {"podSelector": {"matchLabels": {"app": "web"}}},
        ),
    ],
)
def test_the_source_follows_what_was_named(
    target: plan.CaptureTarget, read: dict[str, Any], source: dict[str, Any]
) -> None:
    assert plan.session_source(target, **read) == source


def test_a_deployment_without_a_selector_is_refused() -> None:
    with pytest.raises(plan.PlanError, match="no pod selector"):
        plan.session_source(plan.CaptureTarget("deployment", "web"), deployment={"spec": {}})


@pytest.mark.parametrize(
    ("choice", "duration", "target_fields"),
    [
        (plan.TargetChoice("capture"), "10s", {"targetRef": {"name": "capture"}}),
        (
            plan.TargetChoice(None, {"trafficmirror.io/pool": "east"}),
            None,
            {"targetSelector": {"matchLabels": {"trafficmirror.io/pool": "east"}}},
        ),
    ],
)
def test_session_manifest(choice: plan.TargetChoice, duration: str | None, target_fields: dict[str, Any]) -> None:
    target = plan.CaptureTarget("node", "ip-10-0-1-5.ec2.internal")
    prefix = plan.object_prefix(target)
    session = plan.build_session(
        prefix, "shop", {"nodeName": target.name}, choice, "f-1", duration, "node/x", "0a1b2c3d"
    )
    assert session["metadata"] == {
        "generateName": "capture-node-ip-10-0-1-5-ec2-internal-",
        "namespace": "shop",
        "labels": {plan.CREATED_BY_LABEL: plan.CREATED_BY, plan.RUN_LABEL: "0a1b2c3d"},
    }
    expected = {
        "description": "trafficmirror capture node/x",
        "source": {"nodeName": target.name},
        "filterRef": {"name": "f-1"},
    }
    assert session["spec"] == {**expected, **target_fields, **({"duration": duration} if duration else {})}


@settings(max_examples=200, derandomize=True)
@given(
    st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,200}[a-z0-9])?", fullmatch=True),
    st.sampled_from(["pod", "deployment", "node"]),
)
def test_generated_names_fit_kubernetes_names(name: str, kind: str) -> None:
    prefix = plan.object_prefix(plan.CaptureTarget(kind, name))
    assert len(prefix) + 5 <= 63 and prefix.endswith("-")  # the apiserver appends 5 characters
    assert plan._LABEL_VALUE.match(prefix + "abcde")  # the name is also a label value (parent-session)


# --- progress and errors ----------------------------------------------------------------------------


def test_progress_summaries() -> None:
    status = {
        "sources": [
            {
                "networkInterfaceId": "eni-1",
                "nodeName": "a",
                "state": "Mirroring",
                "pods": [{"name": "w1"}, {"name": "w2"}],
            },
            {"networkInterfaceId": "eni-2", "nodeName": "b", "state": "Pending", "pods": [{"name": "w3"}]},
        ],
        "captureNodes": {
            "cap-1": {"packets": 10, "bytes": 1000, "files": ["/x/1.pcapng"]},
            "cap-2": {"packets": 5, "bytes": 24},
        },
    }
    assert sources_summary(status).startswith("2 source ENI(s), 1 mirroring, 3 pod(s): eni-1 on a (Mirroring)")
    assert sources_summary({"sourceNetworkInterfaceId": "eni-9"}) == "source eni-9"
    assert packet_totals(status) == (15, 1024)
    assert capture_files(status) == [("cap-1", "/x/1.pcapng")]
    now = dt.datetime(2026, 11, 30, 8, 0, 0, tzinfo=dt.UTC)
    assert time_left("2026-11-30T08:01:30Z", now) == "1m30s"
    assert time_left("2026-11-30T07:59:00Z", now) == "0s"
    assert time_left(None, now) is None


@pytest.mark.parametrize(
    ("method", "path", "verb", "resource"),
    [
        (
            "POST",
            "/apis/trafficmirror.io/v1alpha1/namespaces/shop/mirrorsessions",
            "create",
            "mirrorsessions.trafficmirror.io",
        ),
        (
            "GET",
            "/apis/trafficmirror.io/v1alpha1/namespaces/shop/mirrortargets",
            "list",
            "mirrortargets.trafficmirror.io",
        ),
        (
            "DELETE",
            "/apis/trafficmirror.io/v1alpha1/namespaces/shop/mirrorfilters/f",
            "delete",
            "mirrorfilters.trafficmirror.io",
        ),
        ("GET", "/api/v1/namespaces/shop/pods/web-1", "get", "pods"),
        ("POST", "/api/v1/namespaces/tm/pods/agent-x/exec?command=cat", "create", "pods/exec"),
        ("GET", "/api/v1/nodes/n1", "get", "nodes"),
    ],
)
def test_a_403_names_the_verb_and_resource(method: str, path: str, verb: str, resource: str) -> None:
    assert (verb_of(method, path), resource_of(path)) == (verb, resource)


def test_only_the_agents_own_flags_count_as_old_agent_flags() -> None:
    agent = {"--port", "--output-dir", "--node", "--s3-bucket", "--log-level"}
    capture = {"--s3-bucket", "--namespace", "--for"}
    assert agent_flags(["capture", "--port=4789", "--s3-bucket", "b", "--node", "x"], agent, capture) == [
        "--port",
        "--node",
    ]
    assert agent_flags(["capture", "pod/web", "--for", "5m"], agent, capture) == []
    assert agent_flags(["agent", "--port", "1"], agent, capture) == []
