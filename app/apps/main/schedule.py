"""The default beat schedule, created in the database once and editable in the admin afterwards."""

from __future__ import annotations

from dataclasses import dataclass

from apps.main.queues import task_name


@dataclass(frozen=True)
class PeriodicDefault:
    name: str
    task: str  # short name; its queue comes from the routes, like any other send
    every_seconds: int


DEFAULT_SCHEDULE: tuple[PeriodicDefault, ...] = (
    PeriodicDefault("update-analytics-every-5-minutes", "update_analytics", 5 * 60),
    PeriodicDefault("cleanup-temp-files-hourly", "cleanup_temp_files", 60 * 60),
    PeriodicDefault("health-check-every-minute", "health_check", 60),
)


def ensure_periodic_tasks(*, reset: bool = False, using: str = "default") -> dict[str, str]:
    """Create each default periodic task that is missing; returns name -> created|kept|reset.

    An existing entry is kept as it is (an operator may have edited it in the admin) unless
    ``reset`` is given. Running this any number of times never duplicates an entry.
    """
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    outcome: dict[str, str] = {}
    for default in DEFAULT_SCHEDULE:
        intervals = IntervalSchedule.objects.using(using)
        interval = intervals.filter(every=default.every_seconds, period=IntervalSchedule.SECONDS).first()
        if interval is None:
            interval = intervals.create(every=default.every_seconds, period=IntervalSchedule.SECONDS)
        values = {
            "task": task_name(default.task),
            "interval": interval,
            "enabled": True,
            "description": f"Default schedule of Celery Stack: {default.task} every {default.every_seconds}s.",
        }
        existing = PeriodicTask.objects.using(using).filter(name=default.name).first()
        if existing is None:
            PeriodicTask.objects.using(using).create(name=default.name, **values)
            outcome[default.name] = "created"
        elif reset:
            for field, value in values.items():
                setattr(existing, field, value)
            existing.save(using=using)
            outcome[default.name] = "reset"
        else:
            outcome[default.name] = "kept"
    return outcome
