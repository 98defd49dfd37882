"""The queue exporter: broker-side facts no worker can report about itself.

``python manage.py run_queue_exporter`` serves, per queue, the backlog (``celery_queue_length``,
every priority sub-list counted; the `hpa` autoscaling engine reads it), messages reserved but not
acknowledged (``celery_queue_in_flight``), the age of the oldest waiting message, and workers online;
plus the broker's memory and its maxmemory (a full broker refuses publishes), broker reachability, beat's
last tick, pending dead letters and the health_check heartbeat, and ``celery_worker_up`` 0 for a worker
the census lost without a clean shutdown (``WorkerLiveness``).

Scrapes never touch the broker or the database. Background threads refresh snapshots — the broker
one with one pipelined round trip of O(queues x priority steps) commands under a socket timeout, the
worker census with a rate-limited ``inspect().active_queues()`` broadcast — and a scrape renders the
newest snapshot, dropping what is stale so that an autoscaler never acts on an old backlog.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from apps.main.metrics.labels import host_label
from apps.main.metrics.worker import PUBLISHED_AT_HEADER

logger = logging.getLogger(__name__)

#: ``apps.main.models.Heartbeat`` rows always exported (0 = never succeeded): the dead man's switch.
EXPECTED_HEARTBEATS = ("health_check",)


@dataclass(frozen=True)
class BrokerLayout:
    """Where kombu's Redis transport keeps a queue (see kombu/transport/redis.py)."""

    queues: tuple[str, ...]
    key_prefix: str = ""
    priority_steps: tuple[int, ...] = (0, 3, 6, 9)
    separator: str = "\x06\x16"
    unacked_key: str = "unacked"
    beat_tick_key: str = "celery-stack:beat:last-tick"

    def list_keys(self, queue: str) -> list[str]:
        # Step 0 is the queue's own key; the others are "<queue><sep><step>" (kombu _q_for_pri).
        return [self.key_prefix + (queue if step == 0 else f"{queue}{self.separator}{step}")
                for step in sorted(set(self.priority_steps))]

    @classmethod
    def from_settings(cls, queues: Iterable[str]) -> BrokerLayout:
        from django.conf import settings
        from kombu.transport.redis import PRIORITY_STEPS, Channel

        from apps.main.redis_keys import BEAT_LAST_TICK_KEY

        options = dict(getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {})
        return cls(
            queues=tuple(dict.fromkeys(queues)),
            key_prefix=options.get("global_keyprefix", "") or "",
            # kombu's default steps too: a client on stock settings that sends with a priority writes to
            # those sub-lists, and what waits there must show (the workers adopt it, redis_transport).
            priority_steps=tuple(sorted({*options.get("priority_steps", PRIORITY_STEPS), *PRIORITY_STEPS})),
            separator=options.get("sep", Channel.sep),
            unacked_key=options.get("unacked_key", Channel.unacked_key),
            beat_tick_key=BEAT_LAST_TICK_KEY,
        )


@dataclass
class BrokerSnapshot:
    taken_at: float  # monotonic
    lengths: dict[str, int]
    in_flight: dict[str, int]
    oldest_age: dict[str, float]  # queues whose head carries no publish time are absent
    beat_last_tick: float  # 0 = no tick recorded
    duration: float
    used_memory: int = 0  # INFO memory: bytes the broker uses, and its maxmemory (0 = no limit)
    maxmemory: int = 0


@dataclass
class DatabaseSnapshot:
    taken_at: float
    dead_letters_pending: int
    heartbeats: dict[str, float] = field(default_factory=dict)


@dataclass
class WorkerCensus:
    taken_at: float
    per_queue: dict[str, int]
    nodes: frozenset[str] = frozenset()  # node names that answered


