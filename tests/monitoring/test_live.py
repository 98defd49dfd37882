"""Live: a real Prometheus scrapes a real worker and the real queue exporter and evaluates the chart's rules.

Isolated from the rest of the session on its own Valkey (the session's workers consume every queue and
would drain the backlog this test builds). Processes start with the chart's command lines
(portfolio_site.commands). Every wait is bounded and says what it waited for.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from celery import Celery

import apps.main.metrics  # noqa: F401 — the test process publishes too: stamps published_at
from apps.main.metrics import labels
from apps.main.metrics.exporter import BrokerLayout
from apps.main.queues import HIGH_PRIORITY, LOW_PRIORITY, QUEUES, WorkerPool, task_name
from embedded.network import Abort, free_port, wait_until
from embedded.process import stop_process, tail
from embedded.supervisor import Supervisor
from portfolio_site import commands
from tests.monitoring.conftest import documented_metrics, exposed_families, rule_groups, write_rules
from tests.monitoring.test_metrics_doc import dashboard_queries
from tests.support.timeouts import scaled

# django_db: makes pytest-django create and migrate the test database that live_env points at.
pytestmark = [pytest.mark.live, pytest.mark.timeout(180), pytest.mark.django_db(transaction=True)]

NAMESPACE = "ns"
NOTIFY = task_name("send_notification")
#: Short `for:` durations so the alerts fire within seconds; thresholds scaled to the test's load.
TEST_ALERTS = {"taskFailureRatioFor": "2s", "queueBacklogThreshold": 5, "queueBacklogFor": "2s"}
FAILURES, SUCCESSES, ETA_TASKS, BACKLOG = 6, 2, 5, 12


def _get(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


class PrometheusAPI:
    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str) -> list[dict]:
        body = json.loads(_get(f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict]:
        return json.loads(_get(f"{self.base}/api/v1/alerts"))["data"]["alerts"]

    def alert_state(self, alertname: str, **match: str) -> str | None:
        for alert in self.alerts():
            found = alert["labels"]
            if found.get("alertname") == alertname and all(found.get(k) == v for k, v in match.items()):
                return alert["state"]
        return None


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, children: Supervisor | None = None) -> None:
    def check() -> bool:
        if children is not None and (dead := children.exited()):
            raise Abort(children.describe_failure(dead[0]))
        return bool(condition())

    wait_until(check, timeout=timeout, what=what, interval=0.25)


@pytest.fixture
def stack(live_env: dict[str, str], valkey, tmp_path: Path, process_logs: Path,
          prometheus_binary: Path) -> Iterator[dict[str, Any]]:
    worker_port, exporter_port, prometheus_port = free_port(), free_port(), free_port()
    redis.Redis.from_url(valkey.url).flushdb()
    env = {**live_env, "REDIS_URL": valkey.url}
    supervisor = Supervisor(log_dir=process_logs / f"monitoring-{uuid.uuid4().hex[:6]}", env=env)
    prometheus = None
    try:
        supervisor.spawn("worker", commands.worker("monitoring", WorkerPool((HIGH_PRIORITY,), concurrency=2)),
                         extra_env={"METRICS_PORT": str(worker_port),
                                    "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc")})
        supervisor.spawn("exporter", [*commands.exporter(exporter_port), "--interval", "0.5",
                                      "--inspect-interval", "1", "--inspect-timeout", "0.5"])
        rules = write_rules(tmp_path / "rules.yaml", rule_groups(TEST_ALERTS, namespace=NAMESPACE))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"],
                                                      "labels": {"namespace": NAMESPACE}}]}
                for job, port in (("worker", worker_port), ("exporter", exporter_port))
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = open(process_logs / "prometheus.log", "ab")  # noqa: SIM115 — closed in finally
        import subprocess

        prometheus = subprocess.Popen(
            [str(prometheus_binary), f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prometheus_port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        api = PrometheusAPI(f"http://127.0.0.1:{prometheus_port}")
        wait_for(lambda: prometheus.poll() is None and _get(f"{api.base}/-/ready"), timeout=scaled(30),
                 what=f"Prometheus ready (log {process_logs / 'prometheus.log'})")
        wait_for(lambda: api.value('min(up{job=~"worker|exporter"})') == 1
                 and len(api.query('up{job=~"worker|exporter"}')) == 2,
                 timeout=scaled(60), what="Prometheus scraping the worker and the exporter", children=supervisor)
        yield {"api": api, "redis": redis.Redis.from_url(valkey.url), "url": valkey.url,
               "worker": f"http://127.0.0.1:{worker_port}/metrics",
               "exporter": f"http://127.0.0.1:{exporter_port}/metrics", "supervisor": supervisor,
               "tmp_path": tmp_path}
    finally:
        supervisor.stop_all()
        if prometheus is not None:
            stop_process(prometheus)
            if prometheus.returncode not in (0, None, -15):
                print(tail(process_logs / "prometheus.log"))


def _producer(url: str) -> Celery:
    app = Celery("monitoring-live", broker=url, set_as_current=False)
    app.conf.task_create_missing_queues = True
    return app


def _true_backlog(client: redis.Redis) -> tuple[dict[str, int], dict[str, int]]:
    """Ground truth straight from Redis: every priority sub-list, and unacked entries per queue."""
    layout = BrokerLayout(queues=QUEUES)
    waiting = {q: sum(client.llen(k) for k in layout.list_keys(q)) for q in QUEUES}
    in_flight = dict.fromkeys(QUEUES, 0)
    for entry in client.hvals(layout.unacked_key):
        in_flight[json.loads(entry)[2]] += 1
    return waiting, in_flight


def test_alerts_fire_and_gauges_match_the_broker(stack: dict[str, Any]) -> None:
    api: PrometheusAPI = stack["api"]
    children: Supervisor = stack["supervisor"]
    app = _producer(stack["url"])
    begun = time.time()
    marker = f"marker-{uuid.uuid4().hex}"  # an argument value no label may ever carry
    sent_ids: list[str] = []

    # Failures (unknown channel -> PermanentError, dead-lettered), successes (one as a periodic task),
    # tasks with a countdown (reserved by the worker: in flight), and a backlog nobody consumes.
    name = f'name="{NOTIFY}"'

    def fail(count: int) -> None:
        for _ in range(count):
            sent_ids.append(app.send_task(NOTIFY, kwargs={"channel": "bogus", "recipient": marker, "message": "x"},
                                          queue=HIGH_PRIORITY).id)

    # Failures in two waves: a counter series is born at its first failure, so a rate needs a second
    # scrape that sees it grow (as in production, where failures keep coming).
    fail(FAILURES // 2)
    wait_for(lambda: api.value(f"sum(celery_task_failed_total{{{name}}})") == FAILURES // 2, timeout=scaled(30),
             what="Prometheus to see the first failures", children=children)
    fail(FAILURES - FAILURES // 2)
    for i in range(SUCCESSES):
        sent_ids.append(app.send_task(NOTIFY, kwargs={"channel": "in_app", "recipient": marker, "message": "x"},
                                      queue=HIGH_PRIORITY, headers={"periodic_task_name": "monitoring-live"}
                                      if i == 0 else None).id)
    for _ in range(ETA_TASKS):
        sent_ids.append(app.send_task(NOTIFY, kwargs={"channel": "in_app", "recipient": marker, "message": "x"},
                                      queue=HIGH_PRIORITY, countdown=600).id)
    for i in range(BACKLOG):
        sent_ids.append(app.send_task(task_name("generate_reports"), kwargs={"report_type": marker},
                                      queue=LOW_PRIORITY, priority=i % 10).id)

    expected = {
        f"sum(celery_task_failed_total{{{name}}})": FAILURES,
        f'sum(celery_task_failed_total{{{name}, exception="PermanentError"}})': FAILURES,
        f"sum(celery_task_dead_lettered_total{{{name}}})": FAILURES,
        f"sum(celery_task_succeeded_total{{{name}}})": SUCCESSES,
        f"sum(celery_task_runtime_count{{{name}}})": FAILURES + SUCCESSES,
        f"sum(celery_task_started_total{{{name}}})": FAILURES + SUCCESSES,
        f"sum(celery_task_received_total{{{name}}})": FAILURES + SUCCESSES + ETA_TASKS,
    }
    seen: dict[str, float | None] = {}

    def counters_match() -> bool:
        seen.update({query: api.value(query) for query in expected})
        return seen == expected

    try:
        wait_for(counters_match, timeout=scaled(30), what="the worker's counters in Prometheus", children=children)
    except TimeoutError as error:
        raise AssertionError(f"{error}: expected {expected}, Prometheus has {seen}") from None
    assert api.value('celery_periodic_task_last_success_timestamp_seconds{name="monitoring-live"}') > time.time() - 60

    # The exporter against the truth in Redis: priority sub-lists and reserved (ETA) messages counted.
    def gauges_match() -> bool:
        waiting, in_flight = _true_backlog(stack["redis"])
        return all(
            api.value(f'celery_queue_length{{queue_name="{q}"}}') == waiting[q]
            and api.value(f'celery_queue_in_flight{{queue_name="{q}"}}') == in_flight[q]
            for q in QUEUES
        ) and waiting[LOW_PRIORITY] == BACKLOG and in_flight[HIGH_PRIORITY] == ETA_TASKS
    wait_for(gauges_match, timeout=scaled(20), children=children,
             what=f"celery_queue_length/in_flight to equal Redis ({_true_backlog(stack['redis'])})")
    wait_for(lambda: api.value(f'celery_workers_online{{queue_name="{HIGH_PRIORITY}"}}') == 1
             and api.value(f'celery_workers_online{{queue_name="{LOW_PRIORITY}"}}') == 0, timeout=scaled(15),
             children=children, what="the census: one worker on high_priority, none on low_priority")
    assert api.value(f'celery_queue_oldest_task_age_seconds{{queue_name="{LOW_PRIORITY}"}}') >= 0
    assert api.value("celery_broker_up") == 1
    assert api.value("celery_exporter_database_up") == 1
    # The exporter reads the store on its own clock: wait for it to count this test's dead letters.
    wait_for(lambda: (api.value("celery_dead_letters_total") or 0) >= FAILURES, timeout=scaled(15), children=children,
             what=f"celery_dead_letters_total to count the {FAILURES} dead letters")

    # The chart's rules, evaluated by Prometheus itself.
    wait_for(lambda: api.alert_state("CeleryTaskFailureRatioHigh", name=NOTIFY) == "firing", timeout=scaled(30),
             what=f"CeleryTaskFailureRatioHigh firing for {NOTIFY} (now {api.alerts()})", children=children)
    wait_for(lambda: api.alert_state("CeleryQueueBacklogHigh", queue_name=LOW_PRIORITY) == "firing", timeout=scaled(30),
             what=f"CeleryQueueBacklogHigh firing for {LOW_PRIORITY} (now {api.alerts()})", children=children)
    wait_for(lambda: api.alert_state("CeleryDeadLettersIncreasing", name=NOTIFY) in ("pending", "firing"),
             timeout=scaled(30), what="CeleryDeadLettersIncreasing pending", children=children)
    # Near misses stay silent: the consumed queue has no backlog alert, the healthy broker no alert.
    assert api.alert_state("CeleryQueueBacklogHigh", queue_name=HIGH_PRIORITY) is None
    assert api.alert_state("CeleryBrokerDown") is None
    assert api.alert_state("CeleryQueueExporterDown") is None

    _check_served_metrics(stack, marker, sent_ids)
    for query in dashboard_queries():  # every panel's PromQL is valid for a real Prometheus
        api.query(query.replace("$namespace", NAMESPACE).replace("$__rate_interval", "1m"))
    _picture(api, stack["tmp_path"], begun)


def _picture(api: PrometheusAPI, tmp_path: Path, begun: float) -> None:
    """The dashboard drawn from this test's data (matplotlib); kept where CELERY_STACK_DASHBOARD_PNG says."""
    import os
    import shutil

    from tests.monitoring import dashboard_png

    picture = dashboard_png.render(api.base, tmp_path / "dashboard.png", namespace=NAMESPACE,
                                   start=begun - 5, end=time.time())
    assert picture.stat().st_size > 20_000, "the dashboard picture is empty"
    if target := os.environ.get("CELERY_STACK_DASHBOARD_PNG"):
        shutil.copy(picture, target)


