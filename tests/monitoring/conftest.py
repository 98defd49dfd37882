"""Fixtures of the monitoring tests: promtool/prometheus from the tools bootstrap, rendered rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from celery import Celery

from apps.main.queues import WorkerPool
from embedded.network import Abort, wait_until
from embedded.supervisor import Child, Supervisor
from portfolio_site import commands
from tests.support.render import find, render_chart
from tests.support.timeouts import scaled
from tests.support.tools import ToolError, tool_path

ROOT = Path(__file__).resolve().parents[2]
ALERTS_FILE = ROOT / "charts" / "celery-stack" / "files" / "prometheus" / "alerts.yaml"
DASHBOARD_FILE = ROOT / "charts" / "celery-stack" / "files" / "dashboards" / "celery-stack.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
RUNBOOK = ROOT / "docs" / "runbook.md"
RULE_TESTS = Path(__file__).resolve().parent / "rules"


def _tool(name: str) -> Path:
    try:
        return tool_path(name)
    except ToolError as error:
        pytest.skip(f"!!! {name} NOT AVAILABLE, monitoring rule checks NOT RUN: {error}")


@pytest.fixture(scope="session")
def promtool() -> Path:
    return _tool("promtool")


@pytest.fixture(scope="session")
def prometheus_binary() -> Path:
    return _tool("prometheus")


def rule_groups(alerts: dict | None = None, *, namespace: str = "ns", exporter: bool = True) -> list[dict]:
    """The chart's PrometheusRule ``groups`` rendered by helm with the given monitoring.alerts overrides."""
    values: dict = {"monitoring": {"prometheusRule": {"enabled": True}}, "exporter": {"enabled": exporter}}
    if alerts:
        values["monitoring"]["alerts"] = alerts
    rules = find(render_chart(values, namespace=namespace), "PrometheusRule")
    assert len(rules) == 1, f"expected one PrometheusRule, got {len(rules)}"
    return rules[0]["spec"]["groups"]


def write_rules(path: Path, groups: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory):
    """A real Valkey (AUTH, like the chart's Redis) for the exporter's broker reads."""
    from embedded import EmbeddedValkey

    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey")).start()
    yield server
    server.stop()


def documented_metrics() -> dict[str, dict]:
    """docs/metrics.md's catalogue: name -> {type, labels, endpoints} (the table under '## Catalogue')."""
    text = METRICS_DOC.read_text()
    catalogue = text.split("## Catalogue", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, dict] = {}
    for line in catalogue.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = cells[0].strip("`")
        rows[name] = {
            "type": cells[1],
            "labels": frozenset(label.strip() for label in cells[2].split(",") if label.strip()),
            "endpoints": frozenset(e.strip() for e in cells[3].split(",")),
        }
    return rows


def kube_state_metrics() -> set[str]:
    """kube-state-metrics series the dashboard may use, as listed in docs/metrics.md."""
    section = METRICS_DOC.read_text().split("## Other series the dashboard uses", 1)[1].split("\n## ", 1)[0]
    return {line.split("`")[1] for line in section.splitlines() if line.startswith("| `")}


def exposed_families(text: str) -> dict[str, dict]:
    """Parse a /metrics payload: family name -> {type, labels (union over samples, minus le/quantile)}."""
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, dict] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels: set[str] = set()
        values: list[dict[str, str]] = []
        for sample in family.samples:
            labels |= set(sample.labels) - {"le", "quantile"}
            values.append(dict(sample.labels))
        families[name] = {"type": family.type, "labels": frozenset(labels), "samples": family.samples}
    return families


def start_worker_as(supervisor: Supervisor, node: str, pool: WorkerPool, app: Celery, *,
                    extra_env: dict[str, str] | None = None) -> Child:
    """A real worker with the chart's command line, named ``node`` (``pool@host``): the host part a pod name
    gives it in a cluster, so that several workers on this one machine carry distinct ``hostname`` labels.
    Waits until it answers a ping through ``app``; a worker that exits while starting fails at once."""
    argv = commands.worker(node.partition("@")[0], pool)
    argv[argv.index("-n") + 1] = node
    child = supervisor.spawn(f"worker-{node}", argv, extra_env={"METRICS_PORT": "0", **(extra_env or {})})

    def answered() -> bool:
        if child.process.poll() is not None:
            raise Abort(supervisor.describe_failure(child))
        return any(node in reply for reply in app.control.ping(destination=[node], timeout=0.5))

    wait_until(answered, timeout=scaled(60), what=f"worker {node}", interval=0.2)
    return child
