"""``celery flower`` with Flower's /metrics behind the same authentication as its UI (start_flower execs this).

Flower 2.2.0 serves /metrics to anyone, even with basic auth on: its handler (flower.views.monitor.Metrics)
lacks the ``@web.authenticated`` every page and API handler has. Its series name every worker and task type
with counts and timings, so here the handler gets that same decorator before Flower builds its application;
then Celery's own command line runs, exactly as ``python -m celery`` would. /healthcheck stays open: it says
only "OK" (the chart's probes are TCP checks and use neither). Nothing scrapes Flower's /metrics: the
ServiceMonitor/PodMonitor targets are web, the workers and the queue exporter.

    python -m apps.main.flower_launcher -A portfolio_site flower --port=5555 ...
"""

from __future__ import annotations

import sys

from tornado import web


def protect_metrics() -> None:
    """Wrap Flower's /metrics GET with tornado's ``web.authenticated`` (idempotent): with basic auth, a request
    without the right credentials gets Flower's 401, as on every other page."""
    from flower.views.monitor import Metrics

    if not getattr(Metrics.get, "_requires_login", False):
        Metrics.get = web.authenticated(Metrics.get)
        Metrics.get._requires_login = True  # type: ignore[attr-defined]


def main(argv: list[str]) -> None:
    protect_metrics()
    from celery.__main__ import main as celery_main

    sys.argv = ["celery", *argv]
    celery_main()


if __name__ == "__main__":
    main(sys.argv[1:])
