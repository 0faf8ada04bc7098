"""The CRD YAML in crds/ is generated from the pydantic models and must not drift from them."""

from __future__ import annotations

import yaml

from trafficmirror.api import KINDS
from trafficmirror.api.crd import crd_files, structural_schema
from trafficmirror_testbed.kube import REPO_ROOT


def test_checked_in_crds_match_the_models() -> None:
    stale = [
        name
        for name, text in crd_files().items()
        if not (REPO_ROOT / "crds" / name).exists() or (REPO_ROOT / "crds" / name).read_text() != text
    ]
    assert stale == [], f"crds/ is out of date with the models, run `make crds`: {stale}"


def _walk(node: object) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_walk(value))
    return found


def test_schemas_are_structural() -> None:
    for kind in KINDS:
        for model in (kind.spec_model, kind.status_model):
            nodes = _walk(structural_schema(model))
            offending = {k for n in nodes for k in n if k in {"$ref", "$defs", "anyOf", "title", "const"}}
            assert offending == set(), f"{model.__name__} keeps non-structural keywords {offending}"
            # every node that declares properties or items also declares its type
            untyped = [n for n in nodes if ("properties" in n or "items" in n) and "type" not in n]
            assert untyped == [], f"{model.__name__} has untyped nodes"


def test_every_crd_has_status_subresource_printer_columns_and_short_names() -> None:
    for name, text in crd_files().items():
        crd = yaml.safe_load(text)
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}, name
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert columns[:2] == ["Phase", "AWS-ID"] and columns[-2:] == ["Reason", "Age"], name
        assert crd["spec"]["names"]["shortNames"], name
        assert "trafficmirror" in crd["spec"]["names"]["categories"], name


def test_the_readme_field_reference_matches_the_models(tmp_path: object) -> None:
    from trafficmirror.api.reference import END, START, reference_markdown

    readme = (REPO_ROOT / "README.md").read_text()
    assert START in readme and END in readme
    generated = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert generated == reference_markdown().strip(), "README field reference is stale: run `make crds`"
