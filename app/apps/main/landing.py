"""The development landing page at ``/``: where the local stack's pages are. With DEBUG off, ``/`` is
the JSON 404 of every unknown path (handler404 in portfolio_site.urls)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_safe

from portfolio_site import environment as env
from portfolio_site.ports import FLOWER_PORT


@dataclass(frozen=True)
class Link:
    title: str
    url: str
    note: str = ""


def flower_url() -> str:
    """Flower as the local stack runs it (it passes FLOWER_URL to the web process)."""
    return env.get(env.FLOWER_URL) or f"http://127.0.0.1:{FLOWER_PORT}/"


def worker_metrics() -> list[Link]:
    """The workers' metrics endpoints the local stack names in WORKER_METRICS_URLS (``pool=url,…``)."""
    links = []
    for item in env.get_list(env.WORKER_METRICS_URLS):
        pool, _, url = item.partition("=")
        if url:
            links.append(Link(f"worker {pool}", url))
    return links


@require_safe
def landing(request: HttpRequest) -> HttpResponse:
    if not settings.DEBUG:
        raise Http404("the landing page is for development only")
    pages = [
        Link("Admin", reverse("admin:index"), "periodic tasks, task results, dead letters; user admin, "
                                              "password in .local/credentials.json"),
        Link("API docs", reverse("api-docs"), "try the task API; the Bearer token is API_TOKEN in .local/stack.env"),
        Link("OpenAPI schema", reverse("api-schema"), "the same API, machine-readable"),
        Link("Flower", flower_url(), "workers and tasks; login FLOWER_BASIC_AUTH in .local/stack.env"),
    ]
    metrics = [Link("web", reverse("metrics")), *worker_metrics()]
    probes = [Link("Readiness", reverse("readyz"), "database and broker answer"),
              Link("Liveness", reverse("healthz"), "the web process serves")]
    return render(request, "main/landing.html", {"pages": pages, "metrics": metrics, "probes": probes})
