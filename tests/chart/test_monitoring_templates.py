"""Chart side of monitoring: ServiceMonitor/PodMonitor objects, the PrometheusRule and dashboard ConfigMap
load the monitoring helper's files (and fail clearly without them), CRD objects need their API."""

from __future__ import annotations

import pytest

from portfolio_site.ports import EXPORTER_PORT, WORKER_METRICS_PORT
from tests.support.render import CHART, HelmError, find, one, render_chart

N = "rel-celery-stack"


def test_service_monitors_scrape_web_workers_and_exporter() -> None:
    manifests = render_chart({"monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}})
    for component, port in (("web", "http"), ("worker", "metrics"), ("exporter", "metrics")):
        sm = one(manifests, "ServiceMonitor", f"{N}-{component}")
        assert sm["metadata"]["labels"]["release"] == "kps"
        assert sm["spec"]["endpoints"][0]["port"] == port
        selector = sm["spec"]["selector"]["matchLabels"]
        assert any(s["metadata"]["labels"].items() >= selector.items() for s in find(manifests, "Service")
                   if any(p["name"] == port for p in s["spec"]["ports"]))
    assert one(manifests, "Service", f"{N}-worker-metrics")["spec"]["ports"][0]["port"] == WORKER_METRICS_PORT
    assert one(manifests, "Service", f"{N}-exporter")["spec"]["ports"][0]["port"] == EXPORTER_PORT


def test_pod_monitors() -> None:
    manifests = render_chart({"monitoring": {"podMonitor": {"enabled": True}}})
    assert {m["metadata"]["name"] for m in find(manifests, "PodMonitor")} == {
        f"{N}-web", f"{N}-worker", f"{N}-exporter"}


def test_monitoring_api_missing_fails_clearly() -> None:
    with pytest.raises(HelmError, match=r"monitoring.coreos.com/v1"):
        render_chart({"monitoring": {"serviceMonitor": {"enabled": True}},
                      "workerDefaults": {"autoscaling": {"engine": "none"}}}, api_versions=False)


def test_prometheus_rule_from_the_alerts_file() -> None:
    values = {"monitoring": {"prometheusRule": {"enabled": True}, "alerts": {"extraLabels": {"team": "tasks"}}}}
    if not (CHART / "files" / "prometheus" / "alerts.yaml").exists():
        with pytest.raises(HelmError, match=r"files/prometheus/alerts\.yaml"):
            render_chart(values)
        pytest.skip("files/prometheus/alerts.yaml not written yet (monitoring helper): the clear failure is tested")
    rule = one(render_chart(values), "PrometheusRule", f"{N}-alerts")
    assert rule["spec"]["groups"]


def test_grafana_dashboards_configmap() -> None:
    values = {"monitoring": {"grafanaDashboard": {"enabled": True}}}
    dashboards = sorted((CHART / "files" / "dashboards").glob("*.json"))
    if not dashboards:
        with pytest.raises(HelmError, match="files/dashboards"):
            render_chart(values)
        pytest.skip("files/dashboards/*.json not written yet (monitoring helper): the clear failure is tested")
    cm = one(render_chart(values), "ConfigMap", f"{N}-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(cm["data"]) == {p.name for p in dashboards}


# --- one `job` label for the celery-mixin (docs/metrics.md) --------------------------------------------------

ENDPOINTS = {"ServiceMonitor": "endpoints", "PodMonitor": "podMetricsEndpoints"}


def monitor_jobs(manifests: list[dict]) -> dict[str, set[str]]:
    """Monitor name -> the `job` values its endpoints' relabelings set (every endpoint must set one)."""
    jobs: dict[str, set[str]] = {}
    for kind, field in ENDPOINTS.items():
        for monitor in find(manifests, kind):
            for endpoint in monitor["spec"][field]:
                rules = [r for r in endpoint.get("relabelings", []) if r.get("targetLabel") == "job"]
                assert len(rules) == 1, f"{kind} {monitor['metadata']['name']} sets job {len(rules)} times"
                rule = rules[0]
                assert rule.get("action", "replace") == "replace" and "sourceLabels" not in rule, rule
                jobs.setdefault(f"{kind}/{monitor['metadata']['name']}", set()).add(rule["replacement"])
    return jobs


@pytest.mark.parametrize("kind", sorted(ENDPOINTS))
def test_every_monitor_sets_the_same_job_containing_celery(kind: str) -> None:
    key = "serviceMonitor" if kind == "ServiceMonitor" else "podMonitor"
    jobs = monitor_jobs(render_chart({"monitoring": {key: {"enabled": True}}}))
    assert set(jobs) == {f"{kind}/{N}-{c}" for c in ("web", "worker", "exporter")}
    # The release's fullname by default: it matches the mixin's default selector job=~".*celery.*".
    assert set().union(*jobs.values()) == {N}


def test_job_is_configurable_and_follows_the_fullname() -> None:
    both = {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}
    jobs = monitor_jobs(render_chart({"monitoring": {**both, "job": "celery-exporter"}}))
    assert len(jobs) == 6 and set().union(*jobs.values()) == {"celery-exporter"}
    jobs = monitor_jobs(render_chart({"fullnameOverride": "tasks", "monitoring": both}))
    assert set().union(*jobs.values()) == {"tasks"}


@pytest.mark.parametrize("job", ["celery stack", 'celery"}', 7], ids=["space", "quote", "number"])
def test_schema_refuses_a_job_that_is_no_plain_label_value(job: object) -> None:
    with pytest.raises(HelmError) as error:
        render_chart({"monitoring": {"job": job, "serviceMonitor": {"enabled": True}}})
    assert "monitoring.job" in error.value.stderr
