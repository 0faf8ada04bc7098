"""Decisions of ``trafficmirror capture``, as pure functions: what the user asked for (the target,
the label selector, the filter, the duration), which MirrorTarget to use, and the manifests to create.

Nothing here talks to the cluster; ``command`` does, and hands what it read to these functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

API_VERSION = "trafficmirror.io/v1alpha1"
CREATED_BY_LABEL = "app.kubernetes.io/managed-by"
CREATED_BY = "trafficmirror-capture"
POOL_LABEL = "trafficmirror.io/pool"
# One value per run of the command: what it created is found by this label even when the reply to a create
# was lost (a Ctrl-C between the request and its answer).
RUN_LABEL = "trafficmirror.io/capture-run"
MAX_FILTER_RULES = 10  # AWS's rules per filter (ingress and egress together), enforced by the CRD too
ACCEPT_ALL_RULE_NUMBER = 100
MAX_SELECTOR_TERMS = 20  # matchLabels entries, and matchExpressions, the CRD accepts in a selector

PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
_KINDS = {
    "pod": "pod",
    "pods": "pod",
    "po": "pod",
    "deployment": "deployment",
    "deployments": "deployment",
    "deploy": "deployment",
    "node": "node",
    "nodes": "node",
    "no": "node",
}
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")
_SET_OPERATORS = {"in": "In", "notin": "NotIn"}


class PlanError(ValueError):
    """The request cannot be turned into a capture; the message says what to change."""


@dataclass(frozen=True)
class CaptureTarget:
    """What to capture: ``pod/web-1``, ``deployment/web``, ``node/ip-10-0-1-5``, or a label selector."""

    kind: str  # pod | deployment | node | selector
    name: str = ""
    selector: dict[str, Any] = field(default_factory=dict)  # a LabelSelector, for kind selector


def parse_target(text: str | None, selector: str | None) -> CaptureTarget:
    if text and selector:
        raise PlanError(f"give either {text} or -l {selector}, not both")
    if selector is not None:
        return CaptureTarget("selector", selector=parse_label_selector(selector))
    if not text:
        raise PlanError("what to capture: pod/<name>, deployment/<name>, node/<name> or -l <label selector>")
    kind, sep, name = text.partition("/")
    if not sep or kind.lower() not in _KINDS:
        raise PlanError(f"{text!r}: expected pod/<name>, deployment/<name> or node/<name>")
    if not _DNS_SUBDOMAIN.match(name):
        raise PlanError(f"{text!r}: {name!r} is not a Kubernetes object name")
    return CaptureTarget(_KINDS[kind.lower()], name)


def parse_label_selector(text: str) -> dict[str, Any]:
    """kubectl's ``-l`` syntax (``app=web,tier!=db,env in (a,b),!legacy``) as a LabelSelector."""
    if not text.strip():
        raise PlanError(f"-l {text!r}: an empty selector would capture every pod of the namespace")
    match_labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for term in _split_terms(text):
        set_based = re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term)
        if set_based:
            key, operator, values = set_based.groups()
            items = sorted({v.strip() for v in values.split(",") if v.strip()})
            if not items:
                raise PlanError(f"-l {text!r}: {term!r} lists no values")
            for value in items:
                _check_value(text, value)
            expressions.append({"key": _check_key(text, key), "operator": _SET_OPERATORS[operator], "values": items})
        elif term.startswith("!"):
            expressions.append({"key": _check_key(text, term[1:].strip()), "operator": "DoesNotExist"})
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            expressions.append(
                {"key": _check_key(text, key), "operator": "NotIn", "values": [_check_value(text, value)]}
            )
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            match_labels[_check_key(text, key)] = _check_value(text, value)
        else:
            expressions.append({"key": _check_key(text, term), "operator": "Exists"})
    if not match_labels and not expressions:
        raise PlanError(f"-l {text!r}: an empty selector would capture every pod of the namespace")
    if len(match_labels) > MAX_SELECTOR_TERMS or len(expressions) > MAX_SELECTOR_TERMS:
        raise PlanError(f"-l {text!r}: at most {MAX_SELECTOR_TERMS} labels and {MAX_SELECTOR_TERMS} expressions")
    selector: dict[str, Any] = {}
    if match_labels:
        selector["matchLabels"] = match_labels
    if expressions:
        selector["matchExpressions"] = expressions
    return selector


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    terms.append(current.strip())
    if depth != 0 or any(not t for t in terms):
        raise PlanError(f"-l {text!r}: not a label selector (e.g. app=web,tier!=db,env in (prod,staging))")
    return terms


