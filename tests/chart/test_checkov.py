"""Security scan of the rendered chart: no failed checkov check without a documented reason (deploy/.checkov.yaml)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.chart.conftest import render
from trafficmirror_testbed.kube import REPO_ROOT

CONFIG = REPO_ROOT / "deploy" / ".checkov.yaml"


def checkov_binary() -> Path:
    """checkov pins boto3 and packaging to versions the project does not use, so it lives in its own venv
    (`make checkov`); CHECKOV or a checkov on the project's venv or PATH also do."""
    cache = Path(os.environ.get("TRAFFICMIRROR_CACHE", Path.home() / ".cache" / "trafficmirror"))
    candidates = [os.environ.get("CHECKOV"), Path(sys.prefix) / "bin" / "checkov", cache / "checkov-venv/bin/checkov"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    found = shutil.which("checkov")
    if found is None:
        pytest.fail("checkov not found: run `make checkov` (or set CHECKOV=/path/to/checkov)")
    return Path(found)


def scan(manifest: Path) -> dict[str, object]:
    result = subprocess.run(
        [str(checkov_binary()), "--config-file", str(CONFIG), "-f", str(manifest), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert not failed, f"checkov failures without a documented reason in {CONFIG}: {failed}"
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 50  # it really scanned the workloads
    return report


def test_plain_manifest_passes_checkov() -> None:
    scan(REPO_ROOT / "deploy" / "trafficmirror.yaml")


def test_namespaced_s3_variant_passes_checkov(bin_dir: Path, tmp_path: Path) -> None:
    docs = render(
        bin_dir,
        "--set", "rbac.namespaced=true", "--set", "capture.s3.bucket=pcaps", "--set", "capture.s3.sse=aws:kms",
        "--set", "capture.storage.type=emptyDir",
    )  # fmt: skip
    manifest = tmp_path / "variant.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    scan(manifest)


def test_every_skipped_check_has_a_reason() -> None:
    lines = CONFIG.read_text().splitlines()
    skips = [i for i, line in enumerate(lines) if re.match(r"\s+- CKV2?_K8S_\d+\s*$", line)]
    assert skips == [i for i, line in enumerate(lines) if re.match(r"\s+- CKV", line)]
    for index in skips:
        assert lines[index - 1].strip().startswith("#"), f"no reason above {lines[index].strip()}"
    assert {line.strip()[2:] for line in (lines[i] for i in skips)} == set(
        yaml.safe_load(CONFIG.read_text())["skip-check"]
    )
