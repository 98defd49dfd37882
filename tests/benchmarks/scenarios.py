"""The measurements (a) to (i), each on the same Valkey and PostgreSQL, each after a reset.

Throughput runs pre-fill the queue, then start the worker and watch the backlog drain (``drain``); the
rate is taken between 90 % and 10 % of the backlog, so neither the worker's start-up nor the tail count.
(a) and (b) run before this process sets Django up: the project's publish hooks (Celery signals, global
to the process) must not touch the bare messages.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import random
import statistics
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any

from embedded.network import free_port, wait_until
from embedded.supervisor import Child
from tests.benchmarks import drain
from tests.benchmarks.progress import log
from tests.benchmarks.servers import ROOT, BenchServers, node_name
from tests.benchmarks.task_names import DISABLE_METRICS, NOOP, PAYLOAD_SINK, RECORD_START, REPORT_QUERY, STARTS_KEY
from tests.support.timeouts import scaled

BARE_QUEUE = "bench_bare"
BENCH_TASKS = ("-I", "tests.benchmarks.bench_tasks")
BARE_ARGV = ["celery", "-A", "tests.benchmarks.bare_app", "worker", "-Q", BARE_QUEUE, "--concurrency", "2",
             "--loglevel", "WARNING"]
EVENTS_ENV = "CELERY_WORKER_SEND_TASK_EVENTS"
#: The list (a) pushes to and pops from; no worker consumes it.
RAW_KEY = "bench:raw"


@dataclass(frozen=True)
class Sizes:
    raw_messages: int
    bare_tasks: int
    noop_tasks: int
    action_tasks: int
    action_concurrency: tuple[int, ...]
    api_requests: int
    api_clients: int
    low_tasks: int
    low_task_seconds: float
    high_rate: float
    high_seconds: float
    high_bound_seconds: float
    memory_tasks: int
    #: Runs of (b) and of the production pair of (c), alternated; their median counts (this machine's
    #: noise between two runs is several per cent, as large as the effects (c) looks for). (h) too.
    repeats: int
    #: (h) tasks per drain run, and encode+decode rounds per codec timing.
    payload_tasks: int
    codec_rounds: int
    #: (i) tasks per publish and drain run of a 1 KB, a 100 KB and a 1 MB payload.
    large_payload_tasks: tuple[int, int, int]


FULL = Sizes(raw_messages=20_000, bare_tasks=5000, noop_tasks=5000, action_tasks=3000, action_concurrency=(1, 2, 4),
             api_requests=2000, api_clients=4, low_tasks=10_000, low_task_seconds=0.05, high_rate=20,
             high_seconds=15, high_bound_seconds=240, memory_tasks=10_000, repeats=3, payload_tasks=5000,
             codec_rounds=20_000, large_payload_tasks=(2000, 300, 40))
SMOKE = Sizes(raw_messages=500, bare_tasks=50, noop_tasks=50, action_tasks=50, action_concurrency=(1, 2, 4),
              api_requests=60, api_clients=4, low_tasks=200, low_task_seconds=0.05, high_rate=10,
              high_seconds=1, high_bound_seconds=90, memory_tasks=50, repeats=1, payload_tasks=50,
              codec_rounds=500, large_payload_tasks=(20, 6, 4))


@dataclass
class Bench:
    servers: BenchServers
    sizes: Sizes
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def error(self, message: str) -> None:
        log(f"ERROR: {message}")
        self.errors.append(message)

    def note(self, message: str) -> None:
        log(f"note: {message}")
        self.notes.append(message)

    def timeout(self, seconds: float) -> float:
        return scaled(seconds)


@contextlib.contextmanager
def running(bench: Bench, child: Child) -> Iterator[Child]:
    try:
        yield child
    finally:
        bench.servers.stop_child(child)


def _drain_timeout(total: int, slowest_rate: float) -> float:
    return scaled(60 + total / slowest_rate)


# --- the project's side: imported only after Django is set up -------------------------------------


def _project_app() -> Any:
    from portfolio_site.celery import app

    return app


def _pool(name: str, **changes: Any) -> Any:
    """A pool of the chart's default layout, with ``changes`` (fields the WorkerPool of this checkout has)."""
    from apps.main.queues import WORKER_POOLS

    known = {f.name for f in fields(WORKER_POOLS[name])}
    return replace(WORKER_POOLS[name], **{k: v for k, v in changes.items() if k in known})


def _worker_argv(pool_name: str, pool: Any, *, bench_tasks: bool = True) -> list[str]:
    from portfolio_site import commands

    # The chart passes app.logLevel both as LOG_LEVEL and as --loglevel.
    return [*commands.worker(pool_name, pool, loglevel="WARNING"), *(BENCH_TASKS if bench_tasks else ())]


def _fill(app: Any, count: int, make: Callable[[int], tuple[str, dict[str, Any], str]], **options: Any) -> float:
    """Publish ``count`` tasks through one producer, pipelined (kombu's publish batch); returns msgs/s."""
    started = time.perf_counter()
    with app.producer_or_acquire() as producer, producer.batch():
        for i in range(count):
            name, kwargs, queue = make(i)
            app.send_task(name, kwargs=kwargs, queue=queue, producer=producer, **options)
    return count / (time.perf_counter() - started)


