"""The API's routes, each with and without its trailing slash: APPEND_SLASH can only redirect a GET
(with DEBUG a POST to a slash-less URL raises), and a client should not have to know which it is.
Every other path under /api/ is a JSON 404.

The schema (JSON, or YAML on asking) and its page, Swagger UI at /api/docs/, are public; the page loads its
assets from this site's static files (drf-spectacular-sidecar), never a CDN. (No ReDoc page: its bundle
always loads its logo from cdn.redoc.ly.)"""

import uuid
from collections.abc import Callable
from typing import Any

from django.urls import URLPattern, path, re_path, register_converter
from drf_spectacular.renderers import (
    OpenApiJsonRenderer,
    OpenApiJsonRenderer2,
    OpenApiYamlRenderer,
    OpenApiYamlRenderer2,
)
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.main.api.errors import api_route_not_found
from apps.main.api.serializers import TASK_ARGUMENTS
from apps.main.api.views import TaskStatusView, enqueue_view, unknown_task


class TaskIdConverter:
    """A UUID in its hyphenated form, in either letter case (as JSON Schema's ``uuid`` format allows);
    Django's own ``uuid`` converter takes lower case only."""

    regex = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

    def to_python(self, value: str) -> uuid.UUID:
        return uuid.UUID(value)

    def to_url(self, value: uuid.UUID | str) -> str:
        return str(value)


register_converter(TaskIdConverter, "task_id")

#: The document and its page need no token: their content is public (the token only authorizes the calls).
PUBLIC: dict[str, Any] = {"authentication_classes": [], "permission_classes": []}


class SchemaView(SpectacularAPIView):
    """application/json first: what a browser (Accept: */*) gets and shows, and ``?format=json``;
    ``application/vnd.oai.openapi+json`` on asking, YAML with ``?format=yaml`` or ``Accept: application/yaml``."""

    renderer_classes = [OpenApiJsonRenderer2, OpenApiJsonRenderer, OpenApiYamlRenderer, OpenApiYamlRenderer2]


def slash_optional(route: str, view: Callable[..., Any], name: str) -> list[URLPattern]:
    """``route`` and ``route/`` to one view under one name (the metrics count them as one view).
    reverse() gives the last pattern of a name, the canonical ``route/``; the schema lists only that."""
    return [path(route, view, name=name), path(f"{route}/", view, name=name)]


urlpatterns = [
    *slash_optional("schema", SchemaView.as_view(**PUBLIC), "api-schema"),
    *slash_optional("docs", SpectacularSwaggerView.as_view(url_name="api-schema", **PUBLIC), "api-docs"),
    *slash_optional("tasks/<task_id:task_id>", TaskStatusView.as_view(), "task-status"),
    *(pattern for name in TASK_ARGUMENTS
      for pattern in slash_optional(f"tasks/{name}", enqueue_view(name).as_view(), f"enqueue-{name}")),
    *slash_optional("tasks/<str:name>", unknown_task, "unknown-task"),
    re_path(r"^", api_route_not_found, name="api-route-not-found"),
]
