"""Tasks of tests/app/test_large_payloads.py, loaded only by its workers (TEST_TASK_MODULES).

Built like the project's tasks (``ReliableTask``: its request guard, retries, dead letters), so a message of theirs
takes the worker's whole path: claim opened by the consumer, guards, pool process, ack, claim released. Each returns
what it received, measured (length and SHA-256), so the test sees that the whole payload arrived.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from apps.main.base_task import ReliableTask
from apps.main.retry import PermanentError, TransientError

DIGEST = "payload_tests.digest"
HELD = "payload_tests.held_digest"
FLAKY = "payload_tests.flaky_digest"
GATED = "payload_tests.gated_digest"
STUCK = "payload_tests.stuck"


def measured(payload: str) -> dict[str, Any]:
    return {"length": len(payload), "sha256": hashlib.sha256(payload.encode()).hexdigest()}


@shared_task(bind=True, base=ReliableTask, name=DIGEST)
def digest(self: ReliableTask, payload: str) -> dict[str, Any]:
    return measured(payload)


@shared_task(bind=True, base=ReliableTask, name=HELD)
def held_digest(self: ReliableTask, payload: str, directory: str) -> dict[str, Any]:
    """Says it started (a file ``started-<n>`` holding its pool process's pid, one per delivery), then holds its
    message until the file ``release`` exists in ``directory``: the test kills its worker meanwhile."""
    folder = Path(directory)
    deliveries = len(list(folder.glob("started-*"))) + 1
    (folder / f"started-{deliveries}").write_text(str(os.getpid()))
    while not (folder / "release").exists():
        time.sleep(0.05)  # the task's own wait; the test waits on its files
    return {**measured(payload), "deliveries": deliveries}


@shared_task(bind=True, base=ReliableTask, name=FLAKY)
def flaky_digest(self: ReliableTask, payload: str) -> dict[str, Any]:
    """Fails transiently on its first attempt: the retry is a new message, published by the pool process."""
    if not self.request.retries:
        raise TransientError("first attempt fails, on purpose")
    return {**measured(payload), "retries": self.request.retries}


@shared_task(bind=True, base=ReliableTask, name=GATED)
def gated_digest(self: ReliableTask, payload: str, gate: str) -> dict[str, Any]:
    """Fails for good (dead-lettered) while the file ``gate`` does not exist."""
    if not Path(gate).exists():
        raise PermanentError(f"gate {gate} is closed")
    return measured(payload)


@shared_task(bind=True, base=ReliableTask, name=STUCK)
def stuck(self: ReliableTask, payload: str) -> None:
    """Never returns and shrugs off the soft time limit, like code stuck in a C call that never sees it: only the
    hard time limit ends it (its pool process is killed and the failure is handled in the worker's main process)."""
    while True:
        try:
            time.sleep(0.05)
        except SoftTimeLimitExceeded:
            continue
