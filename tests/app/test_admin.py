"""Admin pages for periodic tasks, task results and dead letters, and the dead-letter actions."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.main.models import DeadLetter
from portfolio_site.celery import app
from tests.support.timeouts import scaled

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def letter(**overrides) -> DeadLetter:
    fields = {"task_id": "t-1", "task_name": "apps.main.tasks.update_analytics", "args": [],
              "kwargs": {"window_minutes": 7}, "queue": "default", "reason": "retries_exhausted",
              "exception": "OperationalError: db gone", "attempts": 4, "failed_at": timezone.now()}
    return DeadLetter.objects.create(**{**fields, **overrides})


@pytest.mark.parametrize("model", ["django_celery_beat/periodictask", "django_celery_results/taskresult",
                                   "main/deadletter", "main/payloadclaim"])
def test_changelists_render(admin: Client, model: str) -> None:
    assert admin.get(f"/admin/{model}/").status_code == 200


def test_periodic_task_defaults_are_listed_and_editable(admin: Client) -> None:
    from django_celery_beat.models import PeriodicTask

    from apps.main.schedule import ensure_periodic_tasks

    ensure_periodic_tasks()
    task = PeriodicTask.objects.get(name="health-check-every-minute")
    page = admin.get(reverse("admin:django_celery_beat_periodictask_change", args=[task.pk]))
    assert page.status_code == 200 and b"apps.main.tasks.health_check" in page.content


@pytest.mark.live
def test_requeue_action_runs_the_task_again_on_its_queue(admin: Client, stack_workers: dict[str, str]) -> None:
    from django_celery_results.models import TaskResult

    dead = letter()
    response = admin.post(reverse("admin:main_deadletter_changelist"),
                          {"action": "requeue_selected", "_selected_action": [dead.pk]}, follow=True)
    assert b"Requeued 1 task" in response.content
    dead.refresh_from_db()
    assert dead.status == "requeued"
    result = app.AsyncResult(dead.requeued_task_id).get(timeout=scaled(30))
    assert result["snapshot_id"] and TaskResult.objects.get(task_id=dead.requeued_task_id).worker.startswith(
        "default@")


def test_discard_action_and_no_requeue_of_resolved_letters(admin: Client) -> None:
    dead, poison = letter(), letter(task_id="t-2", task_name="apps.main.tasks.no_such_task", reason="poison_message")
    changelist = reverse("admin:main_deadletter_changelist")
    admin.post(changelist, {"action": "discard_selected", "_selected_action": [dead.pk]})
    dead.refresh_from_db()
    assert dead.status == "discarded"
    response = admin.post(changelist, {"action": "requeue_selected", "_selected_action": [dead.pk, poison.pk]},
                          follow=True)
    assert b"only pending ones can be requeued" in response.content
    assert b"is not registered" in response.content
    poison.refresh_from_db()
    assert poison.status == "pending"
