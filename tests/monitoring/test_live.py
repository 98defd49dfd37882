"""Live: a real Prometheus scrapes a real web, two real workers and the real queue exporter the way the Prometheus
Operator would from the chart's rendered ServiceMonitors, and evaluates the chart's alert rules, the community
celery-mixin's published alerts, every panel query of our dashboard and of the mixin's dashboards.

Isolated from the rest of the session on its own Valkey (the session's workers consume every queue and would
drain the backlog built here). Processes start with the chart's command lines (portfolio_site.commands). One
module-scoped stack and load; each test reads it. Every wait is bounded and says what it waited for.
Stand-ins, for lack of a cluster: Kubernetes service discovery (tests/monitoring/operator_config.py) and
kube-state-metrics (series of the chart's rendered worker Deployments, served from a thread).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from celery import Celery
from django.conf import settings

import apps.main.metrics  # noqa: F401 — the test process publishes too: stamps published_at
from apps.main.metrics import labels
from apps.main.metrics.exporter import BrokerLayout
from apps.main.queues import DEFAULT, HIGH_PRIORITY, LOW_PRIORITY, QUEUES, WorkerPool, task_name
from embedded.network import Abort, free_port, wait_until
from embedded.process import stop_process, tail
from embedded.supervisor import Child, Supervisor
from portfolio_site import commands
from tests.monitoring import dashboard_png
from tests.monitoring.conftest import (
    DASHBOARD_FILE,
    documented_metrics,
    exposed_families,
    rule_groups,
    start_worker_as,
    write_rules,
)
from tests.monitoring.operator_config import service_monitor_scrape_configs
from tests.monitoring.promql import (
    PrometheusAPI,
    finite_values,
    http_get,
    label_values_query,
    panels,
    regex_of,
    substitute,
)
from tests.support.httpserver import Reply, serve
from tests.support.render import find, render_chart
from tests.support.timeouts import scaled

# django_db: makes pytest-django create and migrate the test database that live_env points at. Not transactional:
# a transactional test would empty the tables (dead letters, heartbeats) the module's processes wrote.
pytestmark = [pytest.mark.live, pytest.mark.timeout(300), pytest.mark.django_db]

MIXIN_DIR = Path(__file__).resolve().parent / "celery_mixin"
NAMESPACE = "ns"
#: The chart's default `job` (monitoring.job empty: the release's fullname), as the mixin's dashboards see it.
JOB = "rel-celery-stack"
#: The mixin's older dashboard (celery-tasks.json) selects job=~"celery|celery-exporter": the same processes,
#: scraped again as a second release in another namespace with monitoring.job set for it (docs/metrics.md).
LEGACY_NAMESPACE, LEGACY_JOB = "legacy", "celery-exporter"
#: Grafana's $__rate_interval for these queries; the picture uses it too.
RATE_INTERVAL = "30s"
NOTIFY, ACTION = task_name("send_notification"), task_name("process_user_action")
#: Short `for:` durations so the chart's alerts fire within seconds; thresholds scaled to the test's load.
TEST_ALERTS = {"taskFailureRatioFor": "2s", "queueBacklogThreshold": 5, "queueBacklogFor": "2s"}
#: send_notification: bogus channel (PermanentError), in_app successes (producer, API), countdown (reserved),
#: one webhook answering 503 (TransientError: settings.test retries it 3 times, then it fails for good).
FAILURES, SUCCESSES, API_NOTIFY, ETA_TASKS, WEBHOOK_RETRIES = 6, 2, 2, 5, 3
API_ACTIONS = 3
#: Above the mixin's CeleryHighQueueLength threshold (100): its published expression returns the queue.
BACKLOG = 105


@dataclass
class Live:
    api: PrometheusAPI
    redis: redis.Redis
    supervisor: Supervisor
    victim: Child
    endpoints: dict[str, str]  # worker, exporter, web -> /metrics URL
    marker: str
    sent_ids: list[str]
    begun: float
    tmp_path: Path

    def wait_for(self, condition: Callable[[], Any], *, what: str, timeout: float = 30) -> None:
        def check() -> bool:
            if dead := [c for c in self.supervisor.exited() if c is not self.victim]:
                raise Abort(self.supervisor.describe_failure(dead[0]))
            return bool(condition())

        wait_until(check, timeout=scaled(timeout), what=what, interval=0.25)


def _ksm_series(manifests: list[dict]) -> str:
    """What kube-state-metrics reports about the chart's worker Deployments (one ready replica each)."""
    lines = []
    for deployment in find(manifests, "Deployment"):
        name, namespace = deployment["metadata"]["name"], deployment["metadata"]["namespace"]
        if "-worker-" in name:
            for metric in ("kube_deployment_spec_replicas", "kube_deployment_status_replicas"):
                lines.append(f'{metric}{{namespace="{namespace}",deployment="{name}"}} 1')
    assert lines, "the chart renders no worker Deployment"
    return "\n".join(lines) + "\n"


