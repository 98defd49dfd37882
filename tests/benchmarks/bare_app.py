"""(b) A bare Celery app: every setting at Celery's default, one no-op task, nothing of the project.

Defaults that matter here: prefetch multiplier 4, acknowledgement before the task runs, no task events,
no result backend. Started as ``celery -A tests.benchmarks.bare_app worker`` with the broker URL in
``BENCH_BROKER_URL`` (and no DJANGO_SETTINGS_MODULE, else Celery would install its Django fixup).
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("bare", broker=os.environ["BENCH_BROKER_URL"])


@app.task
def noop() -> None:
    """Does nothing: what remains is Celery's own cost per task."""