@dataclass
class WorkerLiveness:
    """Workers the census saw and then lost without a clean stop: the exporter serves ``celery_worker_up`` 0.

    A worker's own endpoint says 1 while it lives and vanishes when it dies, so nothing else says 0 — and the
    celery-mixin's CeleryWorkerDown alert is ``celery_worker_up == 0``. A node counts as down once it has not
    answered for ``down_after`` seconds, unless it left the clean-stop marker (``WORKER_STOPPED_KEY``, set at
    SIGTERM); it is forgotten ``retention`` seconds after its last answer (bounded memory and series; longer
    than the mixin's 15m ``for``) or when it answers again. A host label that a live node also carries (two
    workers on one host) is not reported: the label cannot tell them apart.
    """

    down_after: float = 60.0
    retention: float = 3600.0
    last_seen: dict[str, float] = field(default_factory=dict)  # node name -> monotonic time of its last answer
    down_hosts: frozenset[str] = frozenset()

    def update(self, answered: Iterable[str], now: float,
               stopped_cleanly: Callable[[list[str]], set[str]]) -> frozenset[str]:
        for node in answered:
            self.last_seen[node] = now
        lost = [node for node, seen in self.last_seen.items() if now - seen > self.down_after]
        forget = {node for node in lost if now - self.last_seen[node] > self.retention}
        if candidates := [node for node in lost if node not in forget]:
            forget |= stopped_cleanly(candidates)
        for node in forget:
            del self.last_seen[node]
        live = {host_label(node) for node, seen in self.last_seen.items() if now - seen <= self.down_after}
        self.down_hosts = frozenset(host_label(node) for node in lost if node not in forget) - live
        return self.down_hosts


def _published_at(raw: bytes | str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)["headers"].get(PUBLISHED_AT_HEADER)
        return float(value) if value is not None else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def read_broker(client: Any, layout: BrokerLayout, *, now: Callable[[], float] = time.time) -> BrokerSnapshot:
    """One pipelined round trip: LLEN and the tail (oldest) element of every sub-list, unacked, beat tick,
    INFO memory."""
    begun = time.monotonic()
    pipe = client.pipeline(transaction=False)
    for queue in layout.queues:
        for key in layout.list_keys(queue):
            pipe.llen(key)
            pipe.lindex(key, -1)  # kombu LPUSHes and BRPOPs: the tail is the next message out
    pipe.hvals(layout.key_prefix + layout.unacked_key)
    pipe.get(layout.beat_tick_key)
    pipe.info("memory")
    replies = pipe.execute()
    wall = now()

    lengths: dict[str, int] = {}
    oldest_age: dict[str, float] = {}
    position = 0
    for queue in layout.queues:
        total, heads, unknown_head = 0, [], False
        for _ in layout.list_keys(queue):
            length, tail = replies[position], replies[position + 1]
            position += 2
            total += int(length or 0)
            if length:
                stamp = _published_at(tail)
                if stamp is None:
                    unknown_head = True
                else:
                    heads.append(stamp)
        lengths[queue] = total
        if total == 0:
            oldest_age[queue] = 0.0
        elif heads and not unknown_head:
            oldest_age[queue] = max(0.0, wall - min(heads))

    in_flight = dict.fromkeys(layout.queues, 0)
    # Each unacked entry is JSON [message, exchange, routing_key]; bounded by the workers' prefetch.
    for entry in replies[position] or ():
        try:
            routing_key = json.loads(entry)[2]
        except (ValueError, IndexError, TypeError):
            continue
        if routing_key in in_flight:
            in_flight[routing_key] += 1
    tick = replies[position + 1]
    try:
        beat_last_tick = float(tick) if tick is not None else 0.0
    except ValueError:
        beat_last_tick = 0.0
    memory = replies[position + 2] or {}
    return BrokerSnapshot(time.monotonic(), lengths, in_flight, oldest_age, beat_last_tick,
                          time.monotonic() - begun, int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0)))


