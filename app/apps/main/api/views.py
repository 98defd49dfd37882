"""POST /api/tasks/<name>/ enqueues an allow-listed task; GET /api/tasks/<id>/ reads its state.

Errors (apps.main.api.errors): a broker or database that does not answer is a 503, raised from here
as the client library's own exception and translated by the API's exception handler.
"""

from __future__ import annotations

from typing import Any

from celery import states
from celery.result import AsyncResult
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.main.api import audit
from apps.main.api.auth import RateLimited, TokenRateThrottle, TokenScope
from apps.main.api.errors import error_response
from apps.main.api.issued import was_issued
from apps.main.api.schema import RETRY_AFTER, error_responses
from apps.main.api.serializers import TASK_ARGUMENTS, ApiError, TaskAccepted, TaskArguments, TaskStatus
from apps.main.api.signals import task_enqueued
from apps.main.queues import queue_for, task_name
from portfolio_site.celery import app


class TaskApiView(APIView):
    """A task route: the token's scope and rate are checked, and every call is audited, allowed or not."""

    permission_classes = [TokenScope]
    throttle_classes = [TokenRateThrottle]

    def scope_refusal(self, token: Any) -> str | None:
        """What ``token`` lacks to make this call, or None; a route that says nothing refuses."""
        return "this token may not make this call"

    def audit_subject(self, response: Response, **kwargs: Any) -> dict[str, str]:
        """``action``, ``task`` and ``task_id`` of the audit record."""
        return {"action": "unknown"}

    def throttled(self, request: Request, wait: float | None) -> None:
        raise RateLimited(wait, request.user.token.rate_limit or settings.API_RATE_LIMIT)

    def finalize_response(self, request: Request, response: HttpResponse, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().finalize_response(request, response, *args, **kwargs)
        audit.record(request, response, **self.audit_subject(response, **kwargs))
        return response


def enqueue_view(short_name: str) -> type[APIView]:
    """One view class per allow-listed task, so the OpenAPI schema shows each task's own arguments."""
    arguments: type[TaskArguments] = TASK_ARGUMENTS[short_name]

    class EnqueueTask(TaskApiView):
        def scope_refusal(self, token: Any) -> str | None:
            return None if short_name in token.tasks else f"this token may not enqueue {short_name}"

        def audit_subject(self, response: Response, **kwargs: Any) -> dict[str, str]:
            issued = response.data.get("id", "") if response.status_code == 202 else ""
            return {"action": "enqueue", "task": short_name, "task_id": issued}

        @extend_schema(
            operation_id=f"enqueue_{short_name}",
            summary=f"Enqueue {short_name}",
            request=arguments,
            examples=[OpenApiExample(title, value=body, request_only=True)
                      for title, body in arguments.examples.items()],
            responses={202: TaskAccepted,
                       **error_responses(not_found="No such route (the task names are the allow-list).",
                                         forbidden=f"The token may not enqueue {short_name}.",
                                         with_body=True)},
            parameters=[RETRY_AFTER],
            tags=["tasks"],
        )
        def post(self, request: Request) -> Response:
            serializer = arguments(data=request.data)
            serializer.is_valid(raise_exception=True)
            queue = queue_for(short_name)
            result = app.send_task(task_name(short_name), kwargs=serializer.task_kwargs())
            task_enqueued.send(sender=EnqueueTask, task_name=task_name(short_name), queue=queue)
            body = {
                "id": result.id,
                "task": task_name(short_name),
                "queue": queue,
                "status_url": request.build_absolute_uri(reverse("task-status", args=[result.id])),
            }
            return Response(body, status=status.HTTP_202_ACCEPTED)

    EnqueueTask.__name__ = EnqueueTask.__qualname__ = f"Enqueue{short_name.title().replace('_', '')}"
    return EnqueueTask


@csrf_exempt  # any method: a POST to a mistyped task name is a 404, not a CSRF failure
def unknown_task(request: HttpRequest, name: str) -> JsonResponse:
    """/api/tasks/<name>/ for a name that is neither an allow-listed task nor a task id: no such route,
    whatever the method (a 405 would say the route exists)."""
    if request.method == "POST":
        return error_response(404, f"unknown task {name!r}", available=sorted(TASK_ARGUMENTS))
    return error_response(404, f"{name!r} is not a task id (task ids are UUIDs)")


class TaskStatusView(TaskApiView):
    def scope_refusal(self, token: Any) -> str | None:
        return None if token.can_read_results else "this token may not read task results"

    def audit_subject(self, response: Response, **kwargs: Any) -> dict[str, str]:
        return {"action": "read_result", "task_id": str(kwargs.get("task_id", ""))}

    @extend_schema(
        operation_id="task_status",
        responses={200: TaskStatus,
                   **error_responses(not_found="No task with this id was issued, or its result expired.",
                                     forbidden="The token may not read task results.",
                                     with_body=False)},
        parameters=[RETRY_AFTER, OpenApiParameter("task_id", OpenApiTypes.UUID, OpenApiParameter.PATH,
                                                  description="The `id` the enqueue answered (any letter case).")],
        tags=["tasks"],
    )
    def get(self, request: Request, task_id: Any) -> Response:
        from django_celery_results.models import TaskResult

        task_id = str(task_id)
        # Known first, with one plain query: with the database down it fails at once (a 503), where the
        # result backend below would retry for minutes. And the backend reads any id as PENDING.
        if not (TaskResult.objects.filter(task_id=task_id).exists() or was_issued(task_id)):
            body = ApiError({"detail": f"unknown task id {task_id}: never issued, or its result expired"}).data
            return Response(body, status=status.HTTP_404_NOT_FOUND)
        result = AsyncResult(task_id, app=app)
        # Read the state once: each read asks the backend again, and a task finishing in between
        # would give "STARTED" with ready=true. A ready state is cached, so .result matches it.
        state = result.state
        ready = state in states.READY_STATES
        failed = state in (states.FAILURE, states.REVOKED)
        # After the state: a finished task's row is then its final one.
        stored = TaskResult.objects.filter(task_id=task_id).first()
        body = {
            "id": task_id,
            "task": stored.task_name if stored else None,
            "state": state,
            "ready": ready,
            "result": result.result if ready and not failed else None,
            "error": repr(result.result) if failed else None,
            "worker": stored.worker if stored else None,
            # Results do not store the queue; ours follow the routes (apps.main.queues).
            "queue": queue_for(stored.task_name.rsplit(".", 1)[-1]) if stored and stored.task_name else None,
            "date_done": stored.date_done if stored and ready else None,
        }
        return Response(TaskStatus(body).data)
