"""Every error the API answers is JSON with a reason: DRF's exception handler for the API views, and
Django's error handlers (handler400/403/404/500) for everything else.

A broker, database or cache that does not answer, or a Redis that is full, is the caller's cue to come
back later (503 with ``Retry-After``), not a bug (500). No error body carries a traceback or an exception's message.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import kombu.exceptions
import redis.exceptions
from celery.exceptions import BackendGetMetaError, BackendStoreError
from django import db
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse, UnreadablePostError
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response

from apps.main.large_payloads import PayloadTooLarge

logger = logging.getLogger(__name__)

#: Exceptions meaning "a service the request needs did not answer", and the service to name.
UNREACHABLE: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
    ((kombu.exceptions.OperationalError,), "task broker"),
    ((db.OperationalError, db.InterfaceError), "database"),
    # The result backend's reads and writes, after its retries (apps.main.results_backend) gave up.
    ((BackendGetMetaError, BackendStoreError), "database (task results)"),
    ((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError), "cache"),
)


def full_service(exc: BaseException) -> str | None:
    """The service ``exc`` says is full — Redis at maxmemory with noeviction refuses writes (OOM); kombu wraps
    the broker's refusal in its OperationalError — or None. Checked before ``unreachable_service``."""
    if isinstance(exc, kombu.exceptions.OperationalError) and isinstance(exc.__cause__,
                                                                         redis.exceptions.OutOfMemoryError):
        return "task broker"
    if isinstance(exc, redis.exceptions.OutOfMemoryError):  # the cache's client (rate limits): same Redis by default
        return "cache"
    return None


def unreachable_service(exc: BaseException) -> str | None:
    """The service ``exc`` says is unreachable (named for the caller), or None for any other error."""
    for types, service in UNREACHABLE:
        if isinstance(exc, types):
            return service
    return None


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes (API_MAX_BODY_BYTES)")


class TaskTooLarge(exceptions.APIException):
    """A task whose message would be larger than TASK_MAX_PAYLOAD_BYTES (apps.main.large_payloads): not sent."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "task_too_large"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "service_unavailable"

    def __init__(self, service: str, problem: str = "is unreachable") -> None:
        super().__init__(f"the {service} {problem}; try again later")
        self.wait = settings.API_RETRY_AFTER_SECONDS  # DRF turns it into the Retry-After header


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, knowing also the errors that are not the caller's fault nor a bug."""
    # Imported here: rest_framework.views loads the parser classes, and ours import this module.
    from rest_framework.views import exception_handler as drf_exception_handler

    if service := full_service(exc):
        logger.warning("%s full in %s: %s: %s", service, type(context.get("view")).__name__, type(exc).__name__, exc)
        exc = ServiceUnavailable(service, "is full")
    elif service := unreachable_service(exc):
        view = context.get("view")
        logger.warning("%s unreachable in %s: %s: %s", service, type(view).__name__, type(exc).__name__, exc)
        exc = ServiceUnavailable(service)
    elif isinstance(exc, PayloadTooLarge):
        exc = TaskTooLarge(str(exc))
    elif isinstance(exc, RequestDataTooBig):  # Django's own limit, should anything read request.body
        exc = RequestTooLarge(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    elif isinstance(exc, UnreadablePostError):  # the client went away mid-body
        exc = exceptions.ParseError("the request body could not be read")
    return drf_exception_handler(exc, context)


def error_response(status_code: int, detail: str, **extra: Any) -> JsonResponse:
    response = JsonResponse({"detail": detail, **extra}, status=status_code)
    # Also when it bypasses CommonMiddleware (an early 413): the client can read it without waiting for EOF.
    response["Content-Length"] = str(len(response.content))
    return response


def unavailable_response(service: str) -> JsonResponse:
    response = error_response(503, ServiceUnavailable(service).detail)
    response["Retry-After"] = str(settings.API_RETRY_AFTER_SECONDS)
    return response


def reason(status_code: int) -> str:
    """The standard reason phrase: "not found", "method not allowed", …"""
    try:
        return HTTPStatus(status_code).phrase.lower()
    except ValueError:
        return "error"


# --- Django's error handlers (portfolio_site.urls), used when DEBUG is off -------------------------

def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(400, "bad request")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(403, "forbidden")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(404, "not found")


def server_error(request: HttpRequest) -> JsonResponse:
    # The exception and its traceback went to the log (django.request); the caller learns nothing more.
    return error_response(500, "internal server error")


@csrf_exempt  # any method: a POST to a mistyped route is a 404, not a CSRF failure
def api_route_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Every path under /api/ that no route matches, with DEBUG on or off."""
    return error_response(
        404, f"no API route {request.method} {request.path}",
        routes=["POST /api/tasks/<name>/", "GET /api/tasks/<id>/", "GET /api/schema/", "GET /api/docs/"],
    )
