"""Tasks that misbehave on purpose, loaded only by the fault suite's workers (TEST_TASK_MODULES)."""

from __future__ import annotations

import os

from celery import shared_task

from apps.main.base_task import ReliableTask


@shared_task(bind=True, base=ReliableTask, name="faults.exit_pool_process")
def exit_pool_process(self: ReliableTask) -> None:
    """Ends the pool process that runs it at once, like the OOM killer or a crash in C code would."""
    os._exit(137)
