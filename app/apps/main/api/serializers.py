"""Validated arguments of each task the API may enqueue: the allow-list and its OpenAPI schema.

Every rule a field checks is one drf-spectacular publishes (apps.main.api.schema), so the schema and the
validation cannot disagree: a type the field refuses to coerce (DRF's CharField would take ``5``, its
IntegerField ``"5"``), ``min_length``/``max_length``, and one ``RegexValidator`` per string field. Patterns
are written with ``\\A`` and ``\\Z``, which drf-spectacular publishes as JSON Schema's (ECMA 262) ``^`` and
``$``: a Python ``$`` would also match before a final newline, an ECMA one does not. ``[0-9]``, never
``\\d`` (in Python it also matches other scripts' digits).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.validators import RegexValidator
from rest_framework import serializers
from rest_framework.fields import empty

from apps.main.tasks import CHANNELS

#: Text PostgreSQL can store: no U+0000. (Nor a lone surrogate; the parser refuses both anywhere in a body,
#: but a surrogate cannot be written in a pattern every JSON Schema engine compiles: the schema says it in words.)
#: Any string of a free-form object (apps.main.api.limits checks them, this states it), and a field's text: one
#: character at least, so that drf-spectacular's "pattern or empty" for a blank-allowing field is a true oneOf.
ANY_STORABLE_TEXT = RegexValidator(r"\A[^\x00]*\Z", "U+0000 (NUL) cannot be stored.")
STORABLE_TEXT = RegexValidator(r"\A[^\x00]+\Z", "U+0000 (NUL) cannot be stored.")
SLUG = RegexValidator(r"\A[-a-zA-Z0-9_]+\Z", "Enter letters, digits, '-' or '_' only.")
# A dot-atom local part at a DNS name with a top-level domain of letters, or at localhost as Django's
# EmailValidator allows (the ASCII addresses SMTP takes).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL = RegexValidator(rf"\A{_ATOM}(?:\.{_ATOM})*@(?:(?:{_LABEL}\.)+[A-Za-z]{{2,63}}|localhost)\Z",
                       "Enter a valid e-mail address.")
# http(s), a host name or IPv4 address, a port 1-65535, then path, query and fragment in URL characters.
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
_URL_CHAR = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@/?#-]|%[0-9A-Fa-f]{2})"
WEBHOOK_URL = RegexValidator(rf"\Ahttps?://{_LABEL}(?:\.{_LABEL})*(?::{_PORT})?(?:[/?#]{_URL_CHAR}*)?\Z",
                             "Enter a valid http(s) URL.")
# RFC 3339 (JSON Schema's "date-time") within what an action's time can be: years 1900-2999 (any offset then
# stays inside Python's datetime in UTC), seconds 00-59 (Python has no leap second). Numbered groups (a named
# one is not ECMA 262): year, month, day, hour, minute, second, fraction, Z, offset sign, hours, minutes.
DATE_TIME = RegexValidator(
    r"\A((?:19|2[0-9])[0-9]{2})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"[Tt]([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([01][0-9]|2[0-3]):([0-5][0-9]))\Z",
    "Datetime has wrong format: RFC 3339, e.g. 2024-05-01T12:00:00Z, in the years 1900-2999.",
)

#: The recipient a channel takes: the rule the API checks and the schema's one alternative per channel.
RECIPIENTS: dict[str, tuple[RegexValidator, str]] = {
    "email": (EMAIL, "An e-mail address."),
    "webhook": (WEBHOOK_URL, "An http(s) URL the notification is POSTed to."),
    "in_app": (STORABLE_TEXT, "The id of the user the notification is for."),
}
if tuple(RECIPIENTS) != CHANNELS:
    raise ImproperlyConfigured(f"one recipient rule per channel the task knows: {CHANNELS}")
RECIPIENT_MAX_LENGTH = 500


class Text(serializers.CharField):
    """A JSON string, as given: not a number turned into one, not trimmed (the schema could not say so),
    non-empty unless ``allow_blank``, and matching ``pattern`` (default: storable text)."""

    def __init__(self, *, pattern: RegexValidator = STORABLE_TEXT, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        if not kwargs.get("allow_blank"):
            kwargs.setdefault("min_length", 1)
        super().__init__(**kwargs)
        self.validators.append(pattern)  # the only RegexValidator: drf-spectacular publishes the first one

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class DateTimeText(Text):
    """An RFC 3339 date-time (format ``date-time`` and the ``DATE_TIME`` pattern), given to the task in UTC."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(pattern=DATE_TIME, max_length=64, **kwargs)

    def run_validation(self, data: Any = empty) -> datetime:
        text = super().run_validation(data)  # a string the pattern matched
        parts = DATE_TIME.regex.match(text)
        assert parts is not None
        year, month, day, hour, minute, second, fraction, _utc, sign, offset_hours, offset_minutes = parts.groups()
        offset = timedelta(hours=int(offset_hours or 0), minutes=int(offset_minutes or 0))
        try:
            value = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                             int((fraction or "")[:6].ljust(6, "0")),
                             tzinfo=timezone(-offset if sign == "-" else offset))
        except ValueError:  # a day the month does not have (the schema's date-time format refuses it too)
            raise serializers.ValidationError(DATE_TIME.message, code="invalid") from None
        return value.astimezone(UTC)