def _monitors(namespace: str, **monitoring: Any) -> list[dict]:
    values = {"monitoring": {"serviceMonitor": {"enabled": True, "interval": "1s"}, **monitoring}}
    return render_chart(values, namespace=namespace)


@pytest.fixture(scope="module")
def live(live_env: dict[str, str], valkey, tmp_path_factory: pytest.TempPathFactory, process_logs: Path,
         prometheus_binary: Path) -> Iterator[Live]:
    tmp_path = tmp_path_factory.mktemp("monitoring-live")
    ports = {name: free_port() for name in ("worker", "victim", "exporter", "web", "prometheus")}
    redis.Redis.from_url(valkey.url).flushdb()
    env = {**live_env, "REDIS_URL": valkey.url}
    supervisor = Supervisor(log_dir=process_logs / f"monitoring-{uuid.uuid4().hex[:6]}", env=env)
    app = _producer(valkey.url)
    prometheus = None
    manifests, legacy = _monitors(NAMESPACE), _monitors(LEGACY_NAMESPACE, job=LEGACY_JOB)
    with serve(lambda _: Reply(503, {"detail": "try later"})) as webhook, \
            serve(lambda _: Reply(200, _ksm_series(manifests), "text/plain; version=0.0.4")) as ksm:
        try:
            supervisor.spawn("worker", commands.worker("monitoring", WorkerPool((HIGH_PRIORITY,), concurrency=2)),
                             extra_env={"METRICS_PORT": str(ports["worker"]),
                                        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "worker-multiproc")})
            # A second worker pod (its own host name), killed with SIGKILL by the mixin's worker-down test.
            victim = start_worker_as(supervisor, "victim@pod-victim", WorkerPool((DEFAULT,), concurrency=1), app,
                                     extra_env={"METRICS_PORT": str(ports["victim"]),
                                                "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "victim-multiproc")})
            supervisor.spawn("exporter", [*commands.exporter(ports["exporter"]), "--interval", "0.5",
                                          "--inspect-interval", "1", "--inspect-timeout", "0.5",
                                          "--worker-down-after", "4"])
            supervisor.spawn("beat", commands.beat())
            web = commands.web(ports["web"], workers=1)
            web[web.index("--bind") + 1] = f"127.0.0.1:{ports['web']}"  # the chart binds the pod's interfaces
            supervisor.spawn("web", web, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "web-multiproc")})

            addresses = {f"{JOB}-web": [f"127.0.0.1:{ports['web']}"],
                         f"{JOB}-worker-metrics": [f"127.0.0.1:{ports['worker']}", f"127.0.0.1:{ports['victim']}"],
                         f"{JOB}-exporter": [f"127.0.0.1:{ports['exporter']}"]}
            scrape_configs = [*service_monitor_scrape_configs(manifests, addresses),
                              *service_monitor_scrape_configs(legacy, addresses),
                              {"job_name": "kube-state-metrics", "honor_labels": True,
                               "static_configs": [{"targets": [ksm.url.removeprefix("http://")]}]}]
            rules = write_rules(tmp_path / "rules.yaml", rule_groups(TEST_ALERTS, namespace=NAMESPACE))
            config = {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
                "rule_files": [str(rules), str(MIXIN_DIR / "prometheus_alerts.yaml")],  # the mixin's, unchanged
                "scrape_configs": scrape_configs,
            }
            (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
            with open(process_logs / "prometheus.log", "ab") as log:
                prometheus = subprocess.Popen(
                    [str(prometheus_binary), f"--config.file={tmp_path / 'prometheus.yml'}",
                     f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
                    stdout=log, stderr=subprocess.STDOUT)
            live = Live(PrometheusAPI(f"http://127.0.0.1:{ports['prometheus']}"), redis.Redis.from_url(valkey.url),
                        supervisor, victim,
                        {"worker": f"http://127.0.0.1:{ports['worker']}/metrics",
                         "exporter": f"http://127.0.0.1:{ports['exporter']}/metrics",
                         "web": f"http://127.0.0.1:{ports['web']}/metrics"},
                        f"marker-{uuid.uuid4().hex}", [], time.time(), tmp_path)
            live.wait_for(lambda: prometheus.poll() is None and http_get(f"{live.api.base}/-/ready"),
                          what=f"Prometheus ready (log {process_logs / 'prometheus.log'})")
            expected_targets = 2 * sum(len(a) for a in addresses.values()) + 1

            def all_up() -> bool:
                targets = live.api.targets()
                return len(targets) == expected_targets and all(t["health"] == "up" for t in targets)

            live.wait_for(all_up, timeout=90, what=f"Prometheus scraping {expected_targets} targets up "
                                                   "(web, 2 workers, exporter; twice; kube-state-metrics)")
            _load(live, app, webhook.url)
            yield live
        finally:
            supervisor.stop_all()
            if prometheus is not None:
                stop_process(prometheus)
                if prometheus.returncode not in (0, None, -15):
                    print(tail(process_logs / "prometheus.log"))
            app.close()


def _producer(url: str) -> Celery:
    """A plain Celery client with the project's routes: they carry the encrypted tasks' serializer
    (apps.main.payload_encryption), without which a worker refuses send_notification as unencrypted."""
    from apps.main.queues import TASK_ROUTES

    app = Celery("monitoring-live", broker=url, set_as_current=False)
    app.conf.task_create_missing_queues = True
    app.conf.task_routes = TASK_ROUTES
    return app


def _api_enqueue(live: Live, short: str, arguments: dict[str, Any]) -> None:
    request = urllib.request.Request(
        live.endpoints["web"].replace("/metrics", f"/api/tasks/{short}/"), data=json.dumps(arguments).encode(),
        headers={"Authorization": f"Bearer {settings.API_TOKEN}", "Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        live.sent_ids.append(json.loads(response.read())["id"])


def _load(live: Live, app: Celery, webhook: str) -> None:
    """Every kind of event the panels and alerts read, then waits until Prometheus has the worker's counters."""
    marker, api = live.marker, live.api

    def notify(count: int, channel: str, recipient: str = marker, **options: Any) -> None:
        for _ in range(count):
            live.sent_ids.append(app.send_task(NOTIFY, kwargs={"channel": channel, "recipient": recipient,
                                                               "message": "x"}, queue=HIGH_PRIORITY, **options).id)

    live.wait_for(lambda: http_get(live.endpoints["web"].replace("/metrics", "/healthz")), what="web answering")
    for i in range(API_ACTIONS):  # through the HTTP API: celery_task_sent_total and the web panels
        _api_enqueue(live, "process_user_action", {"action_id": f"{marker}-{i}", "user_id": "u1", "action": "login"})
    for _ in range(API_NOTIFY):
        _api_enqueue(live, "send_notification", {"channel": "in_app", "recipient": "u1", "message": "x"})
    # Failures in two waves: a counter series is born at its first failure, so a rate needs a second scrape
    # that sees it grow (as in production, where failures keep coming).
    notify(FAILURES // 2, "bogus")
    first = f'sum by (namespace) (celery_task_failed_total{{name="{NOTIFY}"}})'
    live.wait_for(lambda: {float(s["value"][1]) for s in api.query(first)} == {FAILURES // 2}
                  and len(api.query(first)) == 2, what="both scrapes (two namespaces) to see the first failures")
    notify(FAILURES - FAILURES // 2, "bogus")
    notify(1, "in_app", headers={"periodic_task_name": "monitoring-live"})
    notify(SUCCESSES - 1, "in_app")
    notify(ETA_TASKS, "in_app", countdown=600)
    notify(1, "webhook", webhook)
    live.sent_ids.append(app.send_task(task_name("health_check"), queue=HIGH_PRIORITY).id)
    # Revoked: expired before a worker got it. Rejected: a message with an invalid ETA header.
    action = {"action_id": f"{marker}-x", "user_id": "u1", "action": "login"}
    live.sent_ids.append(app.send_task(ACTION, kwargs=action, queue=HIGH_PRIORITY, expires=-60).id)
    live.sent_ids.append(app.send_task(ACTION, kwargs=action, queue=HIGH_PRIORITY, headers={"eta": "never"}).id)
    for i in range(BACKLOG):
        live.sent_ids.append(app.send_task(task_name("generate_reports"), kwargs={"report_type": marker},
                                           queue=LOW_PRIORITY, priority=i % 10).id)

    attempts = FAILURES + SUCCESSES + API_NOTIFY + 1 + WEBHOOK_RETRIES
    name = f'name="{NOTIFY}", namespace="{NAMESPACE}"'
    expected = {
        f"sum(celery_task_failed_total{{{name}}})": FAILURES + 1,
        f'sum(celery_task_failed_total{{{name}, exception="PermanentError"}})': FAILURES,
        f"sum(celery_task_dead_lettered_total{{{name}}})": FAILURES + 1,
        f"sum(celery_task_succeeded_total{{{name}}})": SUCCESSES + API_NOTIFY,
        f"sum(celery_task_retried_total{{{name}}})": WEBHOOK_RETRIES,
        f"sum(celery_task_runtime_count{{{name}}})": attempts,
        f"sum(celery_task_started_total{{{name}}})": attempts,
        f"sum(celery_task_received_total{{{name}}})": attempts + ETA_TASKS,
        f'sum(celery_task_revoked_total{{name="{ACTION}", namespace="{NAMESPACE}"}})': 1,
        f'sum(celery_task_rejected_total{{name="{ACTION}", namespace="{NAMESPACE}"}})': 1,
        f'sum(celery_task_succeeded_total{{name="{ACTION}", namespace="{NAMESPACE}"}})': API_ACTIONS,
        f'sum(celery_stack_api_tasks_enqueued_total{{namespace="{NAMESPACE}"}})': API_ACTIONS + API_NOTIFY,
    }
    seen: dict[str, float | None] = {}

    def counters_match() -> bool:
        seen.update({query: api.value(query) for query in expected})
        return seen == expected

    try:
        live.wait_for(counters_match, what="the counters in Prometheus")
    except TimeoutError as error:
        raise AssertionError(f"{error}: expected {expected}, Prometheus has {seen}") from None


def _true_backlog(client: redis.Redis) -> tuple[dict[str, int], dict[str, int]]:
    """Ground truth straight from Redis: every priority sub-list, and unacked entries per queue."""
    layout = BrokerLayout(queues=QUEUES)
    waiting = {q: sum(client.llen(k) for k in layout.list_keys(q)) for q in QUEUES}
    in_flight = dict.fromkeys(QUEUES, 0)
    for entry in client.hvals(layout.unacked_key):
        in_flight[json.loads(entry)[2]] += 1
    return waiting, in_flight


# --- what the scrape holds ---------------------------------------------------------------------------------


def test_the_chart_monitors_give_every_series_one_job(live: Live) -> None:
    """The celery-mixin's premise: worker, exporter and web series share one job (per release)."""
    jobs = {(t["labels"].get("namespace"), t["labels"]["job"]) for t in live.api.targets()}
    assert jobs == {(NAMESPACE, JOB), (LEGACY_NAMESPACE, LEGACY_JOB), (None, "kube-state-metrics")}, jobs
    for metric in ("celery_worker_up", "celery_queue_length", "celery_task_sent_total"):
        assert {s["metric"]["job"] for s in live.api.query(f'{metric}{{namespace="{NAMESPACE}"}}')} == {JOB}


def test_gauges_match_the_broker(live: Live) -> None:
    api = live.api
    assert api.value('celery_periodic_task_last_success_timestamp_seconds{name="monitoring-live"}') > live.begun - 5

    # The exporter against the truth in Redis: priority sub-lists and reserved (ETA) messages counted.
    def gauges_match() -> bool:
        waiting, in_flight = _true_backlog(live.redis)
        return all(
            api.value(f'celery_queue_length{{queue_name="{q}", namespace="{NAMESPACE}"}}') == waiting[q]
            and api.value(f'celery_queue_in_flight{{queue_name="{q}", namespace="{NAMESPACE}"}}') == in_flight[q]
            for q in QUEUES
        ) and waiting[LOW_PRIORITY] == BACKLOG and in_flight[HIGH_PRIORITY] == ETA_TASKS
    live.wait_for(gauges_match, what=f"celery_queue_length/in_flight to equal Redis ({_true_backlog(live.redis)})")
    live.wait_for(lambda: api.value(f'celery_workers_online{{queue_name="{HIGH_PRIORITY}", namespace="ns"}}') == 1
                  and api.value(f'celery_workers_online{{queue_name="{LOW_PRIORITY}", namespace="ns"}}') == 0,
                  what="the census: one worker on high_priority, none on low_priority")
    assert api.value(f'celery_queue_oldest_task_age_seconds{{queue_name="{LOW_PRIORITY}", namespace="ns"}}') >= 0
    assert api.value('celery_broker_up{namespace="ns"}') == 1
    assert api.value('celery_exporter_database_up{namespace="ns"}') == 1
    # The exporter reads the store on its own clock: wait for it to count this test's dead letters.
    live.wait_for(lambda: (api.value('celery_dead_letters_total{namespace="ns"}') or 0) >= FAILURES + 1,
                  what=f"celery_dead_letters_total to count the {FAILURES + 1} dead letters")


def test_chart_alerts_fire(live: Live) -> None:
    """The chart's rules (rendered by helm), evaluated by Prometheus itself."""
    api = live.api

    def firing(alert: str, **match: str) -> Callable[[], bool]:
        return lambda: api.alert_state(alert, namespace=NAMESPACE, **match) == "firing"

    live.wait_for(firing("CeleryTaskFailureRatioHigh", name=NOTIFY), what=f"CeleryTaskFailureRatioHigh for {NOTIFY}")
    live.wait_for(firing("CeleryQueueBacklogHigh", queue_name=LOW_PRIORITY), what="CeleryQueueBacklogHigh firing")
    live.wait_for(lambda: api.alert_state("CeleryDeadLettersIncreasing", name=NOTIFY) in ("pending", "firing"),
                  what="CeleryDeadLettersIncreasing pending")
    # Near misses stay silent: the consumed queue has no backlog alert, the healthy broker no alert.
    assert api.alert_state("CeleryQueueBacklogHigh", queue_name=HIGH_PRIORITY) is None
    assert api.alert_state("CeleryBrokerDown") is None
    assert api.alert_state("CeleryQueueExporterDown") is None


def test_served_metrics_are_the_documented_catalogue(live: Live) -> None:
    """What the endpoints serve is docs/metrics.md, with bounded label values only."""
    documented = documented_metrics()
    registered = {NOTIFY, ACTION, task_name("generate_reports")}
    #: Served only once something happened: by a worker that publishes; by the exporter when a worker is lost.
    optional = {"worker": {"celery_task_sent_total"}, "exporter": {"celery_worker_up"}, "web": set()}
    for endpoint in ("worker", "exporter", "web"):
        text = http_get(live.endpoints[endpoint])
        assert live.marker not in text and not any(task_id in text for task_id in live.sent_ids), \
            f"{endpoint} exposes a task argument or id"
        families = {n: f for n, f in exposed_families(text).items() if n.startswith("celery_")}
        expected = {n for n, d in documented.items() if endpoint in d["endpoints"]}
        assert expected - optional[endpoint] <= set(families) <= expected, \
            f"{endpoint} serves {sorted(set(families) ^ expected)} unlike docs/metrics.md"
        for fname, family in families.items():
            assert family["type"] == documented[fname]["type"], fname
            assert family["labels"] == documented[fname]["labels"], f"{fname}: {family['labels']}"
            for sample in family["samples"]:
                if "name" in sample.labels and fname not in ("celery_heartbeat_last_success_timestamp_seconds",
                                                             "celery_periodic_task_last_success_timestamp_seconds"):
                    assert sample.labels["name"] in registered | {labels.UNREGISTERED, labels.UNKNOWN} or \
                        sample.labels["name"].startswith("apps.main.tasks."), sample
                if "queue_name" in sample.labels:
                    assert sample.labels["queue_name"] in {*QUEUES, labels.OTHER_QUEUE, labels.UNKNOWN}, sample


# --- dashboards: every panel query returns data -------------------------------------------------------------


def _returns_data(live: Live, expr: str) -> bool:
    """Grafana draws a panel from a range query over the dashboard's time range: some finite point must come."""
    now = time.time()
    result = live.api.query_range(expr, live.begun - 5, now, max(1.0, (now - live.begun) / 100))
    return next(finite_values(result), None) is not None


def _all_return_data(live: Live, queries: dict[str, str], what: str) -> None:
    empty: list[str] = []

    def check() -> bool:
        empty[:] = [where for where, expr in queries.items() if not _returns_data(live, expr)]
        return not empty

    try:
        live.wait_for(check, what=what)
    except TimeoutError as error:
        now = {where: live.api.query(queries[where]) for where in empty}
        raise AssertionError(f"{error}: no data for {empty}; evaluated now: {now}") from None


def test_every_panel_of_our_dashboard_returns_data(live: Live) -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert NAMESPACE in live.api.label_values(*label_values_query(variable["query"]), start=live.begun)
    values = {"namespace": NAMESPACE, "__rate_interval": RATE_INTERVAL}
    queries = {f"{panel['title']} / {target['refId']}": substitute(target["expr"], values)
               for panel in panels(dashboard) for target in panel.get("targets", [])}
    assert len(queries) >= 30
    _all_return_data(live, queries, "every query of our dashboard to return data")


def _mixin_dashboard_queries(live: Live, dashboard: dict[str, Any]) -> dict[str, str]:
    """Each target's expression with the variables as Grafana would resolve them on this Prometheus."""
    elapsed = int(time.time() - live.begun) + 60
    values = {"__rate_interval": RATE_INTERVAL, "__range": f"{elapsed}s", "__interval": "1s"}
    for variable in dashboard["templating"]["list"]:
        name = variable["name"]
        if variable["type"] != "query":
            continue
        selector, label = label_values_query(variable["query"])
        found = live.api.label_values(substitute(selector, values), label, start=live.begun - 60)
        if name == "cluster":
            assert found == [], found  # no cluster label: Grafana leaves $cluster empty, cluster="" matches
            values[name] = ""
        elif name == "namespace":
            assert NAMESPACE in found, found
            values[name] = NAMESPACE
        elif name == "job":  # one job for worker series in the namespace: the chart's
            assert found == [JOB], f"job variable offers {found}"
            values[name] = JOB
        else:  # queue_name, task: "All" (or every value selected)
            assert found, f"${name} has no values ({selector})"
            values[name] = regex_of(found)
    return {f"{dashboard['title']}: panel {panel.get('id')} {panel.get('title')!r} query {index}":
            substitute(target["expr"], values)
            for panel in panels(dashboard) for index, target in enumerate(panel.get("targets", []))}


def test_every_panel_of_the_celery_mixin_dashboards_returns_data(live: Live) -> None:
    files = sorted((MIXIN_DIR / "dashboards_out").glob("*.json"))
    assert [f.name for f in files] == ["celery-tasks-by-task.json", "celery-tasks-overview.json", "celery-tasks.json"]
    queries: dict[str, str] = {}
    for path in files:
        queries |= _mixin_dashboard_queries(live, json.loads(path.read_text()))
    assert len(queries) == 93  # every target of the three dashboards
    _all_return_data(live, queries, "every query of the celery-mixin's dashboards to return data")


def test_celery_mixin_alerts_are_active_as_published(live: Live) -> None:
    """The mixin's prometheus_alerts.yaml, loaded unchanged: each alert's expression selects series of this
    release (pending: its `for` of 1m/20m/15m is longer than this test). CeleryWorkerDown needs a worker lost
    without a clean stop: the victim is killed with SIGKILL, and the exporter says celery_worker_up 0."""
    rules = yaml.safe_load((MIXIN_DIR / "prometheus_alerts.yaml").read_text())["groups"][0]["rules"]
    assert {rule["alert"] for rule in rules} == {"CeleryTaskHighFailRate", "CeleryHighQueueLength",
                                                "CeleryWorkerDown"}
    os.killpg(live.victim.process.pid, signal.SIGKILL)
    live.victim.process.wait(10)
    expected = {"CeleryTaskHighFailRate": {"name": NOTIFY, "queue_name": HIGH_PRIORITY},
                "CeleryHighQueueLength": {"queue_name": LOW_PRIORITY},
                "CeleryWorkerDown": {"hostname": "pod-victim"}}
    for rule in rules:
        match = {"job": JOB, "namespace": NAMESPACE, **expected[rule["alert"]]}
        live.wait_for(lambda rule=rule, match=match: live.api.alert_state(rule["alert"], **match)
                      in ("pending", "firing"), what=f"{rule['alert']} active for {match} ({rule['expr']})")
        result = live.api.query(rule["expr"])  # the published expression, evaluated now
        assert any(all(s["metric"].get(k) == v for k, v in match.items()) for s in result), result


def test_dashboard_picture(live: Live) -> None:
    """Last, so that it shows the whole module's data: our dashboard's queries drawn with matplotlib (not
    Grafana); kept where CELERY_STACK_DASHBOARD_PNG says (docs/images/celery-stack-dashboard.png)."""
    picture = dashboard_png.render(live.api, live.tmp_path / "dashboard.png", start=live.begun, end=time.time(),
                                   variables={"namespace": NAMESPACE, "__rate_interval": RATE_INTERVAL})
    assert picture.stat().st_size > 20_000, "the dashboard picture is empty"
    if target := os.environ.get("CELERY_STACK_DASHBOARD_PNG"):
        shutil.copy(picture, target)
