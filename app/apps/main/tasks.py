"""The seven background tasks. Each does real work; routing lives in apps.main.queues.

``track_started`` (a STARTED row written when the task starts: one more statement and commit) is on
for the tasks that run for seconds, where a client polling the API wants to tell "running" from
"queued"; the millisecond tasks go from PENDING to their final state. Runtimes are known either way
(the final state carries ``date_started``, see ``results_backend``).
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import requests
from celery import shared_task
from django.conf import settings
from django.core import serializers
from django.core.mail import send_mail
from django.db import connection
from django.db.models import Count
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.main import checks, deadletter, payload_claims
from apps.main.base_task import ReliableTask
from apps.main.models import AnalyticsSnapshot, ApiAuditEvent, DeadLetter, Heartbeat, Notification, UserAction
from apps.main.queues import task_name
from apps.main.retry import PermanentError, TransientError
from apps.main.single_statement import insert_if_absent

CHANNELS = ("email", "webhook", "in_app")


@shared_task(bind=True, base=ReliableTask, name=task_name("send_notification"))
def send_notification(
    self: ReliableTask,
    channel: str,
    recipient: str,
    message: str,
    subject: str = "",
    notification_id: str | None = None,
) -> dict[str, Any]:
    """Deliver a notification by email, webhook (HTTP POST) or as an in-app record.

    ``notification_id`` (default: the task id, stable across retries) makes it idempotent. An in-app
    notification is one ``INSERT … ON CONFLICT DO NOTHING``: recorded exactly once, whatever the
    deliveries. Email and webhook are sent only when no record of the id exists, and recorded after
    the send: a redelivery after a lost acknowledgement sends nothing, but a crash between the send and
    its record sends again (at least once; the webhook body carries the id for the receiver to dedupe).
    """
    if channel not in CHANNELS:
        raise PermanentError(f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}")
    notification_id = notification_id or self.request.id or uuid.uuid4().hex
    record = Notification(notification_id=notification_id, channel=channel, recipient=recipient,
                          subject=subject, message=message, status=Notification.Status.UNREAD)
    if channel != "in_app":
        if Notification.objects.filter(notification_id=notification_id).exists():
            return {"notification_id": notification_id, "channel": channel, "duplicate": True}
        if channel == "email":
            send_mail(subject or "Notification", message, settings.DEFAULT_FROM_EMAIL, [recipient])
        else:
            _post_webhook(recipient, {"id": notification_id, "subject": subject, "message": message})
        record.status = Notification.Status.SENT
    created = insert_if_absent(record)
    return {"notification_id": notification_id, "channel": channel, "duplicate": not created}


def _post_webhook(url: str, body: dict[str, Any]) -> None:
    response = requests.post(url, json=body, timeout=settings.WEBHOOK_TIMEOUT_SECONDS)
    # 408/429 and 5xx may pass; any other 4xx means the request itself is wrong.
    if response.status_code in (408, 429) or response.status_code >= 500:
        raise TransientError(f"webhook {url} answered {response.status_code}")
    if response.status_code >= 400:
        raise PermanentError(f"webhook {url} rejected the notification with {response.status_code}")


@shared_task(bind=True, base=ReliableTask, name=task_name("process_user_action"))
def process_user_action(
    self: ReliableTask,
    action_id: str,
    user_id: str,
    action: str,
    payload: dict[str, Any] | None = None,
    occurred_at: str | None = None,
) -> dict[str, Any]:
    """Record a user action once: a second delivery of the same ``action_id`` changes nothing.

    One ``INSERT … ON CONFLICT DO NOTHING`` (one round trip, one commit): the unique index on
    ``action_id`` decides, so even two deliveries running at the same moment record it once.
    """
    when = parse_datetime(occurred_at) if occurred_at else timezone.now()
    if when is None:
        raise PermanentError(f"occurred_at {occurred_at!r} is not an ISO 8601 date-time")
    created = insert_if_absent(UserAction(
        action_id=action_id, user_id=str(user_id), action=action, payload=payload or {}, occurred_at=when,
    ))
    return {"action_id": action_id, "created": created}


@shared_task(bind=True, base=ReliableTask, name=task_name("update_analytics"), track_started=True)
def update_analytics(self: ReliableTask, window_minutes: int = 5) -> dict[str, Any]:
    """Aggregate user actions (all time and the last window) into a stored snapshot."""
    since = timezone.now() - timedelta(minutes=window_minutes)
    by_type = dict(
        UserAction.objects.values_list("action").annotate(n=Count("id")).order_by("action").values_list(
            "action", "n"
        )
    )
    snapshot = AnalyticsSnapshot.objects.create(
        window_minutes=window_minutes,
        total_actions=sum(by_type.values()),
        window_actions=UserAction.objects.filter(occurred_at__gte=since).count(),
        unique_users=UserAction.objects.values("user_id").distinct().count(),
        actions_by_type=by_type,
    )
    return {
        "snapshot_id": snapshot.pk,
        "total_actions": snapshot.total_actions,
        "window_actions": snapshot.window_actions,
        "unique_users": snapshot.unique_users,
    }


@shared_task(bind=True, base=ReliableTask, name=task_name("cleanup_temp_files"), track_started=True)
def cleanup_temp_files(self: ReliableTask, max_age_seconds: int | None = None) -> dict[str, int]:
    """Remove temp files older than ``max_age_seconds``, expired cache entries, expired results, API audit
    events older than API_AUDIT_RETENTION_DAYS and payload claims nothing took within TASK_CLAIM_RETENTION_HOURS."""
    from django.core.cache import cache
    from django_celery_results.models import TaskResult

    max_age = settings.TEMP_FILE_MAX_AGE_SECONDS if max_age_seconds is None else max_age_seconds
    cutoff = timezone.now().timestamp() - max_age
    root = Path(settings.TEMP_FILES_DIR)
    files_removed = dirs_removed = 0
    if root.is_dir():
        for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_symlink() or path.is_file():
                if path.lstat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    files_removed += 1
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
                dirs_removed += 1

    cache_entries_removed = 0
    if settings.CACHES["default"]["BACKEND"].endswith("DatabaseCache"):
        # Redis expires keys itself; the database cache keeps expired rows until someone deletes them.
        table = connection.ops.quote_name(settings.CACHES["default"]["LOCATION"])
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {table} WHERE expires < %s", [timezone.now()])
            cache_entries_removed = cursor.rowcount
    cache.delete("celery-stack:cleanup:probe")

    expires = timezone.now() - timedelta(seconds=settings.CELERY_RESULT_EXPIRES)
    results_removed, _ = TaskResult.objects.filter(date_done__lt=expires).delete()
    audit_horizon = timezone.now() - timedelta(days=settings.API_AUDIT_RETENTION_DAYS)
    audit_events_removed, _ = ApiAuditEvent.objects.filter(at__lt=audit_horizon).delete()
    claims_removed = payload_claims.prune()
    return {
        "files_removed": files_removed,
        "dirs_removed": dirs_removed,
        "cache_entries_removed": cache_entries_removed,
        "results_removed": results_removed,
        "audit_events_removed": audit_events_removed,
        "payload_claims_removed": claims_removed,
    }


@shared_task(bind=True, base=ReliableTask, name=task_name("health_check"))
def health_check(self: ReliableTask) -> dict[str, Any]:
    """Check database, broker and cache; record the time of the last success."""
    deadletter.flush_spool()  # store dead letters spooled while the database was down (never raises)
    results = checks.run(("database", "broker", "cache"))
    if failures := checks.failed(results):
        raise TransientError(f"health check failed: {json.dumps(failures)}")
    now = timezone.now()
    Heartbeat.objects.update_or_create(name="health_check", defaults={"last_success": now, "details": results})
    return {"status": "healthy", "checks": results, "checked_at": now.isoformat()}


health_check.dead_letter = False  # runs every minute; its silence is alerted on, not each failure


@shared_task(bind=True, base=ReliableTask, name=task_name("generate_reports"), track_started=True)
def generate_reports(self: ReliableTask, report_type: str = "system", hours: int = 24) -> dict[str, Any]:
    """Write a system/performance report (JSON) from task results, analytics and dead letters."""
    from django.db.models import Avg, DurationField, ExpressionWrapper, F
    from django_celery_results.models import TaskResult

    if report_type not in ("system", "performance"):
        raise PermanentError(f"unknown report_type {report_type!r}; expected 'system' or 'performance'")
    now = timezone.now()
    results = TaskResult.objects.filter(date_done__gte=now - timedelta(hours=hours))
    by_state = dict(results.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    report: dict[str, Any] = {
        "type": report_type,
        "generated_at": now.isoformat(),
        "window_hours": hours,
        "tasks_by_state": by_state,
        "dead_letters_pending": DeadLetter.objects.filter(status=DeadLetter.Status.PENDING).count(),
    }
    if report_type == "performance":
        runtime = ExpressionWrapper(F("date_done") - F("date_started"), output_field=DurationField())
        rows = (
            results.exclude(date_started=None).values("task_name")
            .annotate(count=Count("id"), avg_runtime=Avg(runtime)).order_by("task_name")
        )
        report["runtime_by_task"] = {
            row["task_name"]: {
                "count": row["count"],
                "avg_seconds": row["avg_runtime"].total_seconds() if row["avg_runtime"] else None,
            }
            for row in rows
        }
    else:
        latest = AnalyticsSnapshot.objects.order_by("-created_at").first()
        report["analytics"] = (
            {"total_actions": latest.total_actions, "unique_users": latest.unique_users,
             "actions_by_type": latest.actions_by_type, "at": latest.created_at.isoformat()}
            if latest else None
        )
        beat = Heartbeat.objects.filter(name="health_check").first()
        report["last_healthy_at"] = beat.last_success.isoformat() if beat else None

    reports_dir = Path(settings.REPORTS_DIR)
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"{report_type}-report-{now:%Y%m%dT%H%M%S%fZ}.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=True))
    return {"path": str(path), "tasks": sum(by_state.values())}


@shared_task(bind=True, base=ReliableTask, name=task_name("backup_data"), track_started=True)
def backup_data(self: ReliableTask, models: list[str] | None = None, keep: int | None = None) -> dict[str, Any]:
    """Dump the chosen models to a timestamped JSON file and keep only the newest ``keep`` backups."""
    from django.apps import apps as django_apps

    labels = models or settings.BACKUP_MODELS
    keep = settings.BACKUP_KEEP if keep is None else keep
    if keep < 1:
        raise PermanentError("keep must be at least 1")
    try:
        model_classes = [django_apps.get_model(label) for label in labels]
    except (LookupError, ValueError) as exc:
        raise PermanentError(f"unknown model in {labels}: {exc}") from exc

    backup_dir = Path(settings.BACKUP_DIR)
    backup_dir.mkdir(parents=True, exist_ok=True)
    now = timezone.now()
    path = backup_dir / f"backup-{now:%Y%m%dT%H%M%S%fZ}.json"
    counts: dict[str, int] = {}
    partial = path.with_suffix(".partial")
    with partial.open("w") as stream:
        objects = []
        for model in model_classes:
            rows = list(model.objects.all())
            counts[model._meta.label] = len(rows)
            objects.extend(rows)
        serializers.serialize("json", objects, stream=stream)
    partial.rename(path)  # a crash mid-dump never leaves a truncated file that looks complete

    backups = sorted(backup_dir.glob("backup-*.json"))
    removed = [old.name for old in backups[:-keep]]
    for name in removed:
        (backup_dir / name).unlink(missing_ok=True)
    return {"path": str(path), "counts": counts, "removed": removed}
