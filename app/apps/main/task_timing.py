"""One clock for task runtimes: the runtime histogram and performance.log both take it from here.

The pool child that runs a task notes its start at ``task_prerun`` and, at ``task_postrun``, sends
``task_timed`` with the seconds it took, whatever its outcome. The result backend stores the start
(``started_at``) with the final state, so no separate STARTED write is needed to know a runtime.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from celery import signals
from django.dispatch import Signal

#: Sent in the process that ran the task (kwargs: task, task_id, seconds, state).
task_timed = Signal(use_caching=True)  # receivers looked up once per task class, not per task

# task id -> (monotonic, wall) start; a pool child runs one task at a time, so this stays tiny.
_started: dict[str, tuple[float, float]] = {}


def started_at(task_id: str) -> datetime | None:
    """When the task now running in this process started; None elsewhere (e.g. the worker's main process)."""
    begun = _started.get(task_id)
    return datetime.fromtimestamp(begun[1], tz=UTC) if begun else None


@signals.task_prerun.connect(dispatch_uid="apps.main.task_timing.start")
def _start(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = (time.monotonic(), time.time())


@signals.task_postrun.connect(dispatch_uid="apps.main.task_timing.finish")
def _finish(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    begun = _started.pop(task_id, None) if task_id else None
    if begun is not None and task is not None:
        task_timed.send(sender=type(task), task=task, task_id=task_id, seconds=time.monotonic() - begun[0],
                        state=state)