def _check_key(text: str, key: str) -> str:
    if not _LABEL_KEY.match(key) or len(key) > 317:
        raise PlanError(f"-l {text!r}: {key!r} is not a label key")
    return key


def _check_value(text: str, value: str) -> str:
    if not _LABEL_VALUE.match(value):
        raise PlanError(f"-l {text!r}: {value!r} is not a label value")
    return value


def parse_duration(text: str) -> tuple[str, int]:
    """``--for 90s|5m|1h30m|300`` -> (the spec's duration string, seconds)."""
    cleaned = text.strip().lower()
    if cleaned.isdigit():
        cleaned += "s"
    m = _DURATION.fullmatch(cleaned)
    if not cleaned or not m:
        raise PlanError(f"--for {text!r}: expected a duration such as 30s, 5m or 1h30m")
    seconds = int(m["h"] or 0) * 3600 + int(m["m"] or 0) * 60 + int(m["s"] or 0)
    if seconds <= 0:
        raise PlanError(f"--for {text!r}: the duration must be longer than 0s")
    return cleaned, seconds


def format_duration(seconds: int) -> str:
    """Seconds as the spec's duration string (``1h2m5s``), at least ``1s``."""
    seconds = max(1, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if v) or "1s"


@dataclass(frozen=True)
class PortMatch:
    protocol: int
    from_port: int | None = None
    to_port: int | None = None


def parse_filter(text: str | None) -> list[PortMatch]:
    """``--filter tcp:443,udp:53,tcp:8000-8100,icmp`` -> what to mirror. None or empty: everything."""
    if not text:
        return []
    matches = []
    for item in (i.strip().lower() for i in text.split(",")):
        proto, _, ports = item.partition(":")
        if proto not in PROTOCOLS:
            raise PlanError(f"--filter {text!r}: {item!r}: protocol must be one of {', '.join(PROTOCOLS)}")
        if not ports:
            matches.append(PortMatch(PROTOCOLS[proto]))
            continue
        if proto not in ("tcp", "udp"):
            raise PlanError(f"--filter {text!r}: {item!r}: only tcp and udp have ports")
        low, _, high = ports.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise PlanError(f"--filter {text!r}: {item!r}: expected a port or a range, e.g. tcp:443 or tcp:8000-8100")
        first, last = int(low), int(high or low)
        if not 0 <= first <= last <= 65535:
            raise PlanError(f"--filter {text!r}: {item!r}: ports are 0-65535, the first not above the last")
        matches.append(PortMatch(PROTOCOLS[proto], first, last))
    return matches


