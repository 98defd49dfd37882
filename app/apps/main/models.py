from __future__ import annotations

from django.db import models


class UserAction(models.Model):
    """A user action recorded by ``process_user_action``; ``action_id`` makes processing idempotent."""

    action_id = models.CharField(max_length=64, unique=True)
    user_id = models.CharField(max_length=64, db_index=True)
    action = models.CharField(max_length=64, db_index=True)
    payload = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField(db_index=True)
    processed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-occurred_at"]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.action} ({self.action_id})"


class Notification(models.Model):
    class Channel(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook"
        IN_APP = "in_app"

    class Status(models.TextChoices):
        SENT = "sent"
        UNREAD = "unread"
        READ = "read"

    notification_id = models.CharField(max_length=64, unique=True)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    recipient = models.CharField(max_length=500)
    subject = models.CharField(max_length=200, blank=True)
    message = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.channel} to {self.recipient}: {self.subject or self.message[:40]}"


class AnalyticsSnapshot(models.Model):
    """What ``update_analytics`` computed at one moment."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    window_minutes = models.PositiveIntegerField()
    total_actions = models.PositiveIntegerField()
    window_actions = models.PositiveIntegerField()
    unique_users = models.PositiveIntegerField()
    actions_by_type = models.JSONField(default=dict)

    class Meta:
        ordering = ["-created_at"]
        get_latest_by = "created_at"

    def __str__(self) -> str:
        return f"analytics at {self.created_at:%Y-%m-%d %H:%M:%S}"


class Heartbeat(models.Model):
    """Time of the last success of a periodic check (health_check), one row per name."""

    name = models.CharField(max_length=64, unique=True)
    last_success = models.DateTimeField()
    details = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.name} @ {self.last_success:%Y-%m-%d %H:%M:%S}"


class DeadLetter(models.Model):
    """A task that failed for good: exhausted its retries, failed permanently or could not be decoded."""

    class Reason(models.TextChoices):
        RETRIES_EXHAUSTED = "retries_exhausted"
        PERMANENT_ERROR = "permanent_error"
        TIME_LIMIT = "time_limit"
        POISON_MESSAGE = "poison_message"
        POISON = "poison"

    class Status(models.TextChoices):
        PENDING = "pending"
        REQUEUED = "requeued"
        DISCARDED = "discarded"

    task_id = models.CharField(max_length=255, db_index=True)
    task_name = models.CharField(max_length=255, db_index=True)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    queue = models.CharField(max_length=255)
    reason = models.CharField(max_length=32, choices=Reason.choices)
    exception = models.TextField()
    traceback = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=1)
    raw_body = models.TextField(blank=True, help_text="The undecodable message, for poison messages.")
    first_attempt_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    requeued_task_id = models.CharField(max_length=255, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    sanitised = models.BooleanField(
        default=False,
        help_text="Some content was escaped, replaced or cut to be storable (see apps.main.deadletter): "
                  "a requeue sends the stored arguments, not the original ones.",
    )
    spool_id = models.UUIDField(
        null=True, blank=True, unique=True, editable=False,
        help_text="Set when the letter waited in the spool: storing it twice is impossible.",
    )

    class Meta:
        ordering = ["-failed_at"]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}] ({self.reason})"