def _declare(app: Any, queues: list[str]) -> None:
    """Bind the queues again after FLUSHALL: the producer pool remembers them as declared."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for name in queues:
            app.amqp.queues[name].bind(channel).declare()


def _tasks_accepted(app: Any, node: str) -> int:
    """Tasks the worker ``node`` has accepted since it started (``celery inspect stats``)."""
    stats = app.control.inspect(destination=[node], timeout=2).stats() or {}
    return sum((stats.get(node) or {}).get("total", {}).values())


def _wait_worked_off(bench: Bench, app: Any, node: str, child: Child, queues: list[str], total: int) -> None:
    """Until the worker accepted every task and nothing waits in the queue or the unacked hash."""
    client = bench.servers.redis

    def done() -> bool:
        bench.servers.check_alive(child)
        return (drain.backlog(client, queues) == 0 and drain.unacked(client) == 0
                and _tasks_accepted(app, node) >= total)

    wait_until(done, timeout=bench.timeout(120), what=f"{node} to finish {total} tasks", interval=0.2)


def _metric_total(port: int, metric: str, task: str) -> float | None:
    """The worker's own count of ``metric`` for ``task``; None when it serves no metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(f"{metric}{{") and f'name="{task}"' in line)


# --- (a) raw redis-py ------------------------------------------------------------------------------


def bare_message_bytes(bench: Bench) -> int:
    """Size in Valkey of one task message of (b): published by the bare app, read back, deleted."""
    from tests.benchmarks.bare_app import noop

    probe = "bench_probe"
    noop.apply_async(queue=probe)
    raw = bench.servers.redis.lindex(probe, 0)
    bench.servers.redis.delete(probe)
    if raw is None:
        raise RuntimeError("the probe message did not arrive")
    return len(raw)