def broker_client(url: str, timeout: float) -> Any:
    """A Redis client whose every call ends within about 2 x ``timeout`` (redis-py retries 10 times by default);
    for a sentinel:// URL, on whichever node is the primary at each (re)connect."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from apps.main import redis_connection

    return redis_connection.client(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                   retry=Retry(NoBackoff(), 1), health_check_interval=30)


def read_database() -> DatabaseSnapshot:
    from django.db import close_old_connections

    from apps.main.models import DeadLetter, Heartbeat

    close_old_connections()  # a connection the database dropped must not fail every refresh
    pending = DeadLetter.objects.filter(status=DeadLetter.Status.PENDING).count()
    heartbeats = dict.fromkeys(EXPECTED_HEARTBEATS, 0.0)
    for name, last_success in Heartbeat.objects.values_list("name", "last_success"):
        heartbeats[name] = last_success.timestamp()
    return DatabaseSnapshot(time.monotonic(), pending, heartbeats)


def census(app: Any, queues: Iterable[str], timeout: float) -> WorkerCensus:
    """Workers consuming each queue, from one ``active_queues`` broadcast (it waits ``timeout``)."""
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    per_queue = dict.fromkeys(queues, 0)
    for consumed in replies.values():
        for name in {info.get("name") for info in consumed or ()}:
            if name in per_queue:
                per_queue[name] += 1
    return WorkerCensus(time.monotonic(), per_queue, frozenset(replies))


def stopped_cleanly(client: Any, nodes: list[str]) -> set[str]:
    """The nodes whose clean-stop marker is in Redis (one pipelined round trip)."""
    from apps.main.redis_keys import WORKER_STOPPED_KEY

    pipe = client.pipeline(transaction=False)
    for node in nodes:
        pipe.exists(WORKER_STOPPED_KEY.format(node=node))
    return {node for node, found in zip(nodes, pipe.execute(), strict=True) if found}


class _Refresher(threading.Thread):
    def __init__(self, name: str, interval: float, refresh: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self.interval, self.refresh = interval, refresh
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            begun = time.monotonic()
            try:
                self.refresh()
            except Exception as exc:
                logger.warning("%s refresh failed: %s: %s", self.name, type(exc).__name__, exc)
            self.stopping.wait(max(0.0, self.interval - (time.monotonic() - begun)))


class QueueExporter(Collector):
    """Holds the snapshots, refreshes them in threads, renders them on scrape."""

    def __init__(self, *, client: Any, layout: BrokerLayout, app: Any = None, interval: float = 5.0,
                 inspect_interval: float = 15.0, inspect_timeout: float = 2.0,
                 database: Callable[[], DatabaseSnapshot] | None = read_database,
                 worker_down_after: float = 60.0, worker_down_retention: float = 3600.0) -> None:
        self.client, self.layout, self.app = client, layout, app
        self.interval, self.inspect_interval, self.inspect_timeout = interval, inspect_interval, inspect_timeout
        self.database = database
        self.broker: BrokerSnapshot | None = None
        self.db: DatabaseSnapshot | None = None
        self.workers: WorkerCensus | None = None
        self.liveness = WorkerLiveness(worker_down_after, worker_down_retention)
        self._threads: list[_Refresher] = []

    # Older than this, a snapshot is not served: three missed refreshes.
    def _fresh(self, snapshot: Any, interval: float) -> bool:
        return snapshot is not None and time.monotonic() - snapshot.taken_at <= 3 * interval + 1

    def refresh_broker(self) -> None:
        try:
            self.broker = read_broker(self.client, self.layout)
        except Exception:
            self.broker = None  # broker_up becomes 0 at once, not after the staleness window
            raise

    def refresh_database(self) -> None:
        assert self.database is not None
        try:
            self.db = self.database()
        except Exception:
            self.db = None
            raise

    def refresh_workers(self) -> None:
        try:
            workers = census(self.app, self.layout.queues, self.inspect_timeout)
            self.liveness.update(workers.nodes, workers.taken_at, lambda nodes: stopped_cleanly(self.client, nodes))
            self.workers = workers
        except Exception:
            self.workers = None
            raise

    def start(self) -> None:
        self._threads = [_Refresher("broker", self.interval, self.refresh_broker)]
        if self.database is not None:
            self._threads.append(_Refresher("database", self.interval, self.refresh_database))
        if self.app is not None:
            self._threads.append(_Refresher("workers", self.inspect_interval, self.refresh_workers))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        for thread in self._threads:
            thread.stopping.set()
        for thread in self._threads:
            thread.join(timeout=self.inspect_timeout + 5)

    def collect(self):  # type: ignore[override]
        broker = self.broker if self._fresh(self.broker, self.interval) else None
        up = GaugeMetricFamily("celery_broker_up", "1 if the exporter's last broker read succeeded.")
        up.add_metric([], 1.0 if broker else 0.0)
        yield up
        if broker is not None:
            yield self._per_queue("celery_queue_length",
                                  "Messages waiting in the queue, all priority sub-lists counted.", broker.lengths)
            yield self._per_queue("celery_queue_in_flight",
                                  "Messages reserved by workers and not yet acknowledged.", broker.in_flight)
            yield self._per_queue(
                "celery_queue_oldest_task_age_seconds",
                "Seconds since the oldest waiting message was published (0 when the queue is empty).",
                broker.oldest_age)
            tick = GaugeMetricFamily("celery_beat_last_tick_timestamp_seconds",
                                     "Unix time of beat's last scheduler tick (0 = never).")
            tick.add_metric([], broker.beat_last_tick)
            yield tick
            duration = GaugeMetricFamily("celery_exporter_broker_read_duration_seconds",
                                         "Seconds the last broker read took.")
            duration.add_metric([], broker.duration)
            yield duration
            used = GaugeMetricFamily("celery_broker_memory_used_bytes", "Bytes the broker (Redis) uses (INFO memory).")
            used.add_metric([], float(broker.used_memory))
            yield used
            limit = GaugeMetricFamily("celery_broker_memory_max_bytes",
                                      "The broker's maxmemory in bytes (0 = no limit); at it, publishes are refused.")
            limit.add_metric([], float(broker.maxmemory))
            yield limit
        workers = self.workers if self._fresh(self.workers, self.inspect_interval + self.inspect_timeout) else None
        if workers is not None:
            yield self._per_queue("celery_workers_online", "Workers consuming the queue.", workers.per_queue)
            if self.liveness.down_hosts:  # never a 1 here: a live worker's own endpoint says so
                down = GaugeMetricFamily("celery_worker_up", "0 for a worker the census lost without a clean "
                                         "shutdown (its own endpoint serves 1 while it lives).", labels=["hostname"])
                for host in sorted(self.liveness.down_hosts):
                    down.add_metric([host], 0.0)
                yield down
        db = self.db if self._fresh(self.db, self.interval) else None
        db_up = GaugeMetricFamily("celery_exporter_database_up", "1 if the exporter's last database read succeeded.")
        db_up.add_metric([], 1.0 if db else 0.0)
        yield db_up
        if db is not None:
            dead = GaugeMetricFamily("celery_dead_letters_total",
                                     "Dead letters pending in the store (not requeued, not discarded).")
            dead.add_metric([], float(db.dead_letters_pending))
            yield dead
            beats = GaugeMetricFamily("celery_heartbeat_last_success_timestamp_seconds",
                                      "Unix time a periodic check (Heartbeat row) last succeeded (0 = never).",
                                      labels=["name"])
            for name, stamp in sorted(db.heartbeats.items()):
                beats.add_metric([name], stamp)
            yield beats

    @staticmethod
    def _per_queue(name: str, documentation: str, values: dict[str, float]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, documentation, labels=["queue_name"])
        for queue, value in sorted(values.items()):
            family.add_metric([queue], float(value))
        return family
