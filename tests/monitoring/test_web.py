"""Web metrics: per view, method and status class through the real middleware stack; /metrics serves them."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.main.api.signals import task_enqueued
from apps.main.metrics import web
from apps.main.queues import DEFAULT, task_name
from tests.monitoring.conftest import exposed_families


def _count(families: dict, family: str, **labels: str) -> float:
    return sum(s.value for s in families.get(family, {"samples": []})["samples"]
               if s.name == family and all(s.labels.get(k) == v for k, v in labels.items()))


def _scrape(client: Client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return exposed_families(response.content.decode())


@pytest.mark.django_db
def test_requests_are_counted_per_route_name_not_path(client: Client, monkeypatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(web, "_registry", None)
    before = _scrape(client)
    assert client.get("/healthz").status_code == 200
    assert client.get("/no-such-page/12345").status_code == 404
    after = _scrape(client)

    family = "celery_stack_http_requests_total"
    assert _count(after, family, view="healthz", method="GET", status="2xx") == \
        _count(before, family, view="healthz", method="GET", status="2xx") + 1
    assert _count(after, family, view=web.UNMATCHED, method="GET", status="4xx") == \
        _count(before, family, view=web.UNMATCHED, method="GET", status="4xx") + 1
    text = client.get("/metrics").content.decode()
    assert "no-such-page" not in text and "12345" not in text, "a path leaked into a label"
    assert _count(after, "celery_stack_http_request_duration_seconds", view="healthz") >= 0


def test_api_enqueue_signal_counts(client: Client, monkeypatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(web, "_registry", None)
    name = task_name("update_analytics")
    before = web.API_TASKS_ENQUEUED.labels(name, DEFAULT)._value.get()
    task_enqueued.send(sender=None, task_name=name, queue=DEFAULT)
    web.count_enqueue("not.a.registered.task", "some-queue")
    assert web.API_TASKS_ENQUEUED.labels(name, DEFAULT)._value.get() == before + 1
    assert web.API_TASKS_ENQUEUED.labels("unregistered", "other")._value.get() >= 1
