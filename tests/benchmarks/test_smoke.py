"""The benchmark's smoke run (``make bench`` runs the full sizes): every measurement (a)-(i) on real servers
and workers, tiny sizes, a figure for each. Speed is not asserted: this is no timed test."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmarks.servers import ROOT
from tests.support.timeouts import scaled

pytestmark = pytest.mark.live

#: The smoke run takes a minute or two on an idle 2-core machine; a loaded one gets far more.
SMOKE_TIMEOUT = scaled(900)


@pytest.mark.timeout(SMOKE_TIMEOUT + 60)
def test_smoke_run_measures_every_section(tmp_path: Path) -> None:
    kept = _kept_files()
    run = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks", "--smoke", "--out", str(tmp_path), "--no-docs",
         "--only", "abcdefghi"],  # (h), the encrypted payloads, and (i), large ones, too: `make bench` runs (a)-(g)
        cwd=ROOT, capture_output=True, text=True, timeout=SMOKE_TIMEOUT,
    )
    output = f"--- stdout ---\n{run.stdout[-6000:]}\n--- stderr ---\n{run.stderr[-6000:]}"
    assert run.returncode == 0, output
    [result] = tmp_path.glob("*.json")
    payload = json.loads(result.read_text())
    sections = payload["sections"]
    assert sorted(sections) == list("abcdefghi"), output
    for name, section in sections.items():
        assert section["figures"], f"({name}) has no figures"
        for figure, value in section["figures"].items():
            assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (name, figure, value)
    assert sections["d"]["mismatches"] == 0, sections["d"]["runs"]
    assert all(r["verification"]["mismatches"] == 0 for r in sections["d"]["runs"])
    assert payload["errors"] == [], payload["errors"]
    assert {p.name for p in tmp_path.glob("*.png")} == {f"{payload['date']}-throughput.png",
                                                       f"{payload['date']}-latency.png"}
    # The table and the targets were printed.
    assert "figure" in run.stdout and "(b) bare Celery no-op" in run.stdout, output
    assert "(g) high-priority worker RSS" in run.stdout, output
    assert "(h) encode+decode per task, json+fernet" in run.stdout, output
    assert "(i) 1 MB payload" in run.stdout and "claim-checked: its claim in PostgreSQL" in run.stdout, output
    assert all(r["claims_stored"] == r["tasks"] for r in sections["i"]["runs"] if r["mode"] == "claim-checked")
    assert any(line.startswith(("PASS", "MISS")) for line in run.stdout.splitlines()), output
    assert _kept_files() == kept, "a smoke run must not touch docs/benchmarks.md nor bench/results/"


def _kept_files() -> dict[str, bytes]:
    paths = [ROOT / "docs" / "benchmarks.md", *sorted((ROOT / "bench" / "results").glob("*"))]
    return {str(path): path.read_bytes() for path in paths if path.is_file()}
