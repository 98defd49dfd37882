"""One clock for task runtimes: the runtime histogram and performance.log both take it from here.

The pool child that runs a task notes its start at ``task_prerun`` and, at ``task_postrun``, sends
``task_timed`` with the seconds it took, whatever its outcome.
"""

from __future__ import annotations

import time
from typing import Any

from celery import signals
from django.dispatch import Signal

#: Sent in the process that ran the task (kwargs: task, task_id, seconds, state).
task_timed = Signal()

# task id -> monotonic start; a pool child runs one task at a time, so this stays tiny.
_started: dict[str, float] = {}


@signals.task_prerun.connect(dispatch_uid="apps.main.task_timing.start")
def _start(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.monotonic()


@signals.task_postrun.connect(dispatch_uid="apps.main.task_timing.finish")
def _finish(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    begun = _started.pop(task_id, None) if task_id else None
    if begun is not None and task is not None:
        task_timed.send(sender=type(task), task=task, task_id=task_id, seconds=time.monotonic() - begun, state=state)
