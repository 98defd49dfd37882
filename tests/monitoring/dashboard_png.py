"""Draw the dashboard's panels from a live Prometheus with matplotlib: a rendering of the dashboard's queries,
not Grafana (Grafana is AGPL and not used here; tests/monitoring/grafana_model.py checks the JSON instead).

The live test calls it after its load; set CELERY_STACK_DASHBOARD_PNG=path to keep the picture
(docs/images/celery-stack-dashboard.png was made that way).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.monitoring.conftest import DASHBOARD_FILE
from tests.monitoring.promql import PrometheusAPI, substitute

TITLE = ("{title}: each panel's PromQL query evaluated by the live test's Prometheus, "
         "drawn with matplotlib (a rendering of the queries, not Grafana)")


def _legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip() or "value"


def render(api: PrometheusAPI, path: Path, *, variables: dict[str, str], start: float, end: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dashboard = json.loads(DASHBOARD_FILE.read_text())
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_height = 0.32  # inches per grid row
    fig = plt.figure(figsize=(24, rows * unit_height), facecolor="#111217")
    fig.suptitle(TITLE.format(title=dashboard["title"]), color="white", fontsize=15, y=0.998)
    step = max(1.0, (end - start) / 200)
    for panel in panels:
        g = panel["gridPos"]
        left, width = g["x"] / 24 + 0.022, g["w"] / 24 - 0.028  # room for the y tick labels
        bottom = 1 - (g["y"] + g["h"]) / rows + 0.006
        height = g["h"] / rows - 0.012
        if panel["type"] == "row":
            fig.text(0.004, 1 - (g["y"] + 0.8) / rows, panel["title"], color="#ccccdc", fontsize=13, weight="bold")
            continue
        ax = fig.add_axes((left, bottom, width, height * 0.86), facecolor="#181b1f")
        ax.set_title(panel["title"], color="#ccccdc", fontsize=9, loc="left")
        ax.tick_params(colors="#8e8e8e", labelsize=7)
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        for target in panel["targets"]:
            for series in api.query_range(substitute(target["expr"], variables), start, end, step):
                times = [float(t) - start for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                label = _legend(target.get("legendFormat", ""), series["metric"])
                if panel["type"] == "stat":
                    ax.text(0.5, 0.45, f"{values[-1]:.4g}", color="#73bf69", fontsize=22, ha="center",
                            va="center", transform=ax.transAxes)
                    ax.set_xticks([])
                    ax.set_yticks([])
                else:  # markers: a series with one point still shows; only moving series get a legend entry
                    ax.plot(times, values, linewidth=1.2, marker="o", markersize=1.5,
                            label=label[:40] if any(v != values[0] for v in values) else "_nolegend_")
                    ax.set_xlabel("seconds into the test", color="#8e8e8e", fontsize=6, labelpad=1)
        if panel["type"] != "stat" and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left", facecolor="#181b1f", labelcolor="#ccccdc", framealpha=0.6)
        elif panel["type"] != "stat" and not ax.lines:
            ax.text(0.5, 0.5, "no data", color="#8e8e8e", ha="center", va="center", transform=ax.transAxes)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, facecolor=fig.get_facecolor())
    plt.close(fig)
    return path
