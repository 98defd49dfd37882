"""Each fault, caused for real against a FaultStack, and the count of what became of every task.

A scenario starts the workers it needs, sends a burst of ``process_user_action`` tasks (each action id
recorded at most once: the idempotency key), causes its fault while the burst is being worked off,
restores what a supervisor would (a new worker pod, a restarted server), waits until every task has
settled and returns a table row. Lost must be 0 and duplicated must be 0 on every row.
"""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from collections.abc import Callable

import redis

from apps.main.queues import task_name
from apps.main.redis_keys import BEAT_LEASE_KEY
from tests.faults.harness import Burst, FaultStack, Row, kill, log, wait_for

#: Seconds a broken server stays down before it is started again.
OUTAGE_SECONDS = 5.0


def nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def burst_in_flight(stack: FaultStack, size: int) -> tuple[Burst, int]:
    """Send a burst and wait until a quarter of it succeeded: the fault then hits it in full flight.
    Returns the burst and how many of its tasks were still open. Workers that drained it before this
    process looked (a loaded machine can stall the poll) get a burst twice the size, up to three times:
    the fault must find work open, or the scenario proves nothing."""
    burst = Burst()
    for _ in range(3):
        done_before = stack.settled(burst)[0]
        stack.send_actions(size, burst=burst)
        target = done_before + size // 4
        wait_for(lambda t=target: stack.settled(burst)[0] >= t, timeout=120, what=f"{target} tasks done")
        open_ = stack.settled(burst)[2]
        if open_ > 0:
            return burst, open_
        log(f"the burst of {size} drained before the fault; sending {size * 2} more")
        size *= 2
    raise AssertionError(f"every burst drained before the fault (last: {size // 2} tasks)")


def poison_deep_nesting(stack: FaultStack, size: int) -> Row:
    worker = stack.start_worker("nesting")
    burst = Burst()
    deep_id = stack.send(task_name("process_user_action"), burst=burst, action_id=uuid.uuid4().hex,
                         user_id="u", action="deep", payload=nested(500))
    stack.send_actions(size, burst=burst)
    stack.wait_settled(burst, timeout=120, what="nesting burst")
    reason = stack.dead_letters([deep_id]).get(deep_id)
    alive = worker.process.poll() is None
    stack.supervisor.stop(worker)
    notes = f"500-level payload dead-lettered as {reason!r}; worker {'alive' if alive else 'DIED'}"
    row = stack.count("poison: arguments nested 500 deep", burst, notes)
    if not alive or reason != "poison":
        row.lost = max(row.lost, 1)
    return row


def poison_pool_exit(stack: FaultStack, size: int) -> Row:
    worker = stack.start_worker("exits")
    burst = Burst()
    poison_id = stack.send("faults.exit_pool_process", burst=burst)
    stack.send_actions(size, burst=burst)
    stack.wait_settled(burst, timeout=180, what="pool-exit burst")
    reason = stack.dead_letters([poison_id]).get(poison_id)
    state = stack.states([poison_id]).get(poison_id)
    stack.supervisor.stop(worker)
    row = stack.count("poison: task exits its pool process", burst,
                      f"os._exit task dead-lettered as {reason!r}, result state {state}")
    if reason != "poison" or state != "FAILURE":
        row.lost = max(row.lost, 1)
    return row


def worker_sigterm(stack: FaultStack, size: int) -> Row:
    """What Kubernetes does on scale-down: SIGTERM, warm shutdown, then another pod carries on."""
    worker = stack.start_worker("sigterm-a")
    burst, open_ = burst_in_flight(stack, size)
    stack.supervisor.stop(worker)  # SIGTERM, waits for the warm shutdown
    replacement = stack.start_worker("sigterm-b")
    stack.wait_settled(burst, timeout=180, what="after SIGTERM")
    stack.supervisor.stop(replacement)
    return stack.count("worker SIGTERM mid-burst (scale-down)", burst, f"{open_} open at the signal")


def _kill_children(stack: FaultStack, size: int, *, every: bool) -> Row:
    worker = stack.start_worker("children", concurrency=2)
    burst, open_ = burst_in_flight(stack, size)
    children = stack.pool_processes(worker)
    for child in children if every else children[:1]:
        kill(child)
    stack.wait_settled(burst, timeout=180, what="after killing pool processes")
    alive = worker.process.poll() is None
    stack.supervisor.stop(worker)
    what = "every pool process" if every else "one pool process"
    row = stack.count(f"kill -9 {what} mid-burst", burst,
                      f"{open_} open at the kill; worker {'kept running' if alive else 'DIED'}")
    if not alive:
        row.lost = max(row.lost, 1)
    return row


def kill_one_pool_process(stack: FaultStack, size: int) -> Row:
    return _kill_children(stack, size, every=False)


def kill_every_pool_process(stack: FaultStack, size: int) -> Row:
    return _kill_children(stack, size, every=True)


def kill_worker_main_process(stack: FaultStack, size: int) -> Row:
    """The whole worker dies at once (OOM kill of the pod, node loss): nothing runs a warm shutdown.

    Its reserved messages stay in Redis' unacked set until the visibility timeout; any live worker's
    sweep (every 10 s) then restores them.
    """
    worker = stack.start_worker("main-a")
    burst, open_ = burst_in_flight(stack, size)
    for process in [*stack.pool_processes(worker)]:
        kill(process)
    kill(worker.process)
    worker.process.wait(10)
    killed_at = time.monotonic()
    stack.supervisor.children.remove(worker)
    replacement = stack.start_worker("main-b")
    stack.wait_settled(burst, timeout=stack.visibility_timeout + 120, what="after kill -9 of the worker")
    settled_after = time.monotonic() - killed_at
    stack.supervisor.stop(replacement)
    return stack.count("kill -9 worker main process mid-burst", burst,
                       f"{open_} open at the kill; all settled {settled_after:.0f} s later "
                       f"(visibility timeout {stack.visibility_timeout} s)")


