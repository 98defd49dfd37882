"""The defaults and every values example render with helm 3 and helm 4, and lint strictly."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.render import CHART, example_files, render_chart, run_helm


def test_every_example_renders_with_both_helms(helm: str, values_file: Path | None) -> None:
    manifests = render_chart(helm=helm, values_files=[values_file] if values_file else ())
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "ConfigMap", "Service", "Job"} <= kinds


def test_both_helms_render_the_same_objects(values_file: Path | None) -> None:
    files = [values_file] if values_file else ()
    names = [{(m["kind"], m["metadata"]["name"]) for m in render_chart(helm=h, values_files=files)}
             for h in ("helm3", "helm4")]
    assert names[0] == names[1]


@pytest.mark.parametrize("values", [None, *example_files()], ids=["defaults", *[p.stem for p in example_files()]])
def test_lint_strict(helm: str, values: Path | None) -> None:
    # lint knows no cluster APIs: the CRD objects render through the documented skip.
    args = ["lint", "--strict", str(CHART), "--set", "crds.skipCapabilitiesCheck=true"]
    if values:
        args += ["--values", str(values)]
    done = run_helm(args, helm=helm, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def test_examples_exist() -> None:
    stems = {p.stem for p in example_files()}
    assert {"kind", "production", "minimal", "hpa-prometheus-adapter", "scale-to-zero"} <= stems
