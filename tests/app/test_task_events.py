"""Task events (Flower's task list) leave a worker batched — all of them, a fraction of the messages."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import pytest
from celery.events.receiver import EventReceiver

from apps.main.queues import task_name
from embedded.network import wait_until
from portfolio_site.celery import app
from tests.support.timeouts import scaled

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

WORKER_EVENTS = ("task-received", "task-started", "task-succeeded")


class CountingReceiver(EventReceiver):
    """Counts, per event type, the events about ``ids``, and the worker messages that carried them."""

    def __init__(self, *args: Any, ids: set[str], **kwargs: Any) -> None:
        super().__init__(*args, handlers={}, **kwargs)
        self.ids, self.events, self.messages = ids, Counter(), 0
        self.ready = threading.Event()

    def on_consume_ready(self, *args: Any, **kwargs: Any) -> None:
        super().on_consume_ready(*args, **kwargs)
        self.ready.set()

    def _receive(self, body: Any, message: Any, **kwargs: Any) -> None:
        batch = body if isinstance(body, list) else [body]
        ours = [e for e in batch if e.get("uuid") in self.ids and e.get("type") in WORKER_EVENTS]
        if ours:
            self.messages += 1
            self.events.update(e["type"] for e in ours)


def test_every_task_event_arrives_in_batches(celery_worker_factory) -> None:
    tasks = 100
    queue = f"events-{uuid.uuid4().hex[:6]}"
    celery_worker_factory([queue], concurrency=2)  # the chart's command line: --task-events
    ids = {str(uuid.uuid4()) for _ in range(tasks)}
    with app.connection_for_read() as connection:
        receiver = CountingReceiver(connection, app=app, ids=ids)
        thread = threading.Thread(target=receiver.capture, kwargs={"wakeup": False}, daemon=True)
        thread.start()
        try:
            assert receiver.ready.wait(scaled(30)), "event receiver did not start consuming"
            for i, task_id in enumerate(sorted(ids)):
                app.send_task(task_name("process_user_action"), task_id=task_id, queue=queue,
                              kwargs={"action_id": task_id, "user_id": "u", "action": f"e{i}"})
            wait_until(lambda: all(receiver.events[kind] == tasks for kind in WORKER_EVENTS),
                       timeout=scaled(60), what=f"the worker events of {tasks} tasks")
        finally:
            receiver.should_stop = True
            thread.join(scaled(10))
    # Celery alone publishes at each loop tick: about one message per task under load.
    assert receiver.messages <= tasks // 4, f"{receiver.messages} messages for {3 * tasks} events"