def _exporter_answers(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    return "celery_queue_length{" in body


def broker_kill_restart(stack: FaultStack, size: int) -> Row:
    """kill -9 of Valkey mid-burst, started again (AOF) after an outage; beat and exporter must follow."""
    worker = stack.start_worker("broker")
    log_start = worker.log_path.stat().st_size  # the log file is shared by every run of this scenario
    beat = stack.start_beat()
    exporter, port = stack.start_exporter()
    client = redis.Redis.from_url(stack.valkey.url, socket_timeout=5)
    wait_for(lambda: client.exists(BEAT_LEASE_KEY), timeout=60, what="beat to take its lease")
    wait_for(lambda: _exporter_answers(port), timeout=60, what="the exporter")
    burst, open_ = burst_in_flight(stack, size)
    kill(stack.valkey.process)
    stack.valkey.process.wait(10)
    time.sleep(OUTAGE_SECONDS)  # the outage itself, not a wait for a condition
    stack.valkey.restart(timeout=60)  # same port, password and AOF, as the chart's StatefulSet would
    restarted_at = time.monotonic()
    stack.wait_settled(burst, timeout=180, what="after the broker restart")
    settled_after = time.monotonic() - restarted_at
    client = redis.Redis.from_url(stack.valkey.url, socket_timeout=5)
    client.delete(BEAT_LEASE_KEY)  # a lease from before the kill may survive in the AOF: want a fresh one
    notes = [f"{open_} open at the kill, down {OUTAGE_SECONDS:.0f} s, settled {settled_after:.0f} s after restart"]
    try:
        wait_for(lambda: client.exists(BEAT_LEASE_KEY), timeout=60, what="beat to take its lease again")
        wait_for(lambda: _exporter_answers(port), timeout=60, what="the exporter after the restart")
        notes.append("beat and exporter resumed")
        resumed = beat.process.poll() is None and exporter.process.poll() is None and worker.process.poll() is None
    except TimeoutError as exc:
        notes.append(str(exc))
        resumed = False
    for child in (exporter, beat, worker):
        stack.supervisor.stop(child)
    with worker.log_path.open(errors="replace") as log:
        log.seek(log_start)
        restored = re.findall(r"restored (\d+) message", log.read())
    if "Unrecoverable error" in worker.log_path.read_text(errors="replace")[log_start:]:
        notes.append("the worker stopped with an unrecoverable error")
        resumed = False
    notes.append(f"the worker restored {sum(map(int, restored))} orphaned message(s) right after reconnecting")
    if settled_after >= stack.visibility_timeout:
        notes.append("some task waited for the visibility timeout")
        resumed = False
    row = stack.count("kill -9 + restart of Valkey mid-burst", burst, "; ".join(notes))
    if not resumed:
        row.lost = max(row.lost, 1)
    return row


def database_restart(stack: FaultStack, size: int) -> Row:
    worker = stack.start_worker("database")
    burst, open_ = burst_in_flight(stack, size)
    stack.postgres.stop()  # fast shutdown: every connection is cut
    time.sleep(OUTAGE_SECONDS)
    stack.postgres.start()
    stack.wait_settled(burst, timeout=240, what="after the database restart")
    alive = worker.process.poll() is None
    stack.supervisor.stop(worker)
    row = stack.count("restart of PostgreSQL mid-burst", burst,
                      f"{open_} open at the stop, down {OUTAGE_SECONDS:.0f} s")
    if not alive:
        row.lost = max(row.lost, 1)
    return row


Scenario = Callable[[FaultStack, int], Row]

#: name -> scenario, in the order the table lists them.
SCENARIOS: dict[str, Scenario] = {
    "deep-nesting": poison_deep_nesting,
    "pool-exit": poison_pool_exit,
    "sigterm": worker_sigterm,
    "kill-child": kill_one_pool_process,
    "kill-children": kill_every_pool_process,
    "kill-main": kill_worker_main_process,
    "broker-restart": broker_kill_restart,
    "database-restart": database_restart,
}


def run(stack: FaultStack, names: list[str], size: int) -> list[Row]:
    rows = []
    for name in names:
        log(f"{name}: {size} tasks")
        started = time.monotonic()
        row = SCENARIOS[name](stack, size)
        log(f"{name}: done in {time.monotonic() - started:.0f} s — {row}")
        rows.append(row)
    return rows


def table(rows: list[Row]) -> str:
    header = ("fault", "sent", "succeeded", "dead-lettered", "lost", "duplicated")
    width = max(len(header[0]), *(len(r.fault) for r in rows))
    lines = [f"{header[0]:<{width}}  " + "  ".join(f"{h:>13}" for h in header[1:])]
    for r in rows:
        lines.append(f"{r.fault:<{width}}  " + "  ".join(
            f"{v:>13}" for v in (r.sent, r.succeeded, r.dead_lettered, r.lost, r.duplicated)))
    lines.append("")
    lines.extend(f"- {r.fault}: {r.notes}" for r in rows if r.notes)
    return "\n".join(lines)

