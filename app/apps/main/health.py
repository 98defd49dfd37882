"""Probes: /healthz says the process serves requests, /readyz that its database and broker answer."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from apps.main import checks


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    results = checks.run(("database", "broker"), with_messages=False)  # no connection details in public
    ready = not checks.failed(results)
    return JsonResponse({"status": "ready" if ready else "not ready", "checks": results},
                        status=200 if ready else 503)
