"""Django system checks (``manage.py check``, run before every command) for settings that must agree."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.compatibility)
def limits_agree(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    api_depth = getattr(settings, "API_MAX_JSON_DEPTH", 0)
    if api_depth >= settings.TASK_MAX_ARGUMENT_DEPTH:
        messages.append(checks.Error(
            f"API_MAX_JSON_DEPTH ({api_depth}) must be below TASK_MAX_ARGUMENT_DEPTH "
            f"({settings.TASK_MAX_ARGUMENT_DEPTH}): the API would accept tasks the workers refuse",
            id="main.E001",
        ))
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout")
    if visibility is not None and visibility < settings.MIN_VISIBILITY_TIMEOUT:
        messages.append(checks.Warning(
            f"CELERY_VISIBILITY_TIMEOUT ({visibility} s) is shorter than the longest a live worker may hold a "
            f"message ({settings.MIN_VISIBILITY_TIMEOUT} s: retry cap + prefetched tasks' and its own time "
            "limit): such a task would be delivered to a second worker while it still runs",
            id="main.W001",
        ))
    task_max, api_max = settings.TASK_MAX_PAYLOAD_BYTES, getattr(settings, "API_MAX_BODY_BYTES", 0)
    if task_max < api_max:
        messages.append(checks.Warning(
            f"TASK_MAX_PAYLOAD_BYTES ({task_max}) is below API_MAX_BODY_BYTES ({api_max}): the API reads bodies whose "
            "task it then refuses to send (413); its default is 8 x API_MAX_BODY_BYTES",
            id="main.W002",
        ))
    return messages
