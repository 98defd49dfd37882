"""The API's routes, each with and without its trailing slash: APPEND_SLASH can only redirect a GET
(with DEBUG a POST to a slash-less URL raises), and a client should not have to know which it is.
Every other path under /api/ is a JSON 404."""

from collections.abc import Callable
from typing import Any

from django.urls import URLPattern, path, re_path
from drf_spectacular.views import SpectacularAPIView

from apps.main.api.errors import api_route_not_found
from apps.main.api.serializers import TASK_ARGUMENTS
from apps.main.api.views import TaskStatusView, UnknownTask, enqueue_view


def slash_optional(route: str, view: Callable[..., Any], name: str) -> list[URLPattern]:
    """``route`` and ``route/`` to one view under one name (the metrics count them as one view).
    reverse() gives the last pattern of a name, the canonical ``route/``; the schema lists only that."""
    return [path(route, view, name=name), path(f"{route}/", view, name=name)]


urlpatterns = [
    *slash_optional("schema", SpectacularAPIView.as_view(permission_classes=[]), "api-schema"),
    *slash_optional("tasks/<uuid:task_id>", TaskStatusView.as_view(), "task-status"),
    *(pattern for name in TASK_ARGUMENTS
      for pattern in slash_optional(f"tasks/{name}", enqueue_view(name).as_view(), f"enqueue-{name}")),
    *slash_optional("tasks/<str:name>", UnknownTask.as_view(), "unknown-task"),
    re_path(r"^", api_route_not_found, name="api-route-not-found"),
]
