"""The pure parts of `trafficmirror doctor`: quotas as cited data, the port verdict, counting, cost."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from trafficmirror.aws.instance_support import load_support_table
from trafficmirror.aws.inventory import InstanceRecord, Inventory, SessionRecord, TargetRecord
from trafficmirror.aws.target_quotas import TargetQuotas, TargetQuotasConfigError
from trafficmirror.capture.metrics import AgentState, _Collector
from trafficmirror.reconcile.doctor import (
    AgentMetrics,
    AgentPod,
    NodeInput,
    PortState,
    diagnose,
    parse_agent_metrics,
    port_verdict,
    render_table,
)

QUOTAS = TargetQuotas.packaged()
SUPPORT = load_support_table()


@pytest.mark.parametrize(
    ("kind", "instance_type", "limit", "cited"),
    [
        ("network-interface", "m5.24xlarge", 100, "AWS docs, Traffic Mirroring quotas"),
        ("network-interface", "M5N.24XLARGE", 100, "AWS docs, Traffic Mirroring quotas"),
        ("network-interface", "m5.12xlarge", 10, "AWS docs, Traffic Mirroring quotas"),
        ("network-interface", "c5.large", 10, "2023-04"),
        ("network-interface", None, 10, "assumed"),
        ("network-load-balancer", None, None, "any number"),
        ("gateway-load-balancer-endpoint", None, None, "any number"),
    ],
)
def test_sources_per_target_come_from_the_cited_table(
    kind: str, instance_type: str | None, limit: int | None, cited: str
) -> None:
    quota = QUOTAS.sources_per_target(kind, instance_type)  # type: ignore[arg-type]
    assert quota.limit == limit
    assert cited in quota.reason


def test_the_quota_table_cites_a_url_for_every_number_and_is_never_above_aws() -> None:
    assert QUOTAS.sessions_per_source_eni == 3
    assert QUOTAS.default_sources_per_target == 10
    assert QUOTAS.large_target_limit == 100
    assert all(url.startswith("https://") for _, url in QUOTAS.cites.values())
    # AWS's rule: 100 only for the largest size of a family.
    assert all(name.endswith(".24xlarge") for name in QUOTAS.large_target_types)


def test_a_quota_table_citing_an_unknown_source_fails_at_load() -> None:
    text = (
        "version: x\nsources: [{id: a, cite: A, says: s, url: https://a}]\n"
        "sessions_per_source_eni: {limit: 3, sources: [a]}\n"
        "sources_per_target: {default: 10, sources: [b]}\n"
        "large_targets: {limit: 100, sources: [a], types: [m5.24xlarge]}\n"
        "load_balancer_targets: {sources: [a]}\n"
        "price: {usd_per_eni_hour: 0.015, region: us-east-1, sources: [a]}\n"
    )
    with pytest.raises(TargetQuotasConfigError, match="unknown source"):
        TargetQuotas.from_yaml(text)


def test_price_is_the_published_one_unless_configured() -> None:
    assert QUOTAS.price().usd_per_eni_hour == 0.015
    assert "aws.amazon.com/vpc/pricing" in QUOTAS.price().source
    assert QUOTAS.price(0.02).source == "configured"
    with pytest.raises(ValueError, match="negative"):
        QUOTAS.price(-1.0)


def _pod(**changes: object) -> AgentPod:
    base: dict[str, object] = {
        "name": "agent-x",
        "namespace": "tm",
        "node_name": "n1",
        "phase": "Running",
        "ready": True,
    }
    return AgentPod(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pod", "metrics", "state", "says"),
    [
        (None, None, PortState.UNKNOWN, "no capture agent pod"),
        (
            _pod(ready=False, termination_message="UDP port 4789 on 0.0.0.0 is already in use. vxlan.calico"),
            None,
            PortState.IN_USE,
            "vxlan.calico",
        ),
        (_pod(termination_message="[Errno 98] Address in use"), None, PortState.IN_USE, "taken"),
        (_pod(), AgentMetrics(425984, 212992, 0), PortState.HELD_BY_AGENT, "425984 bytes granted"),
        (_pod(metrics_error="its metrics could not be read (503)"), None, PortState.UNKNOWN, "503"),
        (_pod(termination_message="OOMKilled"), AgentMetrics(0, None, None), PortState.UNKNOWN, "no bound socket"),
        # An old exit about the port, then a healthy restart: the exit message still wins, since
        # the kubelet keeps lastState only until the next exit; doctor shows it rather than guess.
        (_pod(termination_message="already in use"), AgentMetrics(1, 2, 3), PortState.IN_USE, "taken"),
    ],
)
def test_port_verdict_rests_on_what_the_agent_reported(
    pod: AgentPod | None, metrics: AgentMetrics | None, state: PortState, says: str
) -> None:
    verdict = port_verdict(pod, metrics)
    assert verdict.state is state
    assert says in verdict.how


def test_agent_metrics_are_parsed_from_the_agents_own_collector() -> None:
    state = AgentState(workers_expected=1, rcvbuf_requested=8 << 20, rcvbuf_granted=425984, rmem_max=212992)
    state.update_worker(0, {"datagrams": 17, "sessions": {}})
    registry = CollectorRegistry()
    registry.register(_Collector(state))
    parsed = parse_agent_metrics(generate_latest(registry).decode())
    assert parsed == AgentMetrics(receive_buffer_granted=425984, rmem_max=212992, datagrams=17)


def _inventory(sessions: list[tuple[str, str]]) -> Inventory:
    instances = {
        "i-00000001": InstanceRecord("i-00000001", "t3.small", "us-east-1a", "running", ("eni-a1", "eni-a2")),
        "i-00000002": InstanceRecord("i-00000002", "c5n.large", "us-east-1b", "running", ("eni-c1",)),
        "i-00000003": InstanceRecord("i-00000003", "m5.24xlarge", "us-east-1b", "running", ("eni-b1",)),
    }
    targets = (
        TargetRecord("tmt-small", "eni-c1", None, None),
        TargetRecord("tmt-big", "eni-b1", None, None),
        TargetRecord("tmt-nlb", None, "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/x/1", None),
    )
    return Inventory(
        instances=instances,
        interface_instances={"eni-c1": "i-00000002", "eni-b1": "i-00000003"},
        targets=targets,
        sessions=tuple(SessionRecord(f"tms-{n}", eni, target) for n, (eni, target) in enumerate(sessions)),
        type_facts={},
    )


NODES = [
    NodeInput("web", "aws:///us-east-1a/i-00000001", capture=False),
    NodeInput("cap", "aws:///us-east-1b/i-00000002", capture=True),
    NodeInput("big", "aws:///us-east-1b/i-00000003", capture=False),
    NodeInput("kind-node", "kind://docker/x/y", capture=False),
]


def test_sessions_per_eni_sources_per_target_and_cost_are_counted_from_aws() -> None:
    sessions = [
        ("eni-a1", "tmt-small"),
        ("eni-a1", "tmt-small"),  # a second session of the same source: one source, two sessions
        ("eni-a2", "tmt-small"),
        ("eni-a2", "tmt-nlb"),
        ("eni-x", "tmt-big"),  # an ENI of no listed node still uses the target and is billed
    ]
    report = diagnose(NODES, _inventory(sessions), [], support=SUPPORT, quotas=QUOTAS, price=QUOTAS.price())
    nodes = {n.name: n for n in report.nodes}
    assert [(e.network_interface_id, e.sessions) for e in nodes["web"].network_interfaces] == [
        ("eni-a1", 2),
        ("eni-a2", 2),
    ]
    assert nodes["kind-node"].source == "Unknown" and "names no EC2 instance" in nodes["kind-node"].reason
    assert nodes["cap"].capture is not None and nodes["big"].capture is not None  # a label or a target
    assert nodes["web"].capture is None
    targets = {t.target_id: t for t in report.targets}
    assert (targets["tmt-small"].sources, targets["tmt-small"].sources_limit, targets["tmt-small"].headroom) == (
        2,
        10,
        8,
    )
    assert (targets["tmt-big"].node, targets["tmt-big"].sources_limit, targets["tmt-big"].headroom) == ("big", 100, 99)
    assert (targets["tmt-nlb"].sources_limit, targets["tmt-nlb"].headroom) == (None, None)
    assert report.cost.mirrored_network_interfaces == 3
    assert report.cost.usd_per_hour == pytest.approx(0.045)
    text = render_table(report)
    assert "2/10" in text and "1/100" in text and "0.0450 USD/hour" in text


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["eni-a1", "eni-a2", "eni-c1", "eni-x", "eni-y"]),
            st.sampled_from(["tmt-small", "tmt-big", "tmt-nlb"]),
        ),
        max_size=30,
    )
)
def test_counts_add_up_for_any_set_of_sessions(sessions: list[tuple[str, str]]) -> None:
    report = diagnose(NODES, _inventory(sessions), [], support=SUPPORT, quotas=QUOTAS, price=QUOTAS.price(1.0))
    distinct_pairs = set(sessions)
    assert sum(t.sources for t in report.targets) == len(distinct_pairs)
    assert report.cost.mirrored_network_interfaces == len({eni for eni, _ in sessions})
    assert report.cost.usd_per_hour == pytest.approx(len({eni for eni, _ in sessions}))
    listed = {e.network_interface_id: e.sessions for n in report.nodes for e in n.network_interfaces}
    for eni, count in listed.items():
        assert count == sum(1 for s_eni, _ in sessions if s_eni == eni)
    for target in report.targets:
        if target.sources_limit is not None:
            assert target.headroom == target.sources_limit - target.sources
