"""checkov over the rendered manifests of the defaults and every values example: zero failed checks, the
only skips being the justified ones of charts/celery-stack/.checkov.yaml."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.support.render import CHART, example_files, render_chart
from tests.support.tools import tool_path

CONFIG = CHART / ".checkov.yaml"


def test_every_skip_has_a_reason() -> None:
    lines = CONFIG.read_text().splitlines()
    skips = yaml.safe_load(CONFIG.read_text())["skip-check"]
    for check in skips:
        i = next(n for n, line in enumerate(lines) if line.strip() == f"- {check}")
        assert lines[i - 1].strip().startswith("#") or lines[i - 1].strip().startswith("- CKV"), check
    assert len(skips) == len(set(skips))


def test_checkov_passes_on_every_example(tmp_path: Path) -> None:
    checkov = tool_path("checkov")
    for values in [None, *example_files()]:
        manifests = render_chart(values_files=[values] if values else ())
        name = values.stem if values else "defaults"
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(manifests))
    done = subprocess.run([str(checkov), "--config-file", str(CONFIG), "-d", str(tmp_path), "--framework",
                           "kubernetes", "--compact", "-o", "json"],
                          capture_output=True, text=True, timeout=300, check=False)
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [f"{f['check_id']} {f['resource']} ({f['file_path']})"
              for r in reports for f in r["results"]["failed_checks"]]
    passed = sum(len(r["results"]["passed_checks"]) for r in reports)
    assert not failed, "\n".join(failed)
    assert passed > 100, "checkov checked (almost) nothing"