def raw_redis(bench: Bench, payload_bytes: int) -> dict[str, Any]:
    """(a) LPUSH/BRPOP round trips of a payload as large as a task message: the broker's own ceiling."""
    import redis

    bench.servers.reset()
    n = bench.sizes.raw_messages
    payload = b"x" * payload_bytes
    url = bench.servers.valkey.url

    client = redis.Redis.from_url(url)
    started = time.perf_counter()
    for _ in range(n):
        client.lpush(RAW_KEY, payload)
        client.brpop([RAW_KEY], timeout=10)
    sequential = n / (time.perf_counter() - started)
    log(f"(a) sequential LPUSH+BRPOP: {sequential:.0f} msg/s ({payload_bytes} B)")

    received = [0]
    producer_client, consumer_client = redis.Redis.from_url(url), redis.Redis.from_url(url)
    batch = 100

    def produce() -> None:
        for start in range(0, n, batch):
            pipe = producer_client.pipeline(transaction=False)
            for _ in range(min(batch, n - start)):
                pipe.lpush(RAW_KEY, payload)
            pipe.execute()

    def consume() -> None:
        while received[0] < n and consumer_client.brpop([RAW_KEY], timeout=10) is not None:
            received[0] += 1

    threads = [threading.Thread(target=consume, daemon=True), threading.Thread(target=produce, daemon=True)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(bench.timeout(300))
    threaded = received[0] / (time.perf_counter() - started)
    if received[0] != n:
        bench.error(f"(a) the consumer thread received {received[0]} of {n} messages")
    log(f"(a) producer/consumer threads: {threaded:.0f} msg/s")
    for c in (client, producer_client, consumer_client):
        c.close()
    return {"title": "raw redis-py LPUSH/BRPOP", "payload_bytes": payload_bytes, "messages": n,
            "pipeline_batch": batch,
            "figures": {"sequential_msgs_per_s": sequential, "threaded_msgs_per_s": threaded}}


# --- (b) bare Celery ---------------------------------------------------------------------------------


def _bare_run(bench: Bench, run: int) -> dict[str, Any]:
    from tests.benchmarks.bare_app import app, noop

    servers, n = bench.servers, bench.sizes.bare_tasks
    servers.reset()
    _declare(app, [BARE_QUEUE])
    fill_rate = _fill(app, n, lambda i: (noop.name, {}, BARE_QUEUE))
    log(f"(b) {n} no-op tasks queued ({fill_rate:.0f}/s); starting the bare worker")
    node = node_name("celery")
    with running(bench, servers.spawn_bare(f"b-bare-worker-{run}", BARE_ARGV)) as child:
        result = drain.watch_drain(servers.redis, [BARE_QUEUE], n, check=lambda: servers.check_alive(child),
                                   timeout=_drain_timeout(n, 50), what="(b) bare", pid=child.process.pid)
        _wait_worked_off(bench, app, node, child, [BARE_QUEUE], n)
        memory = drain.tree_memory(child.process.pid)
    log(f"(b) bare Celery: {result.rate():.0f} tasks/s; RSS {memory['rss_mib']:.0f} MiB after the run")
    return {"tasks_per_s": result.rate(), "publish_per_s": fill_rate, "memory_after_run": memory,
            "cpu_us_per_task": result.cpu_us_per_task()}


def bare_celery(bench: Bench) -> dict[str, Any]:
    """(b) ``Celery("bare", broker=…)`` with every default, a no-op task, prefork concurrency 2."""
    from celery import signals

    from tests.benchmarks.bare_app import app

    if signals.before_task_publish.receivers:
        raise RuntimeError("(b) must run before Django is set up: project hooks would alter the bare messages")
    runs = [_bare_run(bench, i) for i in range(bench.sizes.repeats)]
    app.pool.force_close_all()
    rate = statistics.median(r["tasks_per_s"] for r in runs)
    rss = statistics.median(r["memory_after_run"]["rss_mib"] for r in runs)
    cpu = _median_cpu(runs)
    return {"title": "bare Celery, all defaults", "tasks": bench.sizes.bare_tasks, "argv": BARE_ARGV,
            "runs": runs, "cpu_us_per_task": cpu,
            "figures": {"tasks_per_s": rate, "rss_mib_after_run": rss} | _cpu_figures(cpu)}


def _median_cpu(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Median CPU microseconds per task (main, children, total) over runs that measured it."""
    measured = [r["cpu_us_per_task"] for r in runs if r.get("cpu_us_per_task")]
    return {key: statistics.median(m[key] for m in measured) for key in ("main", "children", "total")} \
        if measured else {}


def _cpu_figures(cpu: dict[str, float]) -> dict[str, float]:
    return {f"cpu_us_per_task_{key}": value for key, value in cpu.items() if value > 0}


# --- (c) the project's worker, no-op task ------------------------------------------------------------


def production_events_default() -> bool:
    from django.conf import settings

    from apps.main.queues import WORKER_POOLS

    pool = WORKER_POOLS["high-priority"]
    return bool(getattr(pool, "task_events", settings.CELERY_WORKER_SEND_TASK_EVENTS))


def _noop_run(bench: Bench, *, events: bool, metrics: bool, prefetch: int | None = None) -> dict[str, Any]:
    servers, n, app = bench.servers, bench.sizes.noop_tasks, _project_app()
    servers.reset()
    _declare(app, ["high_priority"])
    _fill(app, n, lambda i: (NOOP, {}, "high_priority"))
    servers.redis.config_resetstat()  # count only the worker's PUBLISHes (task events)
    changes: dict[str, Any] = {"task_events": events} | ({"prefetch_multiplier": prefetch} if prefetch else {})
    argv = _worker_argv("high-priority", _pool("high-priority", **changes))
    extra = {EVENTS_ENV: "true" if events else "false", DISABLE_METRICS: "0" if metrics else "1"}
    label = f"events {'on' if events else 'off'}, metrics {'on' if metrics else 'off'}" + (
        f", prefetch multiplier {prefetch}" if prefetch else "")
    log(f"(c) {n} no-op tasks queued; worker with {label}")
    name = f"c-{'ev' if events else 'noev'}-{'m' if metrics else 'nom'}{f'-p{prefetch}' if prefetch else ''}"
    child, port = servers.spawn_project(name, argv, extra)
    node = node_name("high-priority")
    # Subscribed in both variants alike: Valkey delivers the events to one client, as to Flower.
    with drain.TaskEventCounter(servers.redis) as task_events, running(bench, child):
        result = drain.watch_drain(servers.redis, ["high_priority"], n, check=lambda: servers.check_alive(child),
                                   timeout=_drain_timeout(n, 30), what=f"(c) {label}", pid=child.process.pid)
        _wait_worked_off(bench, app, node, child, ["high_priority"], n)
        counted = _metric_total(port, "celery_task_succeeded_total", NOOP)
        publishes = servers.publish_calls()
    rate = result.rate()
    events_seen = task_events.events >= n
    metrics_seen = counted is not None and counted >= n
    if events_seen != events:
        bench.note(f"(c) {label}: the worker {'sent' if events_seen else 'did not send'} task events "
                   f"({task_events.events} for {n} tasks): its settings and command line do not switch them")
    if metrics_seen != metrics:
        bench.error(f"(c) {label}: worker metrics counted {counted} of {n} tasks")
    log(f"(c) {label}: {rate:.0f} tasks/s")
    return {"events": events, "metrics": metrics, "prefetch": prefetch, "tasks_per_s": rate, "argv": argv, "env": extra,
            "cpu_us_per_task": result.cpu_us_per_task(),
            "task_events_seen": task_events.events, "publish_commands": publishes, "metrics_succeeded_total": counted,
            "events_effective": events_seen, "metrics_effective": metrics_seen}


def project_noop(bench: Bench) -> dict[str, Any]:
    """(c) The project's worker (production settings, chart command line) running a no-op task.

    The production pair (events as in production, metrics on and off) runs ``repeats`` times, alternated,
    for the metrics overhead; the pair with events switched the other way once."""
    default = production_events_default()
    plan = [(default, True), (default, False)] * bench.sizes.repeats + [(not default, True), (not default, False)]
    runs = [_noop_run(bench, events=events, metrics=metrics) for events, metrics in plan]
    by = {key: statistics.median(r["tasks_per_s"] for r in runs if (r["events"], r["metrics"]) == key)
          for key in set(plan)}
    # Beyond the four variants: the pool's prefetch multiplier (docs and chart cite its effect) set back to 1.
    prefetch = getattr(_pool("high-priority"), "prefetch_multiplier", 1)
    prefetch_1 = _noop_run(bench, events=default, metrics=True, prefetch=1) if prefetch != 1 else None

    def overhead(events: bool) -> float:
        without = by[(events, False)]
        return 100 * (without - by[(events, True)]) / without

    # The same comparison in CPU per task: what the metrics add to each task, whichever process it lands
    # in — steadier than rates here, where identical runs differ by up to 10 %.
    cpu = {key: _median_cpu([r for r in runs if (r["events"], r["metrics"]) == key and r["prefetch"] is None])
           for key in set(plan)}
    with_m, without_m = cpu[(default, True)], cpu[(default, False)]
    cpu_overhead = (100 * (with_m["total"] - without_m["total"]) / without_m["total"]
                    if with_m and without_m else float("nan"))

    figures = {f"events_{'on' if events else 'off'}_metrics_{'on' if metrics else 'off'}_tasks_per_s": rate
               for (events, metrics), rate in sorted(by.items(), reverse=True)}
    figures |= _cpu_figures(with_m)
    if prefetch_1 is not None:
        runs.append(prefetch_1)
        figures["production_but_prefetch_1_tasks_per_s"] = prefetch_1["tasks_per_s"]
    return {"title": "project worker, no-op task", "tasks": bench.sizes.noop_tasks, "repeats": bench.sizes.repeats,
            "production_events": default, "production_prefetch_multiplier": prefetch,
            "production_tasks_per_s": by[(default, True)],
            "medians": [{"events": e, "metrics": m, "tasks_per_s": rate} for (e, m), rate in by.items()],
            "metrics_overhead_pct": overhead(default),
            "metrics_overhead_cpu_pct": cpu_overhead,
            "cpu_us_per_task": {f"events {'on' if e else 'off'}, metrics {'on' if m else 'off'}": c
                                for (e, m), c in cpu.items()},
            "metrics_overhead_pct_other_events": overhead(not default),
            "events_cost_pct": 100 * (by[(False, True)] - by[(True, True)]) / by[(False, True)],
            "runs": runs, "figures": figures}


# --- (d) process_user_action with results ------------------------------------------------------------


def _final_results(bench: Bench) -> int:
    return int(bench.servers.sql(
        "SELECT count(*) FROM django_celery_results_taskresult WHERE status IN ('SUCCESS', 'FAILURE')")[0][0])


def _send_actions(bench: Bench, count: int) -> tuple[dict[str, str], float]:
    """``count`` process_user_action tasks (routed by the project: high_priority); task id -> action id."""
    from apps.main.queues import task_name

    app, run = _project_app(), uuid.uuid4().hex[:8]
    ids: dict[str, str] = {}
    started = time.perf_counter()
    with app.producer_or_acquire() as producer, producer.batch():
        for i in range(count):
            action_id = f"{run}-{i}"
            result = app.send_task(task_name("process_user_action"), producer=producer,
                                   kwargs={"action_id": action_id, "user_id": f"u{i % 50}", "action": "bench"})
            ids[result.id] = action_id
    return ids, count / (time.perf_counter() - started)


def _wait_results(bench: Bench, child: Child, total: int, what: str) -> None:
    def done() -> bool:
        bench.servers.check_alive(child)
        return _final_results(bench) >= total

    try:
        wait_until(done, timeout=_drain_timeout(total, 10), what=what, interval=0.25)
    except TimeoutError as exc:
        bench.error(str(exc))  # the verification below says what is missing


def verify_actions(bench: Bench, ids: dict[str, str], what: str) -> dict[str, int]:
    """Every task a SUCCESS row, every action id one UserAction row; a shortfall is an error."""
    task_ids, action_ids = list(ids), list(ids.values())
    success = int(bench.servers.sql(
        "SELECT count(*) FROM django_celery_results_taskresult WHERE status = 'SUCCESS' AND task_id = ANY(%s)",
        task_ids)[0][0])
    distinct, rows = bench.servers.sql(
        "SELECT count(DISTINCT action_id), count(*) FROM main_useraction WHERE action_id = ANY(%s)", action_ids)[0]
    check = {"tasks": len(ids), "success_rows": success, "missing_success": len(ids) - success,
             "missing_actions": len(ids) - int(distinct), "duplicate_actions": int(rows) - int(distinct)}
    check["mismatches"] = check["missing_success"] + check["missing_actions"] + check["duplicate_actions"]
    if check["mismatches"]:
        bench.error(f"{what}: verification failed: {check}")
    return check


def user_actions(bench: Bench) -> dict[str, Any]:
    """(d) ``process_user_action`` with results stored, at several concurrencies."""
    servers, n, app = bench.servers, bench.sizes.action_tasks, _project_app()
    runs = []
    for concurrency in bench.sizes.action_concurrency:
        servers.reset()
        _declare(app, ["high_priority"])
        ids, fill_rate = _send_actions(bench, n)
        log(f"(d) {n} process_user_action queued ({fill_rate:.0f}/s); worker at concurrency {concurrency}")
        argv = _worker_argv("high-priority", _pool("high-priority", concurrency=concurrency))
        child, _ = servers.spawn_project(f"d-c{concurrency}", argv)
        with running(bench, child):
            result = drain.watch_drain(servers.redis, ["high_priority"], n,
                                       check=lambda: servers.check_alive(child),  # noqa: B023 — used at once
                                       timeout=_drain_timeout(n, 10), what=f"(d) concurrency {concurrency}")
            _wait_results(bench, child, n, f"(d) concurrency {concurrency}: results of {n} tasks")
            memory = drain.tree_memory(child.process.pid)
        check = verify_actions(bench, ids, f"(d) concurrency {concurrency}")
        rate = result.rate()
        log(f"(d) concurrency {concurrency}: {rate:.0f} tasks/s; verification {check}")
        runs.append({"concurrency": concurrency, "tasks_per_s": rate, "argv": argv, "verification": check,
                     "memory_after_run": memory})
    return {"title": "process_user_action, results stored", "tasks": n, "runs": runs,
            "mismatches": sum(r["verification"]["mismatches"] for r in runs),
            "figures": {**{f"concurrency_{r['concurrency']}_tasks_per_s": r["tasks_per_s"] for r in runs},
                        **{f"concurrency_{r['concurrency']}_rss_mib": r["memory_after_run"]["rss_mib"] for r in runs}}}


# --- (e) the HTTP API ---------------------------------------------------------------------------------


def chart_gunicorn_workers() -> int:
    import yaml

    values = yaml.safe_load((ROOT / "charts" / "celery-stack" / "values.yaml").read_text())
    return int(values["web"]["gunicornWorkers"])


def _web_argv(port: int, workers: int) -> list[str]:
    from portfolio_site import commands

    argv = commands.web(port, workers=workers)
    # The chart binds every interface of the pod; here only the loopback.
    argv[argv.index("--bind") + 1] = f"127.0.0.1:{port}"
    return argv


def api_enqueue(bench: Bench) -> dict[str, Any]:
    """(e) POST /api/tasks/process_user_action/ from several client threads against gunicorn."""
    servers, sizes, app = bench.servers, bench.sizes, _project_app()
    servers.reset()
    _declare(app, ["high_priority"])
    port, workers = free_port(), chart_gunicorn_workers()
    argv = _web_argv(port, workers)
    child, _ = servers.spawn_project("e-web", argv)
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    run = uuid.uuid4().hex[:8]
    headers = {"Authorization": f"Bearer {servers.api_token}", "Content-Type": "application/json"}
    path = "/api/tasks/process_user_action/"

    def healthy() -> bool:
        servers.check_alive(child)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status == 200

    with running(bench, child):
        wait_until(healthy, timeout=bench.timeout(120), what="gunicorn /healthz", interval=0.2)

        def post(connection: http.client.HTTPConnection, action_id: str) -> tuple[str, float]:
            body = json.dumps({"action_id": action_id, "user_id": "u1", "action": "bench"})
            started = time.perf_counter()
            try:
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                connection.close()  # the next request opens a new connection
                status = type(exc).__name__
            return status, time.perf_counter() - started

        per_client = math.ceil(sizes.api_requests / sizes.api_clients)
        warmup = 5
        latencies: list[float] = []
        spans: list[tuple[float, float]] = []
        gate = threading.Barrier(sizes.api_clients)

        def client(index: int) -> None:
            # gunicorn's sync workers close every connection after the response; http.client reopens.
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            mine: list[float] = []
            seen: Counter[str] = Counter()
            for i in range(warmup):  # each gunicorn worker imports lazily on its first requests
                seen[post(connection, f"w{run}-{index}-{i}")[0]] += 1
            gate.wait()
            begun = time.perf_counter()
            for i in range(per_client):
                status, seconds = post(connection, f"{run}-{index}-{i}")
                seen[status] += 1
                mine.append(seconds)
            ended = time.perf_counter()
            connection.close()
            with lock:
                statuses.update(seen)
                latencies.extend(mine)
                spans.append((begun, ended))

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(sizes.api_clients)]
        log(f"(e) gunicorn ({workers} workers) up; {sizes.api_clients} clients x {per_client} POSTs")
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(bench.timeout(600))
        queued = drain.backlog(servers.redis, ["high_priority"])
    measured = per_client * sizes.api_clients
    accepted = statuses["202"]
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    # Warm-up requests count in the statuses and in the queue, not in the rate or latencies.
    accepted_measured = accepted - min(accepted, warmup * sizes.api_clients)
    rate = accepted_measured / wall
    other = {status: count for status, count in statuses.items() if status != "202"}
    if other:
        bench.note(f"(e) non-202 answers: {other}")
    if queued != accepted:
        bench.error(f"(e) {accepted} requests answered 202 but {queued} messages are in high_priority")
    p50, p99 = drain.percentile(latencies, 50) * 1000, drain.percentile(latencies, 99) * 1000
    log(f"(e) API: {rate:.0f} accepted/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, non-202 {sum(other.values())}")
    drain.purge(servers.redis, ["high_priority"])
    return {"title": "API enqueue over HTTP", "argv": argv, "gunicorn_workers": workers,
            "clients": sizes.api_clients, "requests": measured, "warmup_requests": warmup * sizes.api_clients,
            "statuses": dict(statuses), "non_202": sum(other.values()), "queued_messages": queued,
            "figures": {"accepted_per_s": rate, "p50_ms": p50, "p99_ms": p99}}


# --- (f) queue isolation -----------------------------------------------------------------------------


def _isolation(bench: Bench, layout: str) -> dict[str, Any]:
    servers, sizes, app = bench.servers, bench.sizes, _project_app()
    high_pool, low_pool = _pool("high-priority"), _pool("low-priority")
    if layout == "pools":
        high_queue, low_queue = "high_priority", "low_priority"
        workers = [("high-priority", high_pool), ("low-priority", low_pool)]
    else:  # one worker, one queue for both kinds, the same processes in all
        high_queue = low_queue = "default"
        workers = [("shared", _pool("default", concurrency=high_pool.concurrency + low_pool.concurrency))]
    servers.reset()
    _declare(app, sorted({high_queue, low_queue}))
    _fill(app, sizes.low_tasks, lambda i: (REPORT_QUERY, {"seconds": sizes.low_task_seconds}, low_queue))
    log(f"(f) {layout}: {sizes.low_tasks} low-priority tasks of {sizes.low_task_seconds * 1000:.0f} ms queued")
    children = []
    try:
        for name, pool in workers:
            argv = _worker_argv(name, pool)
            children.append((name, argv, servers.spawn_project(f"f-{layout}-{name}", argv)[0]))
        for name, _, child in children:
            servers.wait_ready(app, node_name(name), child, timeout=bench.timeout(120))
        low_concurrency = workers[-1][1].concurrency

        def low_busy() -> bool:
            return drain.backlog(servers.redis, [low_queue]) <= sizes.low_tasks - low_concurrency - 1

        wait_until(low_busy, timeout=bench.timeout(60), what="low-priority tasks to start")
        count = max(1, round(sizes.high_rate * sizes.high_seconds))
        log(f"(f) {layout}: sending {count} high-priority tasks at {sizes.high_rate:.0f}/s")
        first = time.monotonic()
        deadline_wall = time.time() + sizes.high_bound_seconds
        sent: dict[int, float] = {}
        for seq in range(count):
            pause = first + seq / sizes.high_rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the publisher, not waiting for a condition
            sent[seq] = time.time()
            app.send_task(RECORD_START, kwargs={"seq": seq, "sent_at": sent[seq]}, queue=high_queue)
        last_report = [time.monotonic()]

        def all_started() -> bool:
            for _, _, child in children:
                servers.check_alive(child)
            started = servers.redis.llen(STARTS_KEY)
            if time.monotonic() - last_report[0] > 10:
                low_left = drain.backlog(servers.redis, [low_queue])
                log(f"  (f) {layout}: {started} of {count} high-priority tasks started; {low_left} queued")
                last_report[0] = time.monotonic()
            return started >= count

        remaining = first + sizes.high_bound_seconds - time.monotonic()
        with contextlib.suppress(TimeoutError):  # the rest is censored below
            wait_until(all_started, timeout=max(remaining, 1), what="high-priority tasks to start", interval=0.1)
        ended_wall = min(time.time(), deadline_wall)
        low_left = drain.backlog(servers.redis, [low_queue])
        drain.purge(servers.redis, [high_queue, low_queue])
    finally:
        for _, _, child in reversed(children):
            servers.stop_child(child)
    drain.purge(servers.redis, [high_queue, low_queue])
    starts = {}
    for line in servers.redis.lrange(STARTS_KEY, 0, -1):
        seq, sent_at, started = line.decode().split()
        starts[int(seq)] = float(started) - float(sent_at)
    censored = [seq for seq in sent if seq not in starts]
    # An unstarted task waited at least until the end of the wait: a lower bound, not a latency.
    latencies = [starts.get(seq, ended_wall - sent[seq]) * 1000 for seq in sent]
    figures = {f"p{p}_ms": drain.percentile(latencies, p) for p in (50, 95, 99)}
    result = {"layout": layout, "workers": [{"name": n, "argv": a} for n, a, _ in children],
              "high_queue": high_queue, "low_queue": low_queue, "high_tasks": count, "censored": len(censored),
              "lower_bound": bool(censored), "max_ms": max(latencies), "low_tasks_left": low_left, **figures}
    bound = "≥ " if censored else ""
    log(f"(f) {layout}: enqueue→start p50 {bound}{figures['p50_ms']:.0f} ms, p99 {bound}{figures['p99_ms']:.0f} ms"
        + (f"; {len(censored)} of {count} never started within {sizes.high_bound_seconds:.0f} s" if censored else ""))
    return result


def queue_isolation(bench: Bench) -> dict[str, Any]:
    """(f) Enqueue→start latency of high-priority tasks behind a low-priority backlog: pools vs one queue."""
    pools, shared = _isolation(bench, "pools"), _isolation(bench, "shared")
    servers = bench.servers
    servers.reset()
    return {"title": "queue isolation", "low_tasks": bench.sizes.low_tasks,
            "low_task_seconds": bench.sizes.low_task_seconds, "high_rate": bench.sizes.high_rate,
            "high_seconds": bench.sizes.high_seconds, "bound_seconds": bench.sizes.high_bound_seconds,
            "pools": pools, "shared": shared,
            "figures": {f"{layout['layout']}_{key}": layout[key] for layout in (pools, shared)
                        for key in ("p50_ms", "p95_ms", "p99_ms")}}


# --- (g) worker memory ---------------------------------------------------------------------------------


def worker_memory(bench: Bench) -> dict[str, Any]:
    """(g) RSS of the high-priority worker (main process + pool children) idle, then after many tasks."""
    servers, n, app = bench.servers, bench.sizes.memory_tasks, _project_app()
    servers.reset()
    _declare(app, ["high_priority"])
    argv = _worker_argv("high-priority", _pool("high-priority"), bench_tasks=False)
    child, _ = servers.spawn_project("g-memory", argv)
    with running(bench, child):
        servers.wait_ready(app, node_name("high-priority"), child, timeout=bench.timeout(120))
        idle = drain.settled_memory(child.process.pid, timeout=bench.timeout(30))
        log(f"(g) idle worker: RSS {idle['rss_mib']:.0f} MiB ({idle['processes']} processes); "
            f"sending {n} process_user_action")
        ids, _ = _send_actions(bench, n)
        _wait_results(bench, child, n, f"(g) results of {n} tasks")
        after = drain.tree_memory(child.process.pid)
    check = verify_actions(bench, ids, "(g)")
    log(f"(g) after {n} tasks: RSS {after['rss_mib']:.0f} MiB")
    return {"title": "worker memory", "argv": argv, "tasks": n, "idle": idle, "after": after,
            "verification": check,
            "figures": {"rss_mib_idle": idle["rss_mib"], "rss_mib_after_tasks": after["rss_mib"]}}


# --- (h) encrypted payloads --------------------------------------------------------------------------


#: send_notification's arguments as the API takes them: a webhook (the longest recipient form), a subject and
#: a message of a few sentences.
NOTIFICATION_KWARGS = {
    "channel": "webhook",
    "recipient": "https://hooks.example.com/services/T0001/B0002/notify-team-42",
    "subject": "Nightly report ready",
    "message": "The nightly report for 2026-01-31 is ready: 12,408 actions from 3,215 users, 4 dead letters "
               "pending review. Open the admin to see them; the report file is attached to the dashboard.",
}


def _codec_us(serializer: str, rounds: int) -> tuple[float, int]:
    """Microseconds to encode and decode one task body of NOTIFICATION_KWARGS with ``serializer`` (best of three
    batches: the least disturbed by other processes), and the encoded body's bytes."""
    from kombu.serialization import dumps, loads

    body = ((), NOTIFICATION_KWARGS, {"callbacks": None, "errbacks": None, "chain": None, "chord": None})
    best, payload = math.inf, ""
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(rounds):
            content_type, encoding, payload = dumps(body, serializer=serializer)
            loads(payload, content_type, encoding, accept={content_type})
        best = min(best, (time.perf_counter() - started) / rounds * 1e6)
    return best, len(payload)


def _message_bytes(bench: Bench, app: Any, **options: Any) -> int:
    """Size in Valkey of one message of NOTIFICATION_KWARGS (the body is base64 there)."""
    probe = "bench_probe"
    app.send_task(PAYLOAD_SINK, kwargs=NOTIFICATION_KWARGS, queue=probe, **options)
    raw = bench.servers.redis.lindex(probe, 0)
    bench.servers.redis.delete(probe)
    if raw is None:
        raise RuntimeError("the probe message did not arrive")
    return len(raw)


def _payload_run(bench: Bench, *, encrypted: bool, run: int) -> dict[str, Any]:
    from apps.main.payload_encryption import ROUTE_OPTIONS

    servers, n, app = bench.servers, bench.sizes.payload_tasks, _project_app()
    servers.reset()
    _declare(app, ["high_priority"])
    options = ROUTE_OPTIONS if encrypted else {}
    label = "encrypted" if encrypted else "plain"
    fill_rate = _fill(app, n, lambda i: (PAYLOAD_SINK, NOTIFICATION_KWARGS, "high_priority"), **options)
    log(f"(h) {n} {label} send_notification-sized tasks queued ({fill_rate:.0f}/s); starting the worker")
    child, _ = servers.spawn_project(f"h-{label}-{run}", _worker_argv("high-priority", _pool("high-priority")))
    node = node_name("high-priority")
    with running(bench, child):
        result = drain.watch_drain(servers.redis, ["high_priority"], n, check=lambda: servers.check_alive(child),
                                   timeout=_drain_timeout(n, 30), what=f"(h) {label}", pid=child.process.pid)
        _wait_worked_off(bench, app, node, child, ["high_priority"], n)
    log(f"(h) {label}: {result.rate():.0f} tasks/s")
    return {"encrypted": encrypted, "tasks_per_s": result.rate(), "publish_per_s": fill_rate,
            "cpu_us_per_task": result.cpu_us_per_task()}


def encrypted_payloads(bench: Bench) -> dict[str, Any]:
    """(h) What encrypting a send_notification-sized message costs (apps.main.payload_encryption): encode+decode
    in this process, the message's size in Valkey, and the project worker (production settings) draining
    ``payload_tasks`` of them plain and encrypted, alternated ``repeats`` times (medians)."""
    from apps.main.payload_encryption import ROUTE_OPTIONS, SERIALIZER

    app, rounds = _project_app(), bench.sizes.codec_rounds
    plain_us, plain_body = _codec_us("json", rounds)
    sealed_us, sealed_body = _codec_us(SERIALIZER, rounds)
    log(f"(h) encode+decode: json {plain_us:.1f} µs ({plain_body} B), {SERIALIZER} {sealed_us:.1f} µs "
        f"({sealed_body} B)")
    sizes = {"plain": _message_bytes(bench, app), "encrypted": _message_bytes(bench, app, **ROUTE_OPTIONS)}
    runs = [_payload_run(bench, encrypted=encrypted, run=i)
            for i in range(bench.sizes.repeats) for encrypted in (False, True)]
    rate = {e: statistics.median(r["tasks_per_s"] for r in runs if r["encrypted"] == e) for e in (False, True)}
    cpu = {e: _median_cpu([r for r in runs if r["encrypted"] == e]) for e in (False, True)}
    figures = {"codec_plain_us": plain_us, "codec_encrypted_us": sealed_us,
               "codec_added_us": max(sealed_us - plain_us, 1e-3),
               "message_plain_bytes": sizes["plain"], "message_encrypted_bytes": sizes["encrypted"],
               "plain_tasks_per_s": rate[False], "encrypted_tasks_per_s": rate[True]}
    figures |= {f"cpu_us_per_task_{'encrypted' if e else 'plain'}": c["total"] for e, c in cpu.items() if c}
    return {"title": "encrypted payloads: send_notification-sized message", "tasks": bench.sizes.payload_tasks,
            "codec_rounds": rounds, "kwargs": NOTIFICATION_KWARGS, "body_bytes": {"plain": plain_body,
                                                                                 "encrypted": sealed_body},
            "drain_cost_pct": 100 * (rate[False] - rate[True]) / rate[False], "runs": runs, "figures": figures}



# --- (i) large payloads ----------------------------------------------------------------------------------


#: (i) payload sizes: (label, characters of the JSON payload).
LARGE_PAYLOADS = (("1 KB", 1_000), ("100 KB", 100_000), ("1 MB", 1_000_000))
_NEVER = 2**62
#: (i) what the publisher does (settings of apps.main.large_payloads): nothing; compress every body; compress every
#: body, then store it in PostgreSQL (claim-check). TASK_COMPRESSION stays the default, zlib.
LARGE_PAYLOAD_MODES: dict[str, dict[str, int]] = {
    "plain": {"TASK_COMPRESSION_THRESHOLD_BYTES": _NEVER, "TASK_CLAIM_CHECK_BYTES": _NEVER},
    "compressed": {"TASK_COMPRESSION_THRESHOLD_BYTES": 0, "TASK_CLAIM_CHECK_BYTES": _NEVER},
    "claim-checked": {"TASK_COMPRESSION_THRESHOLD_BYTES": 0, "TASK_CLAIM_CHECK_BYTES": 0},
}
_ACTIONS = ("login", "view", "search", "add_to_cart", "purchase", "logout")


def event_records(chars: int) -> list[dict[str, Any]]:
    """About ``chars`` characters of JSON: user events as a client would send them (ids, names, amounts, times),
    the same for every message of a run; they compress to about a third with zlib."""
    rng, records, size = random.Random(chars), [], 2
    while size < chars:
        record = {"id": f"{rng.getrandbits(64):016x}", "user": f"user-{rng.randrange(10_000)}",
                  "action": rng.choice(_ACTIONS), "amount": round(rng.uniform(0, 500), 2),
                  "at": f"2026-01-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z"}
        records.append(record)
        size += len(json.dumps(record)) + 2
    return records


def _consume(app: Any, node: str, queue: str, *, on: bool) -> None:
    """Make the running worker start or stop consuming ``queue`` (remote control), and wait for its answer."""
    control = app.control.add_consumer if on else app.control.cancel_consumer
    replies = control(queue, destination=[node], reply=True, timeout=10)
    if not any(node in reply for reply in replies or []):
        raise RuntimeError(f"{node} did not answer {'add' if on else 'cancel'}_consumer {queue}: {replies}")


def _large_run(bench: Bench, child: Child, node: str, *, size: str, chars: int, mode: str, tasks: int,
               done_before: int) -> dict[str, Any]:
    from django.test import override_settings

    servers, app, queue = bench.servers, _project_app(), "high_priority"
    kwargs = {"records": event_records(chars)}
    _consume(app, node, queue, on=False)  # fill first, then drain: as (b)-(h) do with a worker started after
    with override_settings(**LARGE_PAYLOAD_MODES[mode]):
        fill_rate = _fill(app, tasks, lambda i: (PAYLOAD_SINK, kwargs, queue))
    message_bytes = len(servers.redis.lindex(queue, 0) or b"")
    claim_bytes = servers.sql("SELECT coalesce(avg(octet_length(body)), 0), count(*) FROM main_payloadclaim")[0]
    _consume(app, node, queue, on=True)
    result = drain.watch_drain(servers.redis, [queue], tasks, check=lambda: servers.check_alive(child),
                               timeout=_drain_timeout(tasks, 2), what=f"(i) {size} {mode}", pid=child.process.pid)
    _wait_worked_off(bench, app, node, child, [queue], done_before + tasks)
    # Each claim goes with its message's ack: none may be left once every task was worked off.
    wait_until(lambda: servers.sql("SELECT count(*) FROM main_payloadclaim")[0][0] == 0, timeout=bench.timeout(30),
               what=f"(i) {size} {mode}: the payload claims to be deleted")
    body_bytes = len(json.dumps([[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]))
    log(f"(i) {size} {mode}: publish {fill_rate:.0f}/s, drain {result.rate():.0f}/s, {message_bytes} B in Valkey"
        + (f", {float(claim_bytes[0]):.0f} B per claim in PostgreSQL" if claim_bytes[1] else ""))
    return {"size": size, "mode": mode, "tasks": tasks, "body_bytes": body_bytes, "publish_per_s": fill_rate,
            "tasks_per_s": result.rate(), "valkey_bytes_per_message": message_bytes,
            "claims_stored": int(claim_bytes[1]), "claim_bytes_per_message": float(claim_bytes[0]),
            "cpu_us_per_task": result.cpu_us_per_task()}


def large_payloads(bench: Bench) -> dict[str, Any]:
    """(i) 1 KB, 100 KB and 1 MB payloads published plain, compressed and claim-checked (apps.main.large_payloads):
    the publish rate (one producer, pipelined), the bytes of one message in Valkey (and of its claim in
    PostgreSQL), and the project worker (high-priority pool, production settings) draining them. One worker serves
    every run: it stops consuming while its queue is filled (remote control), then drains it."""
    servers, app = bench.servers, _project_app()
    servers.reset()
    _declare(app, ["high_priority"])
    argv = _worker_argv("high-priority", _pool("high-priority"))
    child, _ = servers.spawn_project("i-large-payloads", argv)
    node = node_name("high-priority")
    runs: list[dict[str, Any]] = []
    with running(bench, child):
        servers.wait_ready(app, node, child, timeout=bench.timeout(120))
        for (size, chars), tasks in zip(LARGE_PAYLOADS, bench.sizes.large_payload_tasks, strict=True):
            for mode in LARGE_PAYLOAD_MODES:
                runs.append(_large_run(bench, child, node, size=size, chars=chars, mode=mode, tasks=tasks,
                                       done_before=sum(r["tasks"] for r in runs)))
    figures = {}
    for run in runs:
        key = f"{run['size'].replace(' ', '').lower()}_{run['mode'].replace('-', '_')}"
        figures |= {f"{key}_publish_per_s": run["publish_per_s"], f"{key}_tasks_per_s": run["tasks_per_s"],
                    f"{key}_valkey_bytes": run["valkey_bytes_per_message"]}
        if run["claims_stored"]:
            figures[f"{key}_claim_bytes"] = run["claim_bytes_per_message"]
    return {"title": "large payloads: plain, compressed, claim-checked", "argv": argv, "runs": runs,
            "modes": LARGE_PAYLOAD_MODES, "figures": figures}