def filter_rules(matches: list[PortMatch]) -> dict[str, list[dict[str, Any]]]:
    """MirrorFilter rules for the matches, in both directions and on both ends: ``tcp:443`` mirrors the pod
    serving on 443 (to port 443 in, from port 443 out) and the pod calling port 443 (the reverse).

    With no matches, one accept-all rule per direction. AWS allows 10 rules per filter: a port costs 4,
    a bare protocol 2."""
    if not matches:
        everything = {"ruleNumber": ACCEPT_ALL_RULE_NUMBER, "action": "accept"}
        return {"ingressRules": [dict(everything)], "egressRules": [dict(everything)]}
    ingress: list[dict[str, Any]] = []
    egress: list[dict[str, Any]] = []
    for match in matches:
        if match.from_port is None:
            sides: list[str | None] = [None]
        else:
            sides = ["destinationPortRange", "sourcePortRange"]
        for side in sides:
            for rules in (ingress, egress):
                rule: dict[str, Any] = {
                    "ruleNumber": ACCEPT_ALL_RULE_NUMBER + len(rules),
                    "action": "accept",
                    "protocol": match.protocol,
                }
                if side is not None:
                    rule[side] = {"fromPort": match.from_port, "toPort": match.to_port}
                rules.append(rule)
    if len(ingress) + len(egress) > MAX_FILTER_RULES:
        raise PlanError(
            f"--filter: {len(matches)} entries need {len(ingress) + len(egress)} filter rules (a port mirrors both "
            f"directions to and from it: 4 rules; a bare protocol 2); AWS allows {MAX_FILTER_RULES} per filter. "
            "Use a port range, a bare protocol, or fewer entries"
        )
    return {"ingressRules": ingress, "egressRules": egress}


@dataclass(frozen=True)
class TargetChoice:
    target_ref: str | None = None
    target_selector: dict[str, str] | None = None
    description: str = ""


def ready_targets(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        t
        for t in targets
        if (t.get("status") or {}).get("phase") == "Ready" and not t["metadata"].get("deletionTimestamp")
    ]


def choose_target(
    targets: list[dict[str, Any]], namespace: str, requested: str | None = None, pool: str | None = None
) -> TargetChoice:
    """The MirrorTarget for the session: the one named, the pool given, the only Ready one, or an error
    that says what exists and what to do."""
    if requested and pool:
        raise PlanError("give either --target or --pool, not both")
    names = {t["metadata"]["name"]: t for t in targets}
    ready = ready_targets(targets)
    if requested:
        if requested not in names:
            raise PlanError(f"no MirrorTarget {requested!r} in namespace {namespace}{_listing(targets)}")
        phase = (names[requested].get("status") or {}).get("phase") or "not reconciled yet"
        if names[requested] not in ready:
            raise PlanError(
                f"MirrorTarget {namespace}/{requested} is {phase}, not Ready: "
                f"see kubectl describe mirrortarget -n {namespace} {requested}"
            )
        return TargetChoice(target_ref=requested, description=f"MirrorTarget {requested}")
    if pool:
        key, sep, value = pool.partition("=")
        if not sep:
            key, value = POOL_LABEL, pool
        members = [t for t in ready if (t["metadata"].get("labels") or {}).get(key) == value]
        if not members:
            raise PlanError(
                f"no Ready MirrorTarget in namespace {namespace} carries the label {key}={value}{_listing(targets)}"
            )
        return TargetChoice(target_selector={key: value}, description=f"pool {key}={value} ({len(members)} Ready)")
    if not ready:
        raise PlanError(no_target_message(namespace, targets))
    if len(ready) == 1:
        name = ready[0]["metadata"]["name"]
        return TargetChoice(target_ref=name, description=f"MirrorTarget {name}")
    pools = sorted({v for t in ready if (v := (t["metadata"].get("labels") or {}).get(POOL_LABEL))})
    hint = f" or --pool {pools[0]} (MirrorTargets labelled {POOL_LABEL}={pools[0]})" if pools else ""
    raise PlanError(
        f"{len(ready)} Ready MirrorTargets in namespace {namespace} "
        f"({', '.join(sorted(t['metadata']['name'] for t in ready))}): choose one with --target NAME{hint}"
    )


def _listing(targets: list[dict[str, Any]]) -> str:
    if not targets:
        return " (there is none)"
    states = (f"{t['metadata']['name']} ({(t.get('status') or {}).get('phase') or 'not reconciled'})" for t in targets)
    return f" (there are: {', '.join(sorted(states))})"


