"""Signal wiring: seed the beat schedule and create the cache table after migrate, log task durations."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import signals as celery_signals
from django.db.models.signals import post_migrate
from django.dispatch import receiver

import apps.main.metrics  # noqa: F401 — connects the Prometheus metrics' signal receivers in every process

performance = logging.getLogger("apps.main.performance")
_started: dict[str, float] = {}


@receiver(post_migrate)
def seed_periodic_tasks(sender: Any, app_config: Any = None, **kwargs: Any) -> None:
    # Runs once per migrated app; seed when ours is done (its tables and beat's exist by then).
    if app_config is None or app_config.label != "main":
        return
    from apps.main.schedule import ensure_periodic_tasks

    ensure_periodic_tasks(using=kwargs.get("using", "default"))


@receiver(post_migrate)
def create_cache_table(sender: Any, app_config: Any = None, **kwargs: Any) -> None:
    # Without REDIS_URL the cache is a DatabaseCache, whose table no migration creates: health_check
    # and cleanup_temp_files would fail on "no such table". createcachetable skips non-database caches.
    if app_config is None or app_config.label != "main":
        return
    from django.core.management import call_command

    call_command("createcachetable", database=kwargs.get("using", "default"), verbosity=0)


@celery_signals.task_prerun.connect
def _task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.monotonic()


@celery_signals.task_postrun.connect
def _task_finished(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    begun = _started.pop(task_id, None) if task_id else None
    if begun is not None and task is not None:
        performance.info(
            "task %s finished in %.3fs with state %s", task.name, time.monotonic() - begun, state,
            extra={"duration_seconds": round(time.monotonic() - begun, 6), "state": state},
        )
