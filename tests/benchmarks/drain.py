"""Measurement helpers: the backlog of a queue as it drains, rates between two backlog levels,
percentiles, and the memory of a worker's process tree."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis

from embedded.network import wait_until
from tests.benchmarks.progress import log

#: kombu's Redis transport keeps a message of priority p > 0 in the list ``<queue>\x06\x16<step>``.
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
#: Where kombu's Redis transport keeps delivered, not yet acknowledged messages.
UNACKED_KEY = "unacked"
#: How often the backlog is sampled while a worker drains it.
POLL_SECONDS = 0.02


def queue_keys(queues: Iterable[str]) -> list[str]:
    return [key for q in queues for key in (q, *(f"{q}{PRIORITY_SEPARATOR}{p}" for p in PRIORITY_STEPS))]


def backlog(client: redis.Redis, queues: Iterable[str]) -> int:
    """Messages waiting in the queues' lists (every priority), not yet taken by a worker."""
    pipe = client.pipeline(transaction=False)
    for key in queue_keys(queues):
        pipe.llen(key)
    return sum(pipe.execute())


def unacked(client: redis.Redis) -> int:
    return int(client.hlen(UNACKED_KEY))


def purge(client: redis.Redis, queues: Iterable[str]) -> None:
    client.delete(*queue_keys(queues))


@dataclass
class Drain:
    """Backlog samples (monotonic seconds, messages) from a worker's start until the queue is empty, and
    the worker's CPU time (main process, pool processes) when the backlog passed 90 % and 10 %."""

    total: int
    samples: list[tuple[float, int]]
    cpu: list[tuple[int, float, float]] = field(default_factory=list)  # (backlog, main s, children s)

    def cpu_us_per_task(self) -> dict[str, float]:
        """CPU microseconds per task of the main process and of the pool processes, between 90 % and 10 %.

        Steadier than a rate on a shared machine (time spent waiting for a CPU does not count): what
        a change adds to each task, where a rate shows it only once that process is the bottleneck."""
        if len(self.cpu) < 2:
            return {}
        (b0, main0, kids0), (b1, main1, kids1) = self.cpu[0], self.cpu[-1]
        done = max(b0 - b1, 1)
        return {"main": 1e6 * (main1 - main0) / done, "children": 1e6 * (kids1 - kids0) / done,
                "total": 1e6 * (main1 + kids1 - main0 - kids0) / done}

    def crossing(self, level: float) -> float:
        """When the backlog first fell to ``level`` messages, interpolated between two samples."""
        previous = self.samples[0]
        for sample in self.samples:
            if sample[1] <= level:
                (t0, b0), (t1, b1) = previous, sample
                return t1 if b0 == b1 else t0 + (t1 - t0) * (b0 - level) / (b0 - b1)
            previous = sample
        raise ValueError(f"the backlog never fell to {level}")

    def rate(self, high: float = 0.9, low: float = 0.1) -> float:
        """Messages per second while the backlog fell from ``high`` to ``low`` of the total: the worker's
        steady rate, without its start-up (before ``high``) and the tail (after ``low``)."""
        start, end = self.crossing(high * self.total), self.crossing(low * self.total)
        return (high - low) * self.total / max(end - start, 1e-9)


def tree_cpu(pid: int) -> tuple[float, float]:
    """User + system CPU seconds of a process and, summed, of its children (the pool processes)."""
    import psutil

    root = psutil.Process(pid)
    children = 0.0
    for child in root.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            children += sum(child.cpu_times()[:2])
    return sum(root.cpu_times()[:2]), children


def watch_drain(client: redis.Redis, queues: list[str], total: int, *, check: Callable[[], None],
                timeout: float, what: str, pid: int | None = None) -> Drain:
    """Sample the backlog every POLL_SECONDS until it is empty; ``check`` raises if the worker died.

    With ``pid`` (the worker's main process), also its CPU time as the backlog passes 90 % and 10 %."""
    samples: list[tuple[float, int]] = []
    cpu: list[tuple[int, float, float]] = []
    marks = [0.9 * total, 0.1 * total]
    last_report = [time.monotonic()]

    def empty() -> bool:
        check()
        samples.append((time.monotonic(), backlog(client, queues)))
        if pid is not None and marks and samples[-1][1] <= marks[0]:
            marks.pop(0)
            with contextlib.suppress(Exception):  # a figure less, never a failed run
                cpu.append((samples[-1][1], *tree_cpu(pid)))
        if time.monotonic() - last_report[0] > 10:
            log(f"  {what}: {samples[-1][1]} of {total} still queued")
            last_report[0] = time.monotonic()
        return samples[-1][1] == 0

    wait_until(empty, timeout=timeout, what=f"{what}: queue drained", interval=POLL_SECONDS)
    return Drain(total, samples, cpu)


class TaskEventCounter:
    """Counts the task events workers send: Celery's ``celeryev`` exchange is Redis pub/sub here, and
    a worker batches its task events (``task.multi``), so PUBLISH commands do not count them."""

    PATTERN = "*celeryev/task.*"

    def __init__(self, client: redis.Redis) -> None:
        self.events = 0
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._thread: threading.Thread | None = None

    def _on_message(self, message: dict) -> None:
        try:
            envelope = json.loads(message["data"])
            body = envelope["body"]
            if envelope.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            decoded = json.loads(body)
            self.events += len(decoded) if isinstance(decoded, list) else 1
        except (ValueError, KeyError, TypeError):
            self.events += 1  # an event all the same, in a form this does not read

    def __enter__(self) -> TaskEventCounter:
        self._pubsub.psubscribe(**{self.PATTERN: self._on_message})
        self._thread = self._pubsub.run_in_thread(sleep_time=0.05, daemon=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread.join(5)
        self._pubsub.close()


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); ``p`` in 0..100."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def tree_memory(pid: int) -> dict[str, float]:
    """RSS and PSS (MiB) of a process and all its descendants (a worker's main process and pool children).

    RSS counts pages shared after fork once per process; PSS divides them among the sharers.
    """
    import psutil

    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    rss = pss = 0
    for process in processes:
        info = process.memory_full_info()
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return {"rss_mib": rss / 2**20, "pss_mib": pss / 2**20, "processes": len(processes)}


def settled_memory(pid: int, *, timeout: float) -> dict[str, float]:
    """Tree memory once two readings 0.5 s apart agree within 1 % (a worker that just started still grows)."""
    readings: list[dict[str, float]] = []

    def stable() -> dict[str, float] | None:
        readings.append(tree_memory(pid))
        if len(readings) >= 2 and abs(readings[-1]["rss_mib"] - readings[-2]["rss_mib"]) <= 0.01 * readings[-2][
                "rss_mib"]:
            return readings[-1]
        return None

    try:
        return wait_until(stable, timeout=timeout, what="worker memory to settle", interval=0.5)
    except TimeoutError:
        return readings[-1]
