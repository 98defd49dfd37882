"""Every task end to end: sent by name, routed to its queue, run by that queue's pool (real workers)."""

from __future__ import annotations

import itertools
import json
import os
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from apps.main.models import AnalyticsSnapshot, DeadLetter, Heartbeat, Notification, UserAction
from apps.main.queues import TASK_NAMES, WORKER_POOLS, queue_for, task_name
from embedded.network import wait_until
from portfolio_site.celery import app
from tests.support.timeouts import scaled
from tests.support.webhook import webhook_server

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def run(short: str, timeout: float = 30, **kwargs):
    result = app.send_task(task_name(short), kwargs=kwargs)
    return result, result.get(timeout=timeout)


def pool_of(task_id: str) -> str:
    from django_celery_results.models import TaskResult

    return TaskResult.objects.get(task_id=task_id).worker.split("@")[0]


SAMPLE_KWARGS = {
    "send_notification": {"channel": "in_app", "recipient": "user-1", "message": "hi"},
    "process_user_action": {"action_id": "a-1", "user_id": "u-1", "action": "login"},
    "update_analytics": {},
    "cleanup_temp_files": {},
    "health_check": {},
    "generate_reports": {},
    "backup_data": {"models": ["main.UserAction"]},
}


@pytest.mark.parametrize("short", TASK_NAMES)
def test_each_task_runs_on_the_pool_of_its_queue(short: str, stack_workers: dict[str, str]) -> None:
    result, _ = run(short, **SAMPLE_KWARGS[short])
    assert result.successful()
    pool = pool_of(result.id)
    assert queue_for(short) in WORKER_POOLS[pool].queues, f"{short} ran on {pool}"


def test_unrouted_task_lands_on_default_queue_not_celery() -> None:
    assert queue_for("health_check") == "default"
    assert app.amqp.router.route({}, task_name("health_check"))["queue"].name == "default"


def test_process_user_action_is_idempotent(stack_workers: dict[str, str]) -> None:
    kwargs = {"action_id": f"act-{uuid.uuid4().hex}", "user_id": "u-7", "action": "purchase",
              "payload": {"amount": 3}}
    _, first = run("process_user_action", **kwargs)
    _, second = run("process_user_action", **kwargs)
    assert (first["created"], second["created"]) == (True, False)
    assert UserAction.objects.filter(action_id=kwargs["action_id"]).count() == 1


def test_update_analytics_aggregates_actions(stack_workers: dict[str, str]) -> None:
    for i, action in enumerate(["login", "login", "purchase"]):
        run("process_user_action", action_id=f"agg-{i}", user_id=f"u-{i % 2}", action=action)
    _, out = run("update_analytics", window_minutes=60)
    snapshot = AnalyticsSnapshot.objects.get(pk=out["snapshot_id"])
    assert snapshot.actions_by_type == {"login": 2, "purchase": 1}
    assert (snapshot.total_actions, snapshot.window_actions, snapshot.unique_users) == (3, 3, 2)


def test_send_notification_email_goes_through_the_email_backend(stack_workers: dict[str, str]) -> None:
    mail_dir = Path(settings.EMAIL_FILE_PATH)
    before = set(mail_dir.glob("*")) if mail_dir.exists() else set()
    _, out = run("send_notification", channel="email", recipient="ops@example.com",
                 subject="Disk", message="disk almost full")
    new = set(mail_dir.glob("*")) - before
    assert len(new) == 1 and "disk almost full" in new.pop().read_text()
    assert Notification.objects.get(notification_id=out["notification_id"]).status == "sent"


def test_send_notification_webhook_posts_json(stack_workers: dict[str, str]) -> None:
    with webhook_server([200]) as hook:
        _, out = run("send_notification", channel="webhook", recipient=hook.url, subject="s", message="m")
    assert [body["message"] for _, body in hook.calls] == ["m"]
    assert out["channel"] == "webhook"


def test_transient_webhook_errors_are_retried_with_backoff_then_succeed(stack_workers: dict[str, str]) -> None:
    from apps.main.retry import policy_for

    with webhook_server([503, 503, 200]) as hook:
        result, out = run("send_notification", channel="webhook", recipient=hook.url, message="m")
    times = [t for t, _ in hook.calls]
    assert len(times) == 3 and out["duplicate"] is False
    policy = policy_for("send_notification")
    for retries_done, gap in enumerate(b - a for a, b in itertools.pairwise(times)):
        low, high = policy.delay_bounds(retries_done)
        # Lower bound is exact; above it allow for the worker's timer resolution and scheduling.
        assert low - 0.05 <= gap <= high + 1.0, (retries_done, gap, low, high)
    assert not DeadLetter.objects.filter(task_id=result.id).exists()


def test_permanent_error_fails_at_once_and_is_dead_lettered(stack_workers: dict[str, str]) -> None:
    with webhook_server([400]) as hook:
        result = app.send_task(task_name("send_notification"),
                               kwargs={"channel": "webhook", "recipient": hook.url, "message": "m"})
        with pytest.raises(Exception, match="rejected"):
            result.get(timeout=scaled(30))
    assert len(hook.calls) == 1
    letter = wait_for_dead_letter(result.id)
    assert (letter.reason, letter.attempts, letter.queue) == ("permanent_error", 1, "high_priority")
    # send_notification's letters are sealed (apps.main.payload_encryption): opened with the keys.
    from apps.main import deadletter, payload_encryption

    assert deadletter.arguments(letter)[1]["recipient"] == hook.url and "PermanentError" in letter.exception
    assert "Traceback" in payload_encryption.reveal(letter.traceback)


