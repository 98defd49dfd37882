"""JsonErrorsMiddleware: the API, the probes and /metrics answer every error in JSON.

DRF's views already do; this covers what happens around them: Django's debug pages (DEBUG=True), a
405 from ``require_GET`` on the probes, an error raised in middleware, and a body refused on its
Content-Length before anything reads it.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from apps.main.api.errors import RequestTooLarge, error_response, reason, unavailable_response, unreachable_service

#: Paths (and everything below them) whose errors are JSON.
JSON_PATHS = ("/api", "/healthz", "/readyz", "/metrics")
#: Headers an error response keeps when it is rewritten as JSON.
KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def serves_json(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in JSON_PATHS)


def is_json(response: HttpResponse) -> bool:
    media_type = response.get("Content-Type", "").split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _refuse_by_content_length(request: HttpRequest) -> HttpResponse | None:
    """413 before the body is read (a 5 MB upload is not read into memory to be refused)."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    try:
        length = int(declared)
    except ValueError:
        length = -1
    if length < 0:
        return error_response(400, "invalid Content-Length header")
    limit = settings.API_MAX_BODY_BYTES
    if length > limit:
        return error_response(413, str(RequestTooLarge(limit).detail))
    return None


def _as_json(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    if response.status_code < 400:
        return response
    if not is_json(response):
        detail = reason(response.status_code)
        if response.status_code == 405:
            detail = f"method {request.method} not allowed"
        replacement = error_response(response.status_code, detail)
        for header in KEPT_HEADERS:
            if header in response:
                replacement[header] = response[header]
        response = replacement
    if response.status_code == 503 and "Retry-After" not in response:
        response["Retry-After"] = str(settings.API_RETRY_AFTER_SECONDS)
    return response


class JsonErrorsMiddleware:
    """Placed right after the metrics middleware: everything below it, the other middleware included."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not serves_json(request.path_info):
            return self.get_response(request)
        refused = _refuse_by_content_length(request)
        return refused if refused is not None else _as_json(request, self.get_response(request))

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        # Views outside DRF (the probes, /metrics): a dependency down is a 503, not a 500.
        if serves_json(request.path_info) and (service := unreachable_service(exception)):
            return unavailable_response(service)
        return None
