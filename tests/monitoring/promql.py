"""A real Prometheus's HTTP API, and dashboard queries made runnable the way Grafana makes them."""

from __future__ import annotations

import json
import math
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any


def http_get(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


class PrometheusAPI:
    def __init__(self, base: str) -> None:
        self.base = base

    def _get(self, path: str, **params: Any) -> Any:
        body = json.loads(http_get(f"{self.base}{path}?" + urllib.parse.urlencode(params, doseq=True)))
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self._get("/api/v1/query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        return self._get("/api/v1/query_range", query=expr, start=start, end=end, step=step)["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def label_values(self, selector: str, label: str, start: float) -> list[str]:
        """Grafana's ``label_values(selector, label)``: the label's values over the series ``selector`` matches."""
        series = self._get("/api/v1/series", **{"match[]": selector, "start": start})
        return sorted({s[label] for s in series if s.get(label)})

    def alerts(self) -> list[dict]:
        return self._get("/api/v1/alerts")["alerts"]

    def alert_state(self, alertname: str, **match: str) -> str | None:
        for alert in self.alerts():
            found = alert["labels"]
            if found.get("alertname") == alertname and all(found.get(k) == v for k, v in match.items()):
                return alert["state"]
        return None

    def targets(self) -> list[dict]:
        return self._get("/api/v1/targets", state="active")["activeTargets"]


def finite_values(result: list[dict]) -> Iterator[float]:
    """Every finite sample of an instant or range query result (NaN and ±Inf draw nothing)."""
    for series in result:
        for _, value in series.get("values") or [series["value"]]:
            if math.isfinite(number := float(value)):
                yield number


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Grafana's interpolation of ``$name`` / ``${name}`` in a query; every variable must have a value."""
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"no value for ${name} in {expr}"
        return values[name]

    return _VARIABLE.sub(one, expr)


def regex_of(values: list[str]) -> str:
    """A multi-value / "All" variable inside ``=~"…"``, as Grafana writes it for Prometheus: ``(a|b)``."""
    return "(" + "|".join(re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", v) for v in values) + ")"


_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.*),\s*(?P<label>\w+)\s*\)\s*$", re.DOTALL)


def label_values_query(query: Any) -> tuple[str, str]:
    """(selector, label) of a Grafana ``label_values(selector, label)`` variable query (text or object)."""
    text = query.get("query", "") if isinstance(query, dict) else str(query)
    match = _LABEL_VALUES.match(text)
    assert match, f"not a label_values() query: {text!r}"
    return match["selector"].strip(), match["label"]


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])
