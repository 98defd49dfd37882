"""A stack of its own for the fault suite: Valkey, PostgreSQL, workers, beat and the queue exporter as
real processes that a scenario may kill and restart, and the counting of what became of each task.

Counts come straight from the database (results, dead letters, ``UserAction`` rows) with SQL, so the
harness needs no Django configuration of its own and runs inside pytest as well as from the command
line (``python -m tests.faults``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "app") not in sys.path:
    sys.path.insert(0, str(ROOT / "app"))

from apps.main.queues import HIGH_PRIORITY, WORKER_POOLS, task_name  # noqa: E402
from embedded import EmbeddedPostgres, EmbeddedValkey  # noqa: E402
from embedded.network import Abort, free_port, wait_until  # noqa: E402
from embedded.supervisor import APP_DIR, Child, Supervisor, python_env  # noqa: E402
from portfolio_site import commands  # noqa: E402
from tests.support.timeouts import scaled  # noqa: E402

FINAL_STATES = ("SUCCESS", "FAILURE")


@dataclass
class Row:
    """One line of the fault table."""

    fault: str
    sent: int
    succeeded: int
    dead_lettered: int
    lost: int
    duplicated: int
    notes: str = ""

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0


@dataclass
class Burst:
    """Tasks sent by one scenario: task id -> the action id its effect is keyed by (None: no effect)."""

    ids: dict[str, str | None] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[faults] {message}", flush=True)


class FaultStack:
    """Own servers in ``root``; processes run with the chart's command lines and the test settings."""

    def __init__(self, root: Path, *, visibility_timeout: int = 30) -> None:
        self.root = root
        self.visibility_timeout = visibility_timeout
        self.valkey = EmbeddedValkey(root / "valkey")
        self.postgres = EmbeddedPostgres(root / "postgres", database="faults")
        self.supervisor: Supervisor | None = None
        self.env: dict[str, str] = {}
        self._publisher = None

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FaultStack:
        self.valkey.start()
        self.postgres.start()
        env = python_env()
        for name in ("CELERY_BROKER_URL", "TEST_REDIS_URL", "TEST_DATABASE_URL", "METRICS_PORT"):
            env.pop(name, None)
        env.update({
            "DJANGO_SETTINGS_MODULE": "portfolio_site.settings.test",
            "REDIS_URL": self.valkey.url,
            "DATABASE_URL": self.postgres.url,
            "APP_DATA_DIR": str(self.root / "app"),
            "LOG_LEVEL": "WARNING",
            # Short enough to measure a dead worker's reservations coming back; tasks here take ms.
            "CELERY_VISIBILITY_TIMEOUT": str(self.visibility_timeout),
            "TEST_TASK_MODULES": "tests.faults.tasks",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        })
        self.env = env
        subprocess.run(["python", "manage.py", "migrate", "--noinput"], cwd=APP_DIR, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        self.supervisor = Supervisor(log_dir=self.root / "logs", env=env)
        return self

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop_all(timeout=20)
        if self._publisher is not None:
            self._publisher.close()
        self.valkey.stop()
        self.postgres.stop()

    def __enter__(self) -> FaultStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- processes -------------------------------------------------------------------------------
    @property
    def publisher(self):
        """A Celery client on this stack's broker (JSON, like the app), for sending and pinging."""
        if self._publisher is None:
            from celery import Celery

            self._publisher = Celery("faults", broker=self.valkey.url, set_as_current=False)
            self._publisher.conf.update(task_serializer="json", accept_content=["json"],
                                        broker_connection_retry_on_startup=True)
        return self._publisher

    def start_worker(self, name: str, *, queues: tuple[str, ...] = (HIGH_PRIORITY,), concurrency: int = 2) -> Child:
        assert self.supervisor is not None
        # The high-priority pool as the chart runs it (its prefetch multiplier, task events), on these queues.
        pool = replace(WORKER_POOLS["high-priority"], queues=queues, concurrency=concurrency)
        argv = commands.worker(name, pool, loglevel="WARNING")
        child = self.supervisor.spawn(f"worker-{name}", argv, extra_env={"METRICS_PORT": str(free_port())})
        node = f"{name}@{socket.gethostname()}"

        def answered() -> bool:
            if child.process.poll() is not None:
                raise Abort(self.supervisor.describe_failure(child))
            return any(node in reply for reply in self.publisher.control.ping(destination=[node], timeout=0.5))

        wait_until(answered, timeout=scaled(60), what=f"worker {node}", interval=0.2)
        return child

    def start_beat(self) -> Child:
        assert self.supervisor is not None
        return self.supervisor.spawn("beat", commands.beat(loglevel="WARNING"))

    def start_exporter(self) -> tuple[Child, int]:
        assert self.supervisor is not None
        port = free_port()
        return self.supervisor.spawn("exporter", commands.exporter(port)), port

    def log_tails(self, lines: int = 40) -> str:
        """The end of every process log of this stack: what a failed scenario is diagnosed from."""
        from embedded.process import tail

        logs = sorted((self.root / "logs").glob("*.log"))
        return "\n".join(f"--- {path.name} ---\n{tail(path, lines)}" for path in logs)

    @staticmethod
    def pool_processes(child: Child) -> list[psutil.Process]:
        return psutil.Process(child.process.pid).children()

    # --- tasks -----------------------------------------------------------------------------------
    def send_actions(self, count: int, *, queue: str = HIGH_PRIORITY, burst: Burst | None = None) -> Burst:
        """``count`` process_user_action tasks, each with its own action id (the idempotency key)."""
        burst = burst or Burst()
        run = uuid.uuid4().hex[:8]
        with self.publisher.producer_or_acquire() as producer:
            for i in range(count):
                action_id = f"{run}-{i}"
                result = self.publisher.send_task(
                    task_name("process_user_action"), queue=queue, producer=producer,
                    kwargs={"action_id": action_id, "user_id": f"u{i % 7}", "action": "fault"},
                )
                burst.ids[result.id] = action_id
        return burst

    def send(self, name: str, *, queue: str = HIGH_PRIORITY, burst: Burst, **kwargs: object) -> str:
        result = self.publisher.send_task(name, queue=queue, kwargs=kwargs)
        burst.ids[result.id] = None
        return result.id

    # --- counting --------------------------------------------------------------------------------
    def sql(self, query: str, *params: object) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.postgres.url.replace("postgres://", "postgresql://", 1), connect_timeout=5) as conn:
            return conn.execute(query, params).fetchall()

    def states(self, ids: list[str]) -> dict[str, str]:
        rows = self.sql("SELECT task_id, status FROM django_celery_results_taskresult WHERE task_id = ANY(%s)", ids)
        return dict(rows)

    def dead_letters(self, ids: list[str]) -> dict[str, str]:
        return dict(self.sql("SELECT task_id, reason FROM main_deadletter WHERE task_id = ANY(%s)", ids))

    def where_open(self, ids: list[str]) -> str:
        """Where the broker holds the tasks that never settled: in a queue, reserved (the ``unacked``
        hash) or nowhere — which tells a restore that did not happen from a message that was dropped."""
        import json

        import redis
        from kombu.transport.redis import Channel

        client = redis.Redis.from_url(self.valkey.url)
        wanted, places = set(ids), {}
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            if kind == b"list":
                for raw in client.lrange(key, 0, -1):
                    task_id = json.loads(raw)["headers"].get("id")
                    if task_id in wanted:
                        places[task_id] = f"queue {key.decode()}"
            elif key == Channel.unacked_key.encode():
                for raw in client.hvals(key):
                    task_id = json.loads(raw)[0]["headers"].get("id")
                    if task_id in wanted:
                        places[task_id] = "unacked"
        mutex = client.exists(Channel.unacked_mutex_key)
        client.close()
        held = dict.fromkeys(places.values(), 0)
        for place in places.values():
            held[place] += 1
        where = [f"{n} in {place}" for place, n in held.items()]
        if missing := len(wanted) - len(places):
            where.append(f"{missing} nowhere in the broker")
        if mutex:
            where.append("the restore mutex is held")
        return f"open: {', '.join(where)}"

    def settled(self, burst: Burst) -> tuple[int, int, int]:
        """(succeeded, dead-lettered, still open) for the burst."""
        ids = list(burst.ids)
        return self._settled(ids, self.states(ids), self.dead_letters(ids))

    @staticmethod
    def _settled(ids: list[str], states: dict[str, str], letters: dict[str, str]) -> tuple[int, int, int]:
        succeeded = sum(1 for i in ids if states.get(i) == "SUCCESS" and i not in letters)
        dead = sum(1 for i in ids if i in letters)
        return succeeded, dead, len(ids) - succeeded - dead

    def wait_settled(self, burst: Burst, *, timeout: float, what: str) -> None:
        """Wait until every task of the burst succeeded or was dead-lettered; prints progress."""
        last = [0.0]

        def done() -> bool:
            succeeded, dead, open_ = self.settled(burst)
            if time.monotonic() - last[0] > 5:
                log(f"  {what}: {succeeded} succeeded, {dead} dead-lettered, {open_} open")
                last[0] = time.monotonic()
            return open_ == 0

        try:
            wait_until(done, timeout=scaled(timeout), what=what, interval=0.5)
        except TimeoutError as exc:
            log(f"  {exc}")  # counted as lost below

    def count(self, fault: str, burst: Burst, notes: str = "") -> Row:
        ids = list(burst.ids)
        states, letters = self.states(ids), self.dead_letters(ids)
        succeeded, dead, open_ = self._settled(ids, states, letters)
        # A task that succeeded must not also be dead-lettered, nor end in any other state.
        wrong_state = sum(1 for i in ids if i not in letters and states.get(i) not in (None, "SUCCESS"))
        actions = [a for i, a in burst.ids.items() if a is not None]
        effects = dict(self.sql(
            "SELECT action_id, count(*) FROM main_useraction WHERE action_id = ANY(%s) GROUP BY action_id", actions
        ))
        duplicated = sum(n - 1 for n in effects.values() if n > 1)
        # Every action whose task succeeded must have its effect exactly once.
        missing_effects = sum(
            1 for i, a in burst.ids.items() if a is not None and states.get(i) == "SUCCESS" and a not in effects
        )
        extra = []
        if wrong_state:
            extra.append(f"{wrong_state} in a non-final state")
        if missing_effects:
            extra.append(f"{missing_effects} succeeded without effect")
        if open_:
            extra.append(self.where_open([i for i in ids if i not in letters and states.get(i) != "SUCCESS"]))
        return Row(fault, len(ids), succeeded, dead, open_ + missing_effects, duplicated,
                   "; ".join(filter(None, [notes, *extra])))


def wait_for(condition: Callable[[], object], *, timeout: float, what: str) -> None:
    wait_until(condition, timeout=scaled(timeout), what=what, interval=0.1)


def kill(process: psutil.Process | subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
        process.send_signal(sig)
