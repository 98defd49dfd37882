"""A full broker, measured on a real Valkey of its own (maxmemory, noeviction — the chart's policy):

* a publish through the project's Celery app is refused with Redis' OOM error, and what was queued stays;
* the API answers 503 with ``Retry-After`` and a reason saying the broker is full;
* a worker running when the broker fills survives it, and a worker started on the full broker drains every
  message queued before (sent = consumed, lost = 0), the delivery guard's redelivery count included;
* the transport takes, reserves and acks a message with every write refused (``apps.main.redis_transport``).

Run with ``-s`` to see the figures (messages of each size that fit, the error, how long a refusal takes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kombu.exceptions
import pytest
import redis
from django.conf import settings
from django.test import Client, override_settings
from kombu import Connection, Queue
from kombu.message import Message

from apps.main.models import UserAction
from apps.main.queues import DEFAULT, queue_for, task_name
from embedded import EmbeddedValkey
from embedded.network import wait_until
from portfolio_site.celery import app
from tests.app.test_api import broker_at, json_error
from tests.support.timeouts import scaled

MAXMEMORY = "8mb"
SHORT = "process_user_action"  # one UserAction row per message: consumed messages are counted in the database
QUEUE = queue_for(SHORT)
#: Most messages a fill may take before the test calls the broker "never full" (8 MB of 1 KB payloads: ~3000).
FILL_LIMIT = 20_000


@dataclass
class Fill:
    payload_bytes: int
    sent: list[str]  # action ids of the messages the broker took
    error: BaseException  # what the first refused publish raised
    refusal_seconds: float  # how long that publish took to fail (Celery's publish retries included)


@pytest.fixture
def full_broker(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    """A Valkey of this test's own, small enough to fill in seconds (filled by ``fill``)."""
    server = EmbeddedValkey(tmp_path / "valkey", maxmemory=MAXMEMORY).start()
    yield server
    server.stop()


def client_of(server: EmbeddedValkey) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=5)


def fill(payload_bytes: int, label: str) -> Fill:
    """Publish ``process_user_action`` messages through the project's app (pointed at the full broker by the
    caller) until one is refused."""
    blob = "x" * payload_bytes
    sent: list[str] = []
    for index in range(FILL_LIMIT):
        action_id = f"{label}-{index}"
        kwargs = {"action_id": action_id, "user_id": "full-broker", "action": label, "payload": {"blob": blob}}
        started = time.monotonic()
        try:
            app.send_task(task_name(SHORT), kwargs=kwargs)
        except Exception as exc:  # the refusal this module is about
            return Fill(payload_bytes, sent, exc, time.monotonic() - started)
        sent.append(action_id)
    pytest.fail(f"{FILL_LIMIT} messages of {payload_bytes} B and the broker ({MAXMEMORY}) is still not full")


def push_over_maxmemory(client: redis.Redis, margin: int = 512 * 1024) -> None:
    """Set maxmemory ``margin`` bytes below what the broker uses: every write that adds memory is refused until
    that much is freed. A fill leaves the broker at the edge — whether the next write fits depends on its size and
    on buffers — and this makes "full" certain for what follows."""
    client.config_set("maxmemory", client.info("memory")["used_memory"] - margin)


def oom_refusals(client: redis.Redis) -> int:
    return int(client.info("errorstats").get("errorstat_OOM", {}).get("count", 0))


def assert_refused_for_oom(error: BaseException) -> None:
    # kombu retries the publish (Celery's retry policy), then wraps Redis' error in its OperationalError.
    assert isinstance(error, kombu.exceptions.OperationalError), repr(error)
    assert isinstance(error.__cause__, redis.exceptions.OutOfMemoryError), repr(error.__cause__)
    assert "maxmemory" in str(error), str(error)


@pytest.mark.django_db
@pytest.mark.parametrize("payload_bytes", [1_000, 16_000, 256_000])
def test_a_full_broker_refuses_publishes_with_oom_and_keeps_what_it_queued(
        full_broker: EmbeddedValkey, payload_bytes: int) -> None:
    client = client_of(full_broker)
    with broker_at(full_broker.url):
        result = fill(payload_bytes, "measure")
    assert_refused_for_oom(result.error)
    assert client.llen(QUEUE) == len(result.sent) > 0, "a message the broker accepted is gone"
    memory = client.info("memory")
    stored = len(client.lindex(QUEUE, 0))
    # Full: not even two more messages' worth is left (the refused one counted while Redis read it).
    assert memory["used_memory"] + 2 * stored >= memory["maxmemory"], (memory["used_memory"], stored)
    print(f"\n[broker full] maxmemory {memory['maxmemory']} B (empty broker ~1.1 MB used): {len(result.sent)} "
          f"messages of a {payload_bytes} B payload ({stored} B each as stored) fit; used_memory "
          f"{memory['used_memory']} B. The next publish failed after {result.refusal_seconds:.2f} s: "
          f"{type(result.error).__module__}.{type(result.error).__name__} from "
          f"{type(result.error.__cause__).__name__}: {result.error}")


