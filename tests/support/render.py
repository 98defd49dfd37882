"""Render the chart with a real helm binary: the shared helper of the chart, monitoring and cluster tests."""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.support.tools import helm_binary

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "celery-stack"
VALUES_EXAMPLES = ROOT / "values-examples"

#: APIs of the optional CRD objects, announced to `helm template` as a cluster running KEDA and the
#: Prometheus Operator would (the chart fails clearly when they are enabled but not served).
CRD_API_VERSIONS: tuple[str, ...] = (
    "keda.sh/v1alpha1",
    "keda.sh/v1alpha1/ScaledObject",
    "keda.sh/v1alpha1/TriggerAuthentication",
    "monitoring.coreos.com/v1",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PodMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)


class HelmError(RuntimeError):
    """helm exited non-zero; ``stderr`` holds its message (e.g. a schema error naming the key)."""

    def __init__(self, cmd: list[str], stderr: str) -> None:
        super().__init__(f"{' '.join(cmd)} failed:\n{stderr}")
        self.stderr = stderr


def example_files() -> list[Path]:
    return sorted(VALUES_EXAMPLES.glob("*.yaml"))


def run_helm(args: list[str], *, helm: str = "helm3", check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [str(helm_binary(helm)), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if check and done.returncode != 0:
        raise HelmError(cmd, done.stderr)
    return done


@functools.lru_cache(maxsize=256)
def _render(values_json: str, helm: str, values_files: tuple[str, ...], release: str, namespace: str,
            extra_args: tuple[str, ...], api_versions: bool) -> str:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for path in values_files:
        args += ["--values", path]
    if values_json != "null":
        # JSON is YAML: one values file with the test's overrides, applied last.
        args += ["--values", "/dev/stdin"]
    if api_versions:
        for api in CRD_API_VERSIONS:
            args += ["--api-versions", api]
    args += list(extra_args)
    cmd = [str(helm_binary(helm)), *args]
    done = subprocess.run(cmd, input=values_json if values_json != "null" else None, capture_output=True,
                          text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise HelmError(cmd, done.stderr)
    return done.stdout


def render_chart(
    values: Mapping[str, Any] | None = None,
    *,
    helm: str = "helm3",
    values_files: Iterable[str | Path] = (),
    release: str = "rel",
    namespace: str = "ns",
    extra_args: Iterable[str] = (),
    api_versions: bool = True,
) -> list[dict]:
    """`helm template` of the chart as a list of manifests (cached per arguments within a session).

    ``api_versions`` announces the KEDA and Prometheus Operator APIs; pass False to render as against a
    cluster without them. Raises HelmError with helm's message on failure.
    """
    text = _render(json.dumps(values, sort_keys=True) if values is not None else "null", helm,
                   tuple(str(p) for p in values_files), release, namespace, tuple(extra_args), api_versions)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(manifests: list[dict], kind: str, name: str | None = None) -> list[dict]:
    """Manifests of a kind (and name)."""
    return [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]


def one(manifests: list[dict], kind: str, name: str) -> dict:
    found = find(manifests, kind, name)
    names = [m["metadata"]["name"] for m in manifests]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)} among {names}"
    return found[0]
