"""Validated arguments of each task the API may enqueue: the allow-list and its OpenAPI schema."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.validators import EmailValidator, URLValidator
from rest_framework import serializers


class TaskArguments(serializers.Serializer):
    """Keyword arguments of one task; unknown keys are an error, not silently dropped."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["expected a JSON object of arguments"]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            allowed = ", ".join(sorted(self.fields)) or "none"
            raise serializers.ValidationError(
                {key: [f"unknown argument; this task accepts: {allowed}"] for key in unknown}
            )
        return super().to_internal_value(data)

    def task_kwargs(self) -> dict[str, Any]:
        """JSON-serialisable kwargs for the task (the only serializer the broker accepts is JSON)."""
        return {key: value for key, value in self.validated_data.items() if value is not None}


class SendNotificationArguments(TaskArguments):
    channel = serializers.ChoiceField(choices=["email", "webhook", "in_app"])
    recipient = serializers.CharField(
        max_length=500, help_text="An e-mail address, an http(s) URL, or a user id for in_app."
    )
    message = serializers.CharField(max_length=10_000)
    subject = serializers.CharField(max_length=200, required=False, allow_blank=True)
    notification_id = serializers.CharField(max_length=64, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        channel, recipient = attrs["channel"], attrs["recipient"]
        try:
            if channel == "email":
                EmailValidator()(recipient)
            elif channel == "webhook":
                URLValidator(schemes=["http", "https"])(recipient)
        except Exception as exc:
            raise serializers.ValidationError(
                {"recipient": [f"not a valid {'e-mail address' if channel == 'email' else 'URL'}"]}
            ) from exc
        return attrs


class ProcessUserActionArguments(TaskArguments):
    action_id = serializers.CharField(max_length=64, help_text="Idempotency key: one action is recorded once.")
    user_id = serializers.CharField(max_length=64)
    action = serializers.SlugField(max_length=64)
    payload = serializers.DictField(required=False)
    occurred_at = serializers.DateTimeField(required=False)

    def task_kwargs(self) -> dict[str, Any]:
        kwargs = super().task_kwargs()
        if "occurred_at" in kwargs:
            kwargs["occurred_at"] = kwargs["occurred_at"].isoformat()
        return kwargs


class UpdateAnalyticsArguments(TaskArguments):
    window_minutes = serializers.IntegerField(min_value=1, max_value=24 * 60, required=False)


class CleanupTempFilesArguments(TaskArguments):
    max_age_seconds = serializers.IntegerField(min_value=0, max_value=365 * 24 * 3600, required=False)


class HealthCheckArguments(TaskArguments):
    pass


class GenerateReportsArguments(TaskArguments):
    report_type = serializers.ChoiceField(choices=["system", "performance"], required=False)
    hours = serializers.IntegerField(min_value=1, max_value=24 * 30, required=False)


class BackupDataArguments(TaskArguments):
    models = serializers.ListField(
        child=serializers.ChoiceField(choices=settings.BACKUP_MODELS), required=False, allow_empty=False
    )
    keep = serializers.IntegerField(min_value=1, max_value=1000, required=False)


#: The allow-list: short task name -> its arguments. A name not here is a 404.
TASK_ARGUMENTS: dict[str, type[TaskArguments]] = {
    "send_notification": SendNotificationArguments,
    "process_user_action": ProcessUserActionArguments,
    "update_analytics": UpdateAnalyticsArguments,
    "cleanup_temp_files": CleanupTempFilesArguments,
    "health_check": HealthCheckArguments,
    "generate_reports": GenerateReportsArguments,
    "backup_data": BackupDataArguments,
}


class TaskAccepted(serializers.Serializer):
    id = serializers.CharField()
    task = serializers.CharField()
    queue = serializers.CharField()
    status_url = serializers.CharField()


class ApiError(serializers.Serializer):
    """The body of every error but a 400 on invalid arguments (that one names each field)."""

    detail = serializers.CharField(help_text="Why the request failed.")


class TaskStatus(serializers.Serializer):
    id = serializers.CharField()
    task = serializers.CharField(allow_null=True)
    state = serializers.CharField()
    ready = serializers.BooleanField()
    result = serializers.JSONField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    worker = serializers.CharField(allow_null=True)
    queue = serializers.CharField(allow_null=True)
    date_done = serializers.DateTimeField(allow_null=True)
