"""Generates the CustomResourceDefinitions from the pydantic models, so the two cannot drift.

pydantic's JSON Schema is not a structural CRD schema as it is: it uses $defs/$ref, spells
optional fields as anyOf-with-null and adds titles. This module inlines the references, folds the
optionals and keeps only keywords the apiserver accepts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from trafficmirror.api import GROUP, KINDS, MIRROR_SESSION, VERSION, Kind

_DROPPED_KEYWORDS = {"title", "$defs"}
CATEGORIES = ["trafficmirror", "aws"]


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _inline(merged, defs)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b != {"type": "null"}]
        if len(branches) == 1:
            outer = {k: v for k, v in node.items() if k != "anyOf"}
            inner = _inline(branches[0], defs)
            return _inline({**inner, **outer, **_merged_validations(inner, outer)}, defs)
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYWORDS:
            continue
        if key == "default" and value in (None, {}, []):
            continue
        if key == "const":
            result["enum"] = [value]
            continue
        if key == "properties":
            result[key] = {name: _inline(prop, defs) for name, prop in value.items()}
        else:
            result[key] = _inline(value, defs)
    return result


def _merged_validations(inner: dict[str, Any], outer: dict[str, Any]) -> dict[str, Any]:
    rules = [*inner.get("x-kubernetes-validations", []), *outer.get("x-kubernetes-validations", [])]
    return {"x-kubernetes-validations": rules} if rules else {}


def structural_schema(model: Any) -> dict[str, Any]:
    """The model's JSON Schema made structural: no $ref, no anyOf-with-null, no titles."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _inline(raw, raw.get("$defs", {}))
    return schema


def _status_schema(kind: Kind) -> dict[str, Any]:
    schema = structural_schema(kind.status_model)
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def _printer_columns(kind: Kind) -> list[dict[str, Any]]:
    columns: list[dict[str, Any]] = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "AWS-ID", "type": "string", "jsonPath": f".status.{kind.aws_id_field}"},
    ]
    if kind is MIRROR_SESSION:
        columns.append({"name": "VNI", "type": "integer", "jsonPath": ".status.virtualNetworkId"})
        # -o wide: the MirrorTarget (with targetSelector: the one chosen from the pool).
        columns.append({"name": "Target", "type": "string", "jsonPath": ".status.targetName", "priority": 1})
        # -o wide: when a time-boxed capture ends (the TimeBox condition says how long is left).
        columns.append({"name": "Stop-At", "type": "string", "jsonPath": ".status.stopAt", "priority": 1})
    columns += [
        {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return columns


def build_crd(kind: Kind) -> dict[str, Any]:
    spec_schema = structural_schema(kind.spec_model)
    spec_schema["description"] = (kind.spec_model.__doc__ or f"Desired state of a {kind.kind}.").strip()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": CATEGORIES,
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(kind),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": _status_schema(kind),
                            },
                        }
                    },
                }
            ],
        },
    }


def render(crd: dict[str, Any]) -> str:
    header = "# Generated by `make crds` from operator/trafficmirror/api; do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=120)


def crd_files() -> dict[str, str]:
    """File name → YAML text for every kind."""
    return {f"{GROUP}_{kind.plural}.yaml": render(build_crd(kind)) for kind in KINDS}


def main(argv: list[str] | None = None) -> int:
    out = Path((argv or sys.argv[1:] or ["crds"])[0])
    out.mkdir(parents=True, exist_ok=True)
    for name, text in crd_files().items():
        (out / name).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