@pytest.mark.django_db
def test_the_api_answers_503_broker_full_with_retry_after(full_broker: EmbeddedValkey) -> None:
    api = Client(HTTP_AUTHORIZATION=f"Bearer {settings.API_TOKEN}", raise_request_exception=False)
    body = json.dumps({"action_id": "api-refused", "user_id": "u", "action": "api"})
    client = client_of(full_broker)
    with broker_at(full_broker.url):
        queued = len(fill(16_000, "api").sent)
        push_over_maxmemory(client)
        started = time.monotonic()
        response = api.post(f"/api/tasks/{SHORT}/", data=body, content_type="application/json")
        took = time.monotonic() - started
        # The chart's layout: one Redis holds the broker, the cache and the API's rate-limit counters. The rate
        # limit's count (a write) is refused and skipped: the caller learns what matters, the broker is full.
        with override_settings(REDIS_URL=full_broker.url):
            shared = api.post(f"/api/tasks/{SHORT}/", data=body, content_type="application/json")
    assert json_error(response, 503)["detail"] == "the task broker is full; try again later"
    assert int(response["Retry-After"]) == settings.API_RETRY_AFTER_SECONDS > 0
    assert client.llen(QUEUE) == queued
    assert json_error(shared, 503)["detail"] == "the task broker is full; try again later"
    assert int(shared["Retry-After"]) == settings.API_RETRY_AFTER_SECONDS
    print(f"\n[broker full] POST /api/tasks/{SHORT}/ -> {response.status_code} in {took:.2f} s: "
          f"{response.json()['detail']}; with the cache on the same full Redis: {shared.json()['detail']}")


def mark_redelivered(client: redis.Redis, queue: str) -> None:
    """Turn the next message out of ``queue`` into a redelivery, as kombu's restore of an unacked one writes it."""
    raw = client.rpop(queue)
    assert raw is not None
    message = json.loads(raw)
    message["headers"]["redelivered"] = True
    message["properties"]["delivery_info"]["redelivered"] = True
    client.rpush(queue, json.dumps(message))  # back at the end the worker takes first


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_workers_survive_a_full_broker_and_drain_everything_queued_before(
        full_broker: EmbeddedValkey, celery_worker_factory: Any) -> None:
    client = client_of(full_broker)
    # The chart's layout: the worker's cache (the delivery guard's counters) lives in the broker's Redis too.
    on_full_broker = {"CELERY_BROKER_URL": full_broker.url, "REDIS_URL": full_broker.url}
    with broker_at(full_broker.url):
        bystander = celery_worker_factory([DEFAULT], name="bystander", extra_env=on_full_broker)
        app.send_task(task_name(SHORT), kwargs={"action_id": "drain-redelivered", "user_id": "u", "action": "drain"})
        mark_redelivered(client, QUEUE)  # taken first, while the broker is full: the guard counts it in Redis
        result = fill(16_000, "drain")
        assert_refused_for_oom(result.error)
        sent = ["drain-redelivered", *result.sent]
        assert client.llen(QUEUE) == len(sent)
        push_over_maxmemory(client)  # the drainer's first ~20 messages are taken while writes are refused

        # The running worker's queue is empty; each poll of it (BLMOVE every second) is refused for OOM.
        refused = oom_refusals(client)
        wait_until(lambda: oom_refusals(client) >= refused + 3, timeout=scaled(30),
                   what="the running worker's polls to meet the full broker")
        exited = [child.name for child in celery_worker_factory.supervisor.exited()]
        assert not exited, f"{exited} stopped when the broker filled"

        started = time.monotonic()
        drainer = celery_worker_factory([QUEUE], name="drainer", extra_env=on_full_broker)
        wait_until(lambda: UserAction.objects.filter(action="drain").count() >= len(sent), timeout=scaled(120),
                   what=f"{len(sent)} queued messages to be consumed", interval=0.5)
        drained = time.monotonic() - started

        consumed = set(UserAction.objects.filter(action="drain").values_list("action_id", flat=True))
        lost = set(sent) - consumed
        assert not lost, f"sent {len(sent)}, consumed {len(consumed)}, lost {len(lost)}: {sorted(lost)[:5]}"
        wait_until(lambda: client.hlen("unacked") == 0, timeout=scaled(30), what="every consumed message acked")
        assert client.llen(QUEUE) == 0
        assert not [key for key in client.keys("unacked_landing:*") if client.llen(key)], "a message still landing"
        assert not celery_worker_factory.supervisor.exited()
        replies = app.control.ping(destination=[bystander, drainer], timeout=scaled(2))
        assert {node for reply in replies for node in reply} == {bystander, drainer}
    print(f"\n[broker full] sent {len(sent)}, consumed {len(consumed)}, lost {len(lost)}; a worker started on the "
          f"full broker drained it in {drained:.1f} s (start included); the one running on an empty queue kept "
          f"running; Redis refused {oom_refusals(client)} commands for OOM in all")


@pytest.mark.django_db
@pytest.mark.parametrize("queues", [[QUEUE], [QUEUE, DEFAULT]], ids=["one-key-blmove", "two-keys-brpop"])
def test_a_consumer_takes_reserves_and_acks_on_a_full_broker(full_broker: EmbeddedValkey, queues: list[str]) -> None:
    """The transport's delivery with every write refused: BLMOVE into a landing list (one queue), kombu's BRPOP
    (several), and each one's write to the unacked hash. A message is reserved, never lost, and its ack goes."""
    client = client_of(full_broker)
    with broker_at(full_broker.url):
        sent = len(fill(16_000, "take").sent)
    push_over_maxmemory(client)
    refused = oom_refusals(client)
    received: list[Message] = []
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    with Connection(full_broker.url, transport_options=options) as connection, connection.Consumer(
            [Queue(name, routing_key=name) for name in queues], accept=["json"],
            callbacks=[lambda body, message: received.append(message)]):
        connection.drain_events(timeout=scaled(5))
        assert len(received) == 1
        assert (client.llen(QUEUE), client.hlen("unacked")) == (sent - 1, 1)  # reserved: in the unacked hash
        received[0].ack()
    assert (client.llen(QUEUE), client.hlen("unacked")) == (sent - 1, 0)
    assert oom_refusals(client) > refused, "the consumer never met the full broker: the test proved nothing"