def no_target_message(namespace: str, targets: list[dict[str, Any]]) -> str:
    seen = f"; MirrorTargets here: {_listing(targets)[13:-1]}" if targets else ""
    return (
        f"no Ready MirrorTarget in namespace {namespace}{seen}. A capture needs one: the node that receives the "
        "mirrored traffic and runs the capture agent. Label a Nitro node and create a target on it:\n"
        "  kubectl label node <capture-node> trafficmirror.io/capture=true\n"
        f"  kubectl apply -n {namespace} -f - <<EOF\n"
        f"  apiVersion: {API_VERSION}\n  kind: MirrorTarget\n  metadata: {{name: capture}}\n"
        "  spec: {nodeName: <capture-node>}\n  EOF\n"
        "then run this command again (see the README's quick start)"
    )


NOT_INSTALLED = (
    "trafficmirror is not installed in this cluster (the API server has no MirrorSession kind). Install it:\n"
    "  helm install trafficmirror charts/trafficmirror -n trafficmirror --create-namespace "
    "--set clusterName=<name> --set aws.region=<region>\n"
    "or kubectl apply -f deploy/trafficmirror.yaml (see the README's quick start)"
)


def session_source(
    target: CaptureTarget, pod: dict[str, Any] | None = None, deployment: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``spec.source`` for what the user named; ``pod``/``deployment`` are the objects read for them."""
    if target.kind == "node":
        return {"nodeName": target.name}
    if target.kind == "selector":
        return {"podSelector": target.selector}
    if target.kind == "pod":
        labels = ((pod or {}).get("metadata") or {}).get("labels") or {}
        # The pod's own labels say which workload it is; podNames picks this one pod among those that share
        # them. A pod with more labels than a selector may hold is picked by its name alone.
        selector = {"matchLabels": dict(labels)} if 0 < len(labels) <= MAX_SELECTOR_TERMS else {}
        return {"podSelector": selector, "podNames": [target.name]}
    if target.kind == "deployment":
        selector = ((deployment or {}).get("spec") or {}).get("selector") or {}
        if not selector.get("matchLabels") and not selector.get("matchExpressions"):
            raise PlanError(f"deployment/{target.name} has no pod selector")
        return {"podSelector": {k: v for k, v in selector.items() if k in ("matchLabels", "matchExpressions")}}
    raise PlanError(f"unknown kind {target.kind!r}")


def object_prefix(target: CaptureTarget) -> str:
    """generateName for the objects of one capture: ``capture-<kind>-<name>-`` within 63 characters."""
    base = "selector" if target.kind == "selector" else f"{target.kind}-{target.name}"
    base = re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-")
    return f"capture-{base}"[:56].rstrip("-") + "-"


def labels(run_id: str) -> dict[str, str]:
    return {CREATED_BY_LABEL: CREATED_BY, RUN_LABEL: run_id}


def build_filter(prefix: str, namespace: str, matches: list[PortMatch], what: str, run_id: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "MirrorFilter",
        "metadata": {"generateName": prefix, "namespace": namespace, "labels": labels(run_id)},
        "spec": {"description": f"trafficmirror capture {what}"[:200], **filter_rules(matches)},
    }


def build_session(
    prefix: str,
    namespace: str,
    source: dict[str, Any],
    choice: TargetChoice,
    filter_name: str,
    duration: str | None,
    what: str,
    run_id: str,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "description": f"trafficmirror capture {what}"[:200],
        "source": source,
        "filterRef": {"name": filter_name},
    }
    if choice.target_ref:
        spec["targetRef"] = {"name": choice.target_ref}
    else:
        spec["targetSelector"] = {"matchLabels": dict(choice.target_selector or {})}
    if duration:
        spec["duration"] = duration
    return {
        "apiVersion": API_VERSION,
        "kind": "MirrorSession",
        "metadata": {"generateName": prefix, "namespace": namespace, "labels": labels(run_id)},
        "spec": spec,
    }


def describe(target: CaptureTarget, selector_text: str | None) -> str:
    return f"-l {selector_text}" if target.kind == "selector" else f"{target.kind}/{target.name}"
