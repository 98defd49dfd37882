"""The GitHub workflows: actionlint (built from its Go module), pinned actions, real make targets."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.tools import tool_path

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
VERSIONS = dict(
    line.split("=", 1) for line in (ROOT / "k8s-tests/cluster/versions.env").read_text().splitlines()
    if line and not line.startswith("#")
)
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<action>[\w.-]+/[\w./-]+)@(?P<ref>\S+)(?:\s+#\s*(?P<comment>.*))?$")

# actionlint is built with Go on first use (seconds to a minute).
pytestmark = pytest.mark.timeout(900)


def load(name: str) -> dict[Any, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def test_actionlint_passes() -> None:
    done = subprocess.run([str(tool_path("actionlint")), "-color=false", "ci.yml", "kind.yml"],
                          cwd=WORKFLOWS, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", ["ci.yml", "kind.yml"])
def test_actions_are_pinned_to_full_commit_shas_with_the_version(name: str) -> None:
    lines = [line for line in (WORKFLOWS / name).read_text().splitlines() if USES.match(line)]
    assert lines
    for line in lines:
        match = USES.match(line)
        assert match is not None
        assert re.fullmatch(r"[0-9a-f]{40}", match["ref"]), f"not pinned to a commit: {line.strip()}"
        assert match["comment"] and re.fullmatch(r"v\d+(\.\d+){1,2}", match["comment"]), line.strip()


def make_targets() -> set[str]:
    done = subprocess.run([shutil.which("make") or "make", "-C", str(ROOT), "-qp"], capture_output=True,
                          text=True, timeout=60, check=False)
    targets = set()
    for line in done.stdout.splitlines():
        match = re.match(r"^([A-Za-z][\w.-]*):(?!=)", line)
        if match:
            targets.add(match.group(1))
    return targets


@pytest.mark.parametrize("name", ["ci.yml", "kind.yml"])
def test_workflows_run_only_make_targets_that_exist(name: str) -> None:
    targets = make_targets()
    used = set()
    for step in steps(load(name)):
        for command in re.findall(r"\bmake\s+((?:[a-z][\w-]*\s*)+)", step.get("run", "")):
            used |= {word for word in command.split() if "=" not in word}
    assert used, f"{name} runs no make target"
    assert used <= targets, f"{name} runs unknown make targets: {sorted(used - targets)}"


def test_ci_lints_and_runs_make_test() -> None:
    runs = [step.get("run", "") for step in steps(load("ci.yml"))]
    assert "make lint" in runs and "make test" in runs


def test_kind_job_matrix_installs_and_tests_and_keeps_logs_on_failure() -> None:
    workflow = load("kind.yml")
    (job,) = workflow["jobs"].values()
    images = [entry["node_image"] for entry in job["strategy"]["matrix"]["include"]]
    assert len(images) == 2 and len({i.split("@")[0] for i in images}) == 2
    assert all(re.fullmatch(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}", i) for i in images)
    assert VERSIONS["KIND_NODE_IMAGE"] in images
    by_uses = {step["uses"].split("@")[0]: step for step in job["steps"] if "uses" in step}
    kind_step = by_uses["helm/kind-action"]["with"]
    assert kind_step["node_image"] == "${{ matrix.node_image }}"
    assert kind_step["config"] == "k8s-tests/cluster/kind.yaml" and (ROOT / kind_step["config"]).is_file()
    assert kind_step["version"] == "${{ env.KIND_VERSION }}"
    runs = " ".join(step.get("run", "") for step in job["steps"])
    assert "versions.env" in runs and "make kind-up" in runs and "make kind-test" in runs
    upload = by_uses["actions/upload-artifact"]
    assert upload["if"] == "failure()"
    collect = [step for step in job["steps"] if step.get("if") == "failure()" and "run" in step]
    assert collect and "kind export logs" in collect[0]["run"]