class Integer(serializers.IntegerField):
    """A JSON integer (``5`` or ``5.0``), not a string of digits, a fraction or a boolean."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not (isinstance(data, int) or (isinstance(data, float) and data.is_integer())):
            self.fail("invalid")
        return super().to_internal_value(int(data))


class JsonObject(serializers.DictField):
    """A free-form JSON object (the parser refused U+0000 and lone surrogates in it, keys included)."""


class TaskArguments(serializers.Serializer):
    """Keyword arguments of one task; unknown keys are an error, not silently dropped."""

    #: Request bodies the docs page offers (title -> body); schemathesis sends them too, so each must pass.
    examples: ClassVar[dict[str, dict[str, Any]]] = {"No arguments": {}}

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


def recipient_field(channel: str) -> Text:
    pattern, description = RECIPIENTS[channel]
    return Text(max_length=RECIPIENT_MAX_LENGTH, pattern=pattern, help_text=description)


class SendNotificationArguments(TaskArguments):
    """The recipient's form depends on the channel (RECIPIENTS): the schema has one alternative per channel."""

    channel = serializers.ChoiceField(choices=list(CHANNELS))
    recipient = Text(max_length=RECIPIENT_MAX_LENGTH,
                     help_text="An e-mail address, an http(s) URL, or a user id for in_app.")
    message = Text(max_length=10_000)
    subject = Text(max_length=200, required=False, allow_blank=True)
    notification_id = Text(max_length=64, required=False)

    examples: ClassVar[dict[str, dict[str, Any]]] = {
        "In-app": {"channel": "in_app", "recipient": "user-42", "subject": "Welcome", "message": "Hello!"},
        "E-mail": {"channel": "email", "recipient": "user@example.com", "subject": "Report", "message": "Ready."},
        "Webhook": {"channel": "webhook", "recipient": "https://hooks.example.com/notify", "message": "Done."},
    }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        try:
            recipient_field(attrs["channel"]).run_validation(attrs["recipient"])
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"recipient": exc.detail}) from exc
        return attrs


class ProcessUserActionArguments(TaskArguments):
    action_id = Text(max_length=64, help_text="Idempotency key: one action is recorded once.")
    user_id = Text(max_length=64)
    action = Text(max_length=64, pattern=SLUG)
    payload = JsonObject(required=False)
    occurred_at = DateTimeText(required=False)

    examples: ClassVar[dict[str, dict[str, Any]]] = {"A login": {
        "action_id": "login-2024-0001", "user_id": "user-42", "action": "login", "payload": {"ip": "203.0.113.7"},
        "occurred_at": "2024-05-01T12:00:00Z"}}

    def task_kwargs(self) -> dict[str, Any]:
        kwargs = super().task_kwargs()
        if "occurred_at" in kwargs:
            kwargs["occurred_at"] = kwargs["occurred_at"].isoformat()
        return kwargs


class UpdateAnalyticsArguments(TaskArguments):
    window_minutes = Integer(min_value=1, max_value=24 * 60, required=False)

    examples: ClassVar[dict[str, dict[str, Any]]] = {"The last hour": {"window_minutes": 60}}


class CleanupTempFilesArguments(TaskArguments):
    max_age_seconds = Integer(min_value=0, max_value=365 * 24 * 3600, required=False)

    examples: ClassVar[dict[str, dict[str, Any]]] = {"Older than a day": {"max_age_seconds": 86400}}


class HealthCheckArguments(TaskArguments):
    pass


class GenerateReportsArguments(TaskArguments):
    report_type = serializers.ChoiceField(choices=["system", "performance"], required=False)
    hours = Integer(min_value=1, max_value=24 * 30, required=False)

    examples: ClassVar[dict[str, dict[str, Any]]] = {"Performance, last day": {"report_type": "performance",
                                                                                "hours": 24}}


class BackupDataArguments(TaskArguments):
    models = serializers.ListField(child=serializers.ChoiceField(choices=settings.BACKUP_MODELS), required=False,
                                   min_length=1)
    keep = Integer(min_value=1, max_value=1000, required=False)

    examples: ClassVar[dict[str, dict[str, Any]]] = {"User actions": {"models": ["main.UserAction"], "keep": 7}}


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
    id = serializers.UUIDField()
    task = serializers.CharField()
    queue = serializers.CharField()
    status_url = serializers.URLField()


class ApiError(serializers.Serializer):
    """The body of every error but a 400 on invalid arguments (that one names each field)."""

    detail = serializers.CharField(help_text="Why the request failed.")


class TaskStatus(serializers.Serializer):
    id = serializers.UUIDField()
    task = serializers.CharField(allow_null=True)
    state = serializers.CharField()
    ready = serializers.BooleanField()
    # Any JSON value, null included: allow_null would publish a oneOf that null matches twice (OAS 3.1).
    result = serializers.JSONField()
    error = serializers.CharField(allow_null=True)
    worker = serializers.CharField(allow_null=True)
    queue = serializers.CharField(allow_null=True)
    date_done = serializers.DateTimeField(allow_null=True)
