"""Prometheus metrics of the app: worker task counters, web request metrics, the queue exporter.

Importing this package only defines metric objects and connects signal receivers (Celery's task and
worker signals, the API's ``task_enqueued``, the dead-letter store's ``dead_lettered``); it opens no
socket and touches no file. ``apps.main.signals`` imports it from ``MainConfig.ready()``.
The metric catalogue is docs/metrics.md; a test checks the code against it.
"""

from django.apps import apps as _django_apps
from prometheus_client import disable_created_metrics

# ``*_created`` series double every counter in single-process mode and exist nowhere in
# multiprocess mode: drop them so both modes expose the same, documented, series.
disable_created_metrics()

from apps.main.metrics import web, worker  # noqa: E402 — after the switch above, on purpose

if _django_apps.models_ready:  # imported from AppConfig.ready() or later: the store's signal exists
    worker.connect_dead_letters()

__all__ = ["web", "worker"]
