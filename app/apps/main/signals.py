"""Signal wiring: seed the beat schedule and create the cache table after migrate, log task durations."""

from __future__ import annotations

import logging
from typing import Any

from django.db.models.signals import post_migrate
from django.dispatch import receiver

import apps.main.api.issued  # records every published task id (the status route's 404s)
import apps.main.db_connections  # workers keep their database connections across tasks, checked before each
import apps.main.metrics  # noqa: F401 — connects the Prometheus metrics' signal receivers in every process
from apps.main.task_timing import task_timed

performance = logging.getLogger("apps.main.performance")


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


@receiver(task_timed, dispatch_uid="apps.main.performance_log")
def log_task_duration(task: Any = None, seconds: float = 0.0, state: str | None = None, **_: Any) -> None:
    performance.info(
        "task %s finished in %.3fs with state %s", task.name, seconds, state,
        extra={"duration_seconds": round(seconds, 6), "state": state},
    )
