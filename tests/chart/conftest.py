"""Shared fixtures of the chart tests: both helm versions, the defaults and every values example."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.render import example_files, render_chart

HELMS = ("helm3", "helm4")


@pytest.fixture(params=HELMS)
def helm(request: pytest.FixtureRequest) -> str:
    return request.param


def example_ids() -> list[str]:
    return [p.stem for p in example_files()]


@pytest.fixture(params=[None, *example_files()], ids=["defaults", *example_ids()])
def values_file(request: pytest.FixtureRequest) -> Path | None:
    return request.param


@pytest.fixture
def manifests(values_file: Path | None) -> list[dict]:
    """Every manifest of the defaults or of one example (helm 3)."""
    return render_chart(values_files=[values_file] if values_file else ())


def pod_specs(manifests: list[dict]) -> list[tuple[str, dict]]:
    """(name, pod spec) of every workload, Job and Pod."""
    out = []
    for m in manifests:
        if m["kind"] in ("Deployment", "StatefulSet", "Job"):
            out.append((f"{m['kind']}/{m['metadata']['name']}", m["spec"]["template"]["spec"]))
        elif m["kind"] == "Pod":
            out.append((f"Pod/{m['metadata']['name']}", m["spec"]))
    return out


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}
