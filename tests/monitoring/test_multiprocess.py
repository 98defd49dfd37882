"""Multiprocess mode: children's samples merged, dead children's files compacted without losing counts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import generate_latest

from apps.main.metrics import multiprocess as mp
from tests.monitoring.conftest import exposed_families

CHILD = textwrap.dedent("""
    import sys, time
    from prometheus_client import Counter, Gauge, Histogram
    c = Counter("mp_test_tasks", "t", ["name"])
    h = Histogram("mp_test_runtime", "t", ["name"], buckets=(1, 2))
    g = Gauge("mp_test_last", "t", ["name"], multiprocess_mode="max")
    n = int(sys.argv[1])
    c.labels("a").inc(n)
    h.labels("a").observe(0.5 * n)
    g.labels("a").set(100 + n)
""")


def _run_child(directory: Path, n: int) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run([sys.executable, "-c", CHILD, str(n)], env=env, check=True, timeout=60)


def _scrape(directory: Path, monkeypatch) -> dict:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    return exposed_families(generate_latest(mp.serving_registry()).decode())


def _value(families: dict, family: str, sample: str) -> float:
    return next(s.value for s in families[family]["samples"] if s.name == sample)


def test_dead_children_are_compacted_and_totals_stay_monotonic(tmp_path: Path, monkeypatch) -> None:
    for n in (1, 2, 3):  # three children that ran and exited (recycled by max_tasks_per_child)
        _run_child(tmp_path, n)
    assert len(list(tmp_path.glob("counter_*.db"))) == 3

    first = _scrape(tmp_path, monkeypatch)
    assert _value(first, "mp_test_tasks_total", "mp_test_tasks_total") == 6
    assert _value(first, "mp_test_runtime", "mp_test_runtime_count") == 3
    assert _value(first, "mp_test_runtime", "mp_test_runtime_sum") == 3.0
    assert _value(first, "mp_test_last", "mp_test_last") == 103
    # Compacted: one archive per kind instead of a file per dead process.
    assert sorted(p.name for p in tmp_path.glob("*.db")) == [
        "counter_archive.db", "gauge_max_archive.db", "histogram_archive.db"]

    _run_child(tmp_path, 4)  # a later child adds to the archive's totals, never resets them
    second = _scrape(tmp_path, monkeypatch)
    assert _value(second, "mp_test_tasks_total", "mp_test_tasks_total") == 10
    assert _value(second, "mp_test_runtime", "mp_test_runtime_count") == 4
    assert _value(second, "mp_test_last", "mp_test_last") == 104
    assert len(list(tmp_path.glob("counter_*.db"))) == 1


def test_wipe_clears_a_previous_container_samples(tmp_path: Path, monkeypatch) -> None:
    _run_child(tmp_path, 5)
    (tmp_path / "keep.txt").write_text("not a sample file")
    mp.wipe(tmp_path)
    assert not list(tmp_path.glob("*.db"))
    assert (tmp_path / "keep.txt").exists()
    assert "mp_test_tasks_total" not in _scrape(tmp_path, monkeypatch)


def test_without_the_directory_the_default_registry_is_served(monkeypatch) -> None:
    from prometheus_client import REGISTRY

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert mp.serving_registry() is REGISTRY