def test_exhausted_retries_are_dead_lettered_and_requeue_runs_again(stack_workers: dict[str, str]) -> None:
    from apps.main import deadletter
    from apps.main.retry import policy_for

    attempts = policy_for("send_notification").max_retries + 1
    with webhook_server([503] * attempts + [200]) as hook:
        result = app.send_task(task_name("send_notification"),
                               kwargs={"channel": "webhook", "recipient": hook.url, "message": "m"})
        with pytest.raises(Exception, match="503"):
            result.get(timeout=scaled(60))
        assert len(hook.calls) == attempts
        letter = wait_for_dead_letter(result.id)
        assert (letter.reason, letter.attempts) == ("retries_exhausted", attempts)

        new_id = deadletter.requeue(letter)
        assert app.AsyncResult(new_id).get(timeout=scaled(30))["channel"] == "webhook"
    assert len(hook.calls) == attempts + 1
    assert pool_of(new_id) == "high-priority"
    letter.refresh_from_db()
    assert (letter.status, letter.requeued_task_id) == ("requeued", new_id)


def test_wrong_arguments_fail_permanently(stack_workers: dict[str, str]) -> None:
    result = app.send_task(task_name("backup_data"), kwargs={"keep": 0})
    with pytest.raises(Exception, match="keep must be at least 1"):
        result.get(timeout=scaled(30))
    assert wait_for_dead_letter(result.id).reason == "permanent_error"


def test_poison_message_ends_in_the_dead_letter_store(stack_workers: dict[str, str], redis_client) -> None:
    """A message that no worker can run (an unregistered task name) is dead-lettered, not dropped."""
    task_id = str(uuid.uuid4())
    app.send_task("apps.main.tasks.no_such_task", args=[1, 2], task_id=task_id, queue="low_priority")
    letter = wait_for_dead_letter(task_id)
    assert letter.reason == "poison_message" and letter.task_name == "apps.main.tasks.no_such_task"
    assert letter.args == [1, 2] and letter.queue == "low_priority"


def test_undecodable_message_is_dead_lettered(stack_workers: dict[str, str]) -> None:
    """A pickle payload is refused (JSON only) and kept in the store with its raw body."""
    task_id = str(uuid.uuid4())
    with app.producer_or_acquire() as producer:
        producer.publish(
            b"\x80\x04not-json", routing_key="default", exchange="", serializer=None,
            content_type="application/x-python-serialize", content_encoding="binary",
            headers={"id": task_id, "task": task_name("health_check"), "lang": "py"},
        )
    letter = wait_for_dead_letter(task_id)
    assert letter.reason == "poison_message" and "not-json" in letter.raw_body


def test_cleanup_removes_old_files_and_expired_results(stack_workers: dict[str, str]) -> None:
    from django.utils import timezone
    from django_celery_results.models import TaskResult

    root = Path(settings.TEMP_FILES_DIR)
    (root / "nested").mkdir(parents=True, exist_ok=True)
    old, fresh = root / "nested" / "old.tmp", root / "fresh.tmp"
    old.write_text("x")
    fresh.write_text("y")
    stale = time.time() - 7200
    os.utime(old, (stale, stale))
    TaskResult.objects.create(task_id="expired-1", status="SUCCESS")
    # date_done is auto_now: age the row with an update, as time would.
    TaskResult.objects.filter(task_id="expired-1").update(date_done=timezone.now() - timezone.timedelta(hours=5))
    _, out = run("cleanup_temp_files", max_age_seconds=3600)
    assert not old.exists() and fresh.exists() and not (root / "nested").exists()
    assert out["files_removed"] >= 1 and out["results_removed"] >= 1
    assert not TaskResult.objects.filter(task_id="expired-1").exists()


def test_health_check_records_last_success(stack_workers: dict[str, str]) -> None:
    _, out = run("health_check")
    assert out["checks"] == {"database": "ok", "broker": "ok", "cache": "ok"}
    assert Heartbeat.objects.get(name="health_check").last_success.isoformat() == out["checked_at"]


@pytest.mark.parametrize("report_type", ["system", "performance"])
def test_generate_reports_writes_a_report_file(report_type: str, stack_workers: dict[str, str]) -> None:
    run("health_check")
    _, out = run("generate_reports", report_type=report_type)
    report = json.loads(Path(out["path"]).read_text())
    assert report["type"] == report_type and report["tasks_by_state"].get("SUCCESS", 0) >= 1
    if report_type == "performance":
        assert report["runtime_by_task"][task_name("health_check")]["avg_seconds"] >= 0


def test_backup_keeps_the_newest_n(stack_workers: dict[str, str]) -> None:
    run("process_user_action", action_id="b-1", user_id="u", action="x")
    paths = [run("backup_data", models=["main.UserAction"], keep=2)[1]["path"] for _ in range(3)]
    remaining = sorted(Path(settings.BACKUP_DIR).glob("backup-*.json"))
    assert [p.name for p in remaining][-2:] == [Path(p).name for p in paths[1:]]
    assert len(remaining) == 2
    dumped = json.loads(Path(paths[-1]).read_text())
    assert [row["fields"]["action_id"] for row in dumped] == ["b-1"]


def wait_for_dead_letter(task_id: str, timeout: float = 30) -> DeadLetter:
    return wait_until(lambda: DeadLetter.objects.filter(task_id=task_id).first(), timeout=timeout,
                      what=f"a dead letter for task {task_id}", interval=0.1)
