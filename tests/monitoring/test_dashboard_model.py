"""The dashboard (charts/celery-stack/files/dashboards/celery-stack.json) checked with Grafana's own published
types (grafana-foundation-sdk; tests/monitoring/grafana_model.py): an import into Grafana cannot fail on its
structure. The mutations prove each check catches what it is for."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.monitoring import grafana_model
from tests.monitoring.conftest import DASHBOARD_FILE


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def test_dashboard_is_valid_for_grafanas_types() -> None:
    dashboard = _dashboard()
    assert grafana_model.problems(dashboard) == []
    decoded = grafana_model.decode(dashboard)
    # Not a bag of dicts: each panel's options and each query decoded into its plugin's own class.
    panels = [p for p in decoded.panels or [] if p.type_val != "row"]
    assert {type(p.options).__module__.rsplit(".", 1)[1] for p in panels} == {p.type_val for p in panels}
    assert {type(t).__module__ for p in panels for t in p.targets or []} == {
        "grafana_foundation_sdk.models.prometheus"}


def _panel(dashboard: dict[str, Any], panel_type: str) -> dict[str, Any]:
    return next(p for p in dashboard["panels"] if p["type"] == panel_type)


MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "unknown panel type": (lambda d: _panel(d, "timeseries").update(type="timeseriez"),
                           "panel type 'timeseriez' is no panel plugin"),
    "wrong field type": (lambda d: _panel(d, "stat")["gridPos"].update(h="4"), "grid_pos.h: '4' is not"),
    "unknown enum value": (lambda d: _panel(d, "timeseries")["options"]["legend"].update(displayMode="tabel"),
                           "legend.display_mode: 'tabel' is not"),
    "missing datasource": (lambda d: _panel(d, "stat")["targets"][0].pop("datasource"), "query A: no datasource"),
    "misspelt field": (lambda d: _panel(d, "timeseries")["targets"][0].update(legendFormt="{{name}}"),
                       "legendFormt: dropped"),
    "datasource of no plugin": (lambda d: _panel(d, "stat").update(datasource={"type": "prometeus", "uid": "x"}),
                                "'prometeus' is no datasource plugin"),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_structural_error_is_caught(mutation: str) -> None:
    mutate, expected = MUTATIONS[mutation]
    dashboard = copy.deepcopy(_dashboard())
    mutate(dashboard)
    found = grafana_model.problems(dashboard)
    assert any(expected in problem for problem in found), f"{mutation} not caught: {found}"
