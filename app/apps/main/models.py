from __future__ import annotations

import uuid
from typing import Any

from django.db import models
from django.utils import timezone


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
    payload_claim = models.UUIDField(
        null=True, blank=True, db_index=True, editable=False,
        help_text="The stored body of a claim-checked message (a payload claim): kept while this letter is "
                  "pending, it is what a requeue sends.",
    )

    class Meta:
        ordering = ["-failed_at"]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}] ({self.reason})"


class PayloadClaim(models.Model):
    """The body of a task message above TASK_CLAIM_CHECK_BYTES (apps.main.payload_claims): the message in the broker
    carries only a reference to it. Deleted once that message is acknowledged; kept while a pending dead letter
    refers to it; one nobody claims (a failed publish, a purged queue) is deleted after TASK_CLAIM_RETENTION_HOURS."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task_id = models.CharField(max_length=255, db_index=True)
    task_name = models.CharField(max_length=255)
    body = models.BinaryField(help_text="The message body as serialized, then compressed when ``compression`` says so.")
    content_type = models.CharField(max_length=128, help_text="The serializer's content type (before the claim).")
    content_encoding = models.CharField(max_length=64)
    compression = models.CharField(max_length=64, blank=True,
                                   help_text="kombu's content type of the compression of ``body``; empty: none.")
    size = models.PositiveBigIntegerField(help_text="Bytes of the serialized body before compression.")
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}] ({self.size} B)"


class ApiToken(models.Model):
    """A bearer token of the task API and what it may do. Only the token's SHA-256 digest is stored
    (apps.main.api.tokens); the token itself is shown once, when it is issued."""

    name = models.CharField(max_length=100, unique=True, help_text="Who or what uses it, e.g. “billing-service”.")
    shown_part = models.CharField(max_length=16, editable=False,
                                  help_text="The token's first characters, to tell tokens apart.")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    tasks = models.JSONField(default=list, blank=True, help_text="Short names of the tasks it may enqueue.")
    can_read_results = models.BooleanField(default=False, help_text="May read the state and result of any task.")
    rate_limit = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Requests per API_RATE_LIMIT_WINDOW_SECONDS (60 s by default); empty: API_RATE_LIMIT.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Refused from this time on; empty: never.")
    revoked_at = models.DateTimeField(null=True, blank=True, help_text="Refused from this time on, for good.")

    class Meta:
        ordering = ["name"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.shown_part}…)"

    def refusal(self, now: Any) -> str | None:
        """Why this token cannot be used at ``now``, or None."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked token"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired token"
        return None


class ApiAuditEvent(models.Model):
    """One call of a task route of the API, allowed or refused (apps.main.api.audit)."""

    class Action(models.TextChoices):
        ENQUEUE = "enqueue"
        READ_RESULT = "read_result"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    token = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    token_name = models.CharField(max_length=100, blank=True, help_text="Kept should the token be deleted.")
    action = models.CharField(max_length=16, choices=Action.choices)
    task = models.CharField(max_length=64, blank=True, help_text="The task asked for (enqueue).")
    task_id = models.CharField(max_length=64, blank=True, help_text="The id issued (enqueue) or read.")
    status = models.PositiveSmallIntegerField(help_text="The HTTP status answered.")
    allowed = models.BooleanField()
    reason = models.CharField(max_length=200, blank=True, help_text="Why it was refused.")
    client_address = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-at"]
        verbose_name = "API audit event"
        indexes = [models.Index(fields=["token", "-at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.token_name or '-'} {self.action} {self.task or self.task_id}"