def _check_served_metrics(stack: dict[str, Any], marker: str, sent_ids: list[str]) -> None:
    """What the endpoints serve is the documented catalogue, with bounded label values only."""
    documented = documented_metrics()
    registered = {task_name(s) for s in ("send_notification", "generate_reports")}
    for endpoint in ("worker", "exporter"):
        text = _get(stack[endpoint])
        assert marker not in text and not any(task_id in text for task_id in sent_ids), \
            f"{endpoint} exposes a task argument or id"
        families = {n: f for n, f in exposed_families(text).items()
                    if n.startswith("celery_") and n != "celery_periodic_task_last_success_timestamp_seconds"}
        expected = {n for n, d in documented.items() if endpoint in d["endpoints"]} - {
            "celery_periodic_task_last_success_timestamp_seconds"}
        if endpoint == "worker":  # counters appear once something happened; those this test caused:
            expected = {n for n in expected if n not in ("celery_task_retried_total", "celery_task_rejected_total",
                                                         "celery_task_revoked_total", "celery_task_sent_total")}
            assert expected <= set(families), f"worker does not serve {expected - set(families)}"
        else:
            assert set(families) == expected, f"exporter serves {set(families) ^ expected} unlike docs"
        for fname, family in families.items():
            assert fname in documented, f"{endpoint} serves undocumented {fname}"
            assert family["type"] == documented[fname]["type"], fname
            assert family["labels"] == documented[fname]["labels"], f"{fname}: {family['labels']}"
            for sample in family["samples"]:
                if "name" in sample.labels and fname != "celery_heartbeat_last_success_timestamp_seconds":
                    assert sample.labels["name"] in registered | {labels.UNREGISTERED, labels.UNKNOWN} or \
                        sample.labels["name"].startswith("apps.main.tasks."), sample
                if "queue_name" in sample.labels:
                    assert sample.labels["queue_name"] in {*QUEUES, labels.OTHER_QUEUE, labels.UNKNOWN}, sample
