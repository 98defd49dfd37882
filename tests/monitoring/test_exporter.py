"""The queue exporter against a real Valkey: backlog with priority sub-lists, in-flight, age, prefix, outages."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu import Connection, Queue
from prometheus_client import CollectorRegistry, generate_latest

import apps.main.metrics  # noqa: F401 — connects before_task_publish (the published_at header)
from apps.main.metrics.exporter import BrokerLayout, DatabaseSnapshot, QueueExporter, broker_client, read_broker
from apps.main.metrics.worker import PUBLISHED_AT_HEADER
from apps.main.queues import DEFAULT, HIGH_PRIORITY, LOW_PRIORITY, QUEUES, task_name
from embedded import EmbeddedValkey
from tests.monitoring.conftest import documented_metrics, exposed_families

TASK = task_name("update_analytics")


def _producer_app(url: str, prefix: str = "") -> Celery:
    app = Celery("exporter-test", broker=url, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": prefix} if prefix else {}
    app.conf.task_create_missing_queues = True
    return app


@pytest.fixture
def client(valkey) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(valkey.url, socket_timeout=2, socket_connect_timeout=2)
    client.flushdb()
    yield client
    client.flushdb()


def _layout(prefix: str = "") -> BrokerLayout:
    return BrokerLayout(queues=QUEUES, key_prefix=prefix)


@pytest.mark.parametrize("prefix", ["", "celery-stack:"], ids=["no-prefix", "global-keyprefix"])
def test_backlog_counts_every_priority_sub_list_and_in_flight(valkey, client: redis.Redis, prefix: str) -> None:
    app = _producer_app(valkey.url, prefix)
    # 7 tasks on `default` spread over priorities 0..9 (kombu keeps them in 4 sub-lists), 3 on low.
    priorities = [0, 1, 3, 5, 6, 8, 9]
    for priority in priorities:
        app.send_task(TASK, queue=DEFAULT, priority=priority)
    for _ in range(3):
        app.send_task(TASK, queue=LOW_PRIORITY)
    keys = {k.decode() for k in client.keys(f"{prefix}{DEFAULT}*")}
    assert len(keys) == 4, f"expected the queue key and 3 priority sub-keys, found {keys}"

    snapshot = read_broker(client, _layout(prefix))
    assert snapshot.lengths == {HIGH_PRIORITY: 0, DEFAULT: 7, LOW_PRIORITY: 3}
    assert snapshot.in_flight == {HIGH_PRIORITY: 0, DEFAULT: 0, LOW_PRIORITY: 0}

    # Reserve two without acknowledging: kombu moves them to the `unacked` hash (in flight).
    with Connection(valkey.url, transport_options=app.conf.broker_transport_options) as conn:
        queue = conn.SimpleQueue(Queue(DEFAULT, routing_key=DEFAULT))
        reserved = [queue.get(timeout=5), queue.get(timeout=5)]
        assert all(PUBLISHED_AT_HEADER in m.headers for m in reserved), "publish did not stamp published_at"
        snapshot = read_broker(client, _layout(prefix))
        assert snapshot.lengths[DEFAULT] == 5
        assert snapshot.in_flight == {HIGH_PRIORITY: 0, DEFAULT: 2, LOW_PRIORITY: 0}
        for message in reserved:
            message.ack()
        queue.close()
    assert read_broker(client, _layout(prefix)).in_flight[DEFAULT] == 0


def test_oldest_task_age_from_the_published_at_header(valkey, client: redis.Redis) -> None:
    app = _producer_app(valkey.url)
    before = time.time()
    app.send_task(TASK, queue=HIGH_PRIORITY, priority=9)  # oldest, in a priority sub-list
    app.send_task(TASK, queue=HIGH_PRIORITY, priority=0)
    snapshot = read_broker(client, _layout(), now=lambda: before + 100)
    assert 99 <= snapshot.oldest_age[HIGH_PRIORITY] <= 100
    assert snapshot.oldest_age[DEFAULT] == 0.0  # empty queue
    # A message published without the header (another producer): age unknown, series omitted.
    client.lpush(LOW_PRIORITY, b'{"body": "", "headers": {}, "properties": {}}')
    assert LOW_PRIORITY not in read_broker(client, _layout()).oldest_age


def test_beat_tick_is_exported_and_zero_when_missing(client: redis.Redis) -> None:
    assert read_broker(client, _layout()).beat_last_tick == 0.0
    client.set(_layout().beat_tick_key, "1700000000.250")
    assert read_broker(client, _layout()).beat_last_tick == 1700000000.25


def _exporter(client: redis.Redis, **kwargs) -> QueueExporter:
    return QueueExporter(client=client, layout=_layout(), app=None, interval=0.2,
                         database=lambda: DatabaseSnapshot(time.monotonic(), 4, {"health_check": 1700000000.0}),
                         **kwargs)


def test_served_families_match_docs_metrics_md(valkey, client: redis.Redis) -> None:
    exporter = _exporter(client)
    exporter.refresh_broker()
    exporter.refresh_database()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    families = exposed_families(generate_latest(registry).decode())
    documented = {n: d for n, d in documented_metrics().items() if "exporter" in d["endpoints"]}
    # celery_workers_online needs the worker census (a real worker: tests/monitoring/test_live.py), and
    # celery_worker_up a worker the census lost (tests/monitoring/test_worker_down.py).
    assert set(families) == set(documented) - {"celery_workers_online", "celery_worker_up"}
    for name, family in families.items():
        assert family["type"] == documented[name]["type"], name
        assert family["labels"] == documented[name]["labels"], name
    assert families["celery_dead_letters_total"]["samples"][0].value == 4


def test_broker_memory_and_its_maxmemory_are_exported(client: redis.Redis, tmp_path: Path) -> None:
    """INFO memory, for CeleryBrokerMemoryHigh: used bytes grow with what is stored; maxmemory 0 = no limit."""
    def served(exporter_client: redis.Redis) -> dict[str, float]:
        exporter = _exporter(exporter_client)
        exporter.refresh_broker()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(exporter)
        families = exposed_families(generate_latest(registry).decode())
        return {name: families[name]["samples"][0].value
                for name in ("celery_broker_memory_used_bytes", "celery_broker_memory_max_bytes")}

    assert served(client)["celery_broker_memory_max_bytes"] == 0  # the shared test Valkey has no maxmemory
    with EmbeddedValkey(tmp_path / "valkey", maxmemory="32mb") as server:
        limited = broker_client(server.url, timeout=2.0)
        before = served(limited)
        limited.set("ballast", b"x" * 4_000_000)
        after = served(limited)
    assert before["celery_broker_memory_max_bytes"] == after["celery_broker_memory_max_bytes"] == 32 * 2**20
    assert 0 < before["celery_broker_memory_used_bytes"] < 32 * 2**20
    assert after["celery_broker_memory_used_bytes"] - before["celery_broker_memory_used_bytes"] >= 4_000_000


def test_broker_down_is_reported_at_once_and_scrapes_do_not_wait() -> None:
    # A "broker" that accepts connections and never answers: reads hit the socket timeout.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    client = broker_client(f"redis://127.0.0.1:{port}/0", timeout=1.0)
    exporter = _exporter(client)
    exporter.start()
    try:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(exporter)
        begun = time.monotonic()
        families = exposed_families(generate_latest(registry).decode())
        assert time.monotonic() - begun < 0.5, "a scrape waited on the broker"
        assert families["celery_broker_up"]["samples"][0].value == 0
        assert "celery_queue_length" not in families, "no backlog must be served without a broker read"
    finally:
        exporter.stop()
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_stale_snapshot_is_not_served(client: redis.Redis) -> None:
    exporter = _exporter(client)
    exporter.refresh_broker()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    assert exposed_families(generate_latest(registry).decode())["celery_broker_up"]["samples"][0].value == 1
    exporter.broker.taken_at -= 60  # as if the refresher had hung for a minute
    families = exposed_families(generate_latest(registry).decode())
    assert families["celery_broker_up"]["samples"][0].value == 0
    assert "celery_queue_length" not in families
