"""Redis Sentinel for real (tests.support.sentinel: a primary, two replicas, three sentinels, AUTH on all): every
user of Redis in the app reaches the primary through the sentinels, and follows a failover — the primary SIGKILLed,
a replica promoted — by itself, without a restart or a new client."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import kombu.exceptions
import pytest
import redis as redis_lib
from celery import Celery
from kombu import Connection
from kombu import Queue as KQueue

from apps.main import redis_connection, redis_transport
from apps.main.queues import HIGH_PRIORITY, WORKER_POOLS
from apps.main.redis_keys import API_RATE_LIMIT_KEY, BEAT_LAST_TICK_KEY, BEAT_LEASE_KEY
from embedded.network import Abort, free_port, wait_until
from embedded.supervisor import APP_DIR, Supervisor
from portfolio_site import commands
from tests.app.procs import LineReader, read_json_lines
from tests.support import figures
from tests.support.sentinel import MASTER_NAME, SentinelDeployment
from tests.support.timeouts import scaled

pytestmark = pytest.mark.live


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[SentinelDeployment]:
    with SentinelDeployment(tmp_path / "sentinel") as started:
        yield started


def report(capsys: pytest.CaptureFixture[str], title: str, rows: list[tuple[str, str]]) -> None:
    figures.report(capsys, "sentinel", title, rows)


def first_success(check: Callable[[], Any], *, since: float, timeout: float, what: str) -> float:
    """Seconds from ``since`` until ``check`` returns something true; its errors while the failover runs (Redis',
    or a connection's: urllib's URLError is an OSError) count as "not yet"."""

    def recovered() -> bool:
        try:
            return bool(check())
        except (redis_lib.RedisError, OSError):
            return False

    wait_until(recovered, timeout=scaled(timeout), what=what, interval=0.05)
    return time.time() - since


# --- the helper and every in-process user of it ----------------------------------------------------------------


def test_the_helper_reads_kombus_sentinel_url() -> None:
    parsed = redis_connection.SentinelURL.parse("sentinel://:p%40ss@10.0.0.1:26379/3;sentinel://:p%40ss@sentinel-2")
    assert parsed.sentinels == (("10.0.0.1", 26379), ("sentinel-2", 26379))
    assert (parsed.db, parsed.password) == (3, "p@ss")
    with pytest.raises(ValueError, match=r"not a sentinel URL: it must be sentinel://"):
        redis_connection.SentinelURL.parse("sentinel://:pw@:26379/0")
    with pytest.raises(ValueError, match="REDIS_SENTINEL_MASTER is not set"):
        redis_connection.connect("sentinel://127.0.0.1:26379/0")
    assert redis_connection.broker_redis_url("redis://a:6379/0;redis://b:6379/0") == "redis://a:6379/0"
    assert redis_connection.broker_redis_url("sentinel://a;sentinel://b") == "sentinel://a;sentinel://b"
    assert redis_connection.broker_redis_url("sqla+sqlite:///x") is None


def test_every_redis_user_in_the_app_follows_a_failover_by_itself(
        deployment: SentinelDeployment, settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from apps.main import deadletter_spool, delivery
    from apps.main.api import ratelimit
    from apps.main.beat import BeatLease
    from apps.main.metrics.exporter import BrokerLayout, broker_client, read_broker
    from apps.main.redis_cache import RedisCache

    settings.REDIS_URL = settings.CELERY_BROKER_URL = deployment.url
    settings.REDIS_SENTINEL_MASTER, settings.REDIS_SENTINEL_PASSWORD = MASTER_NAME, deployment.sentinel_password
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": deployment.url}}
    from django.core.cache import caches

    cache = caches["default"]
    assert isinstance(cache, RedisCache)
    lease = BeatLease(redis_connection.client(deployment.url, socket_timeout=5, socket_connect_timeout=5), 60,
                      holder=f"beat-{uuid.uuid4().hex[:6]}")
    exporter_client = broker_client(deployment.url, timeout=2.0)
    layout = BrokerLayout(queues=("sentinel-probe",))
    token = f"sentinel-{uuid.uuid4().hex[:8]}"
    task_id = str(uuid.uuid4())

    def cache_roundtrip() -> bool:
        cache.set("sentinel-probe", task_id)
        return cache.get("sentinel-probe") == task_id

    users: dict[str, Callable[[], Any]] = {
        "Django cache": cache_roundtrip,
        "API rate limiter": lambda: ratelimit.hit(token, limit=1_000_000).allowed,
        "beat lease (kept)": lease.acquire_or_renew,
        "queue exporter read": lambda: read_broker(exporter_client, layout),
        "dead-letter spool client": lambda: deadletter_spool.redis_client().ping(),  # type: ignore[union-attr]
        "delivery guard counter": lambda: delivery.count_redelivery(task_id, 0),
    }
    primary = deployment.primary()
    for name, check in users.items():
        assert check(), name
    # They wrote to the node the sentinels name as the primary.
    written = deployment.node_client(primary)
    assert written.keys(API_RATE_LIMIT_KEY.format(token=token, window="*")) and written.get(BEAT_LEASE_KEY)
    assert written.exists("cache:1:sentinel-probe", f"cache:1:{delivery.delivery_key(task_id, 0)}") == 2

    old, killed_at = deployment.kill_primary()
    # The same objects, made before the failover, each called from the kill on until it works again.
    with ThreadPoolExecutor(len(users)) as pool:
        recovered = {name: pool.submit(first_success, check, since=killed_at, timeout=60, what=f"{name} to work again")
                     for name, check in users.items()}
        new = deployment.wait_for_failover(old)
        promoted_after = time.time() - killed_at
        rows = [("replica promoted after", f"{promoted_after:.1f} s")]
        rows += [(f"{name} works again after", f"{future.result():.1f} s") for name, future in recovered.items()]
    assert deployment.primary_port() == new.port != old.port
    assert deployment.node_client(new).get(BEAT_LEASE_KEY).decode() == lease.holder
    report(capsys, "in-process users of apps.main.redis_connection", rows)


# --- a real worker, beat, exporter and publisher through a failover in the middle of a burst ----------------------

#: Publishes ``count`` process_user_action tasks at ``rate`` per second with the app's settings (the API's and beat's
#: way: app.send_task), one JSON line per task once it is published; a publish that fails (the failover) is sent again
#: with the same task id until the broker takes it: at least once, the task is idempotent by its action id.
PUBLISHER = """
import json, sys, time, uuid
import django
django.setup()
from apps.main.queues import task_name
from portfolio_site.celery import app

count, rate, tag = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
begun = time.monotonic()
for n in range(count):
    if (ahead := begun + n / rate - time.monotonic()) > 0:
        time.sleep(ahead)  # the pace of the burst, not a wait for anything
    task_id, attempts, started = str(uuid.uuid4()), 0, time.time()
    while True:
        attempts += 1
        try:
            app.send_task(task_name("process_user_action"), task_id=task_id,
                          kwargs={"action_id": f"{tag}-{n}", "user_id": "sentinel", "action": "burst"})
            break
        except Exception as exc:
            print(json.dumps({"n": n, "error": type(exc).__name__}), flush=True)
    print(json.dumps({"n": n, "task_id": task_id, "action_id": f"{tag}-{n}", "attempts": attempts,
                      "started": started, "at": time.time()}), flush=True)
"""
BURST = 300
BURST_RATE = 200.0  # per second: faster than the worker drains, the primary killed after the first third
KILL_AFTER = 100
SUCCEEDED_LINE = re.compile(r"\[([0-9a-f-]{36})\] succeeded in")


def probe_app(deployment: SentinelDeployment) -> Celery:
    """A Celery client on the deployment (the app's transport, JSON), to ping the worker through the sentinels."""
    redis_transport.install()
    probe = Celery("sentinel-probe", broker=deployment.url, set_as_current=False)
    probe.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True,
                      broker_transport_options={"master_name": MASTER_NAME,
                                                "sentinel_kwargs": {"password": deployment.sentinel_password}})
    return probe


def pings(probe: Celery, node: str) -> bool:
    """The worker answers a broadcast ping. The probe's own connection may still be the dead primary's: a control
    client (inspect, Flower) fails one call after a failover and reconnects on the next."""
    try:
        return any(node in reply for reply in probe.control.ping(destination=[node], timeout=1.0))
    except (redis_lib.RedisError, kombu.exceptions.OperationalError):
        return False


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("wait_replicas", [0, 1], ids=["async-replication", "publish-WAIT-1"])
def test_a_failover_mid_burst_the_stack_follows_by_itself(
        deployment: SentinelDeployment, live_env: dict[str, str], tmp_path: Path, wait_replicas: int,
        capsys: pytest.CaptureFixture[str]) -> None:
    from django_celery_results.models import TaskResult

    from apps.main.models import UserAction

    env = {**live_env, **deployment.env(), "CELERY_VISIBILITY_TIMEOUT": "30",
           "CELERY_BROKER_PUBLISH_WAIT_REPLICAS": str(wait_replicas)}
    supervisor = Supervisor(log_dir=tmp_path / "logs", env=env)
    probe = probe_app(deployment)
    data = redis_connection.connect(deployment.url, sentinel_master=MASTER_NAME,
                                    sentinel_password=deployment.sentinel_password, socket_timeout=5)
    exporter_port = free_port()
    publisher: subprocess.Popen[str] | None = None
    try:
        worker = supervisor.spawn("worker-sentinel", commands.worker("sentinel", WORKER_POOLS["high-priority"]),
                                  extra_env={"METRICS_PORT": "0"})
        node = f"sentinel@{socket.gethostname()}"

        def worker_answers() -> bool:
            if worker.process.poll() is not None:
                raise Abort(supervisor.describe_failure(worker))
            return pings(probe, node)

        wait_until(worker_answers, timeout=scaled(90), what=f"worker {node} through the sentinels", interval=0.5)
        supervisor.spawn("beat", commands.beat())
        supervisor.spawn("exporter", [*commands.exporter(exporter_port), "--interval", "1", "--inspect-interval", "2"])
        wait_until(lambda: metrics(exporter_port).get("celery_broker_up") == 1.0, timeout=scaled(60),
                   what="the exporter to read the broker")
        wait_until(lambda: data.get(BEAT_LEASE_KEY), timeout=scaled(60), what="beat to take its lease")

        tag = f"burst-{uuid.uuid4().hex[:8]}"
        publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(BURST), str(BURST_RATE), tag], cwd=APP_DIR,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = LineReader(publisher.stdout)  # type: ignore[arg-type]
        lines.wait_for_line(f'"n": {KILL_AFTER - 1}, "task_id"', timeout=scaled(120))
        waiting_at_kill = data.llen(HIGH_PRIORITY)
        old, killed_at = deployment.kill_primary()

        def beat_ticks_again() -> bool:
            return float(data.get(BEAT_LAST_TICK_KEY) or 0) > killed_at

        def exporter_reports_again() -> bool:  # the beat tick it serves was read from the new primary
            scraped = metrics(exporter_port)
            return scraped.get("celery_broker_up") == 1.0 and \
                scraped.get("celery_beat_last_tick_timestamp_seconds", 0) > killed_at

        with ThreadPoolExecutor(2) as pool:
            beat_back = pool.submit(first_success, beat_ticks_again, since=killed_at, timeout=90, what="beat ticks")
            exporter_back = pool.submit(first_success, exporter_reports_again, since=killed_at, timeout=90,
                                        what="the exporter to report the new primary")
            new = deployment.wait_for_failover(old)
            promoted_at = time.time()
            assert publisher.wait(scaled(180)) == 0, lines.text()[-3000:]
            beat_seconds, exporter_seconds = beat_back.result(), exporter_back.result()

        published = [json.loads(line) for line in lines.lines if '"task_id"' in line]
        failed_publishes = sum(1 for line in lines.lines if '"error"' in line)
        assert len(published) == BURST
        ids = {entry["task_id"]: entry for entry in published}

        def settled() -> bool:
            return TaskResult.objects.filter(task_id__in=ids, status="SUCCESS").count() == BURST

        with contextlib.suppress(TimeoutError):  # what never ran is counted as lost below
            wait_until(settled, timeout=scaled(120), what="every published task to succeed", interval=0.5)
        done = dict(TaskResult.objects.filter(task_id__in=ids, status="SUCCESS").values_list("task_id", "date_done"))
        lost = [entry for task_id, entry in ids.items() if task_id not in done]
        runs = Counter(SUCCEEDED_LINE.findall(worker.log_path.read_text(errors="replace")))
        duplicated = sum(runs[task_id] - 1 for task_id in ids if runs[task_id] > 1)
        actions = UserAction.objects.filter(action_id__startswith=f"{tag}-")
        effects = Counter(actions.values_list("action_id", flat=True))

        after_kill = sorted(stamp.timestamp() for stamp in done.values() if stamp.timestamp() > killed_at)
        # The first publish the failover held up (it failed at least once, or began after the kill) that went through.
        held_up = [entry["at"] for entry in published if entry["attempts"] > 1 or entry["started"] > killed_at]
        report(capsys, f"failover mid-burst, CELERY_BROKER_PUBLISH_WAIT_REPLICAS={wait_replicas}", [
            ("sent / succeeded / lost / duplicated",
             f"{BURST} / {len(done)} / {len(lost)} / {duplicated} (executions beyond the first; effects once: "
             f"{max(effects.values())} row per action at most)"),
            ("waiting in the queue at the kill", str(waiting_at_kill)),
            ("replica promoted after", f"{promoted_at - killed_at:.1f} s"),
            ("publisher: first publish taken after", f"{min(held_up) - killed_at:.1f} s "
             f"({failed_publishes} failed attempt(s), sent again)" if held_up else "- (none was held up)"),
            ("worker: first task done after", f"{after_kill[0] - killed_at:.1f} s" if after_kill else "never"),
            ("beat: ticks on the new primary after", f"{beat_seconds:.1f} s"),
            ("exporter: reports the new primary after", f"{exporter_seconds:.1f} s"),
            ("lost: publish began before the kill by", ", ".join(f"{killed_at - e['started']:.3f} s" for e in lost)
             or "-"),
        ])

        # What the design guarantees. No process needed a restart, the worker consumes from the new primary:
        assert not supervisor.exited(), [child.name for child in supervisor.exited()]
        wait_until(lambda: pings(probe, node), timeout=scaled(30), what="the worker to answer a ping", interval=0.5)
        # The exporter's census (a broadcast through the new primary) finds the worker again.
        online = 'celery_workers_online{queue_name="high_priority"}'
        wait_until(lambda: metrics(exporter_port).get(online) == 1.0, timeout=scaled(60),
                   what="the exporter's census to find the worker", interval=0.5)
        # Only the old primary can have lost a task: every publish begun after the kill ran. No effect happened twice.
        assert all(entry["started"] <= killed_at for entry in lost), "a task published after the kill was lost"
        assert max(effects.values()) == 1 and len(effects) == len(done)
        if wait_replicas:  # a publish that returned is on a replica: the failover loses none
            assert not lost, f"{len(lost)} replica-acknowledged publishes lost"
        assert data.get(BEAT_LEASE_KEY) and deployment.primary_port() == new.port
    finally:
        if publisher is not None and publisher.poll() is None:
            publisher.kill()
            publisher.wait(10)
        supervisor.stop_all()
        probe.close()
        data.close()


# --- publishes acknowledged by replicas (WAIT): what they guarantee and what they cost ---------------------------

WAIT_SAMPLES = 500


def test_a_publish_with_wait_returns_once_replicas_hold_it_and_says_when_they_do_not(
        deployment: SentinelDeployment, capsys: pytest.CaptureFixture[str]) -> None:
    redis_transport.install()
    queue = f"wait-{uuid.uuid4().hex[:8]}"
    replicas = [deployment.node_client(node) for node in deployment.replicas()]
    assert len(replicas) == 2

    @contextlib.contextmanager
    def producer(**options: Any) -> Iterator[Any]:
        options = {"master_name": MASTER_NAME, "sentinel_kwargs": {"password": deployment.sentinel_password},
                   "priority_steps": [0], **options}
        with Connection(deployment.url, transport_options=options) as connection, connection.Producer() as made:
            yield made

    def publish(made: Any, body: Any, **options: Any) -> None:
        made.publish(body, routing_key=queue, declare=[KQueue(queue, routing_key=queue)], serializer="json",
                     **{"retry": False, **options})

    def publish_seconds(wait_replicas: int) -> float:
        """Mean seconds per publish, one after the other (what a web request or beat pays)."""
        with producer(publish_wait_replicas=wait_replicas) as made:
            publish(made, {"n": "first"})
            begun = time.perf_counter()
            for n in range(WAIT_SAMPLES):
                publish(made, {"n": n})
            return (time.perf_counter() - begun) / WAIT_SAMPLES

    plain, waited = publish_seconds(0), publish_seconds(1)
    report(capsys, f"publish cost, {WAIT_SAMPLES} sequential publishes through kombu on loopback", [
        ("without WAIT", f"{plain * 1e6:.0f} µs per publish"),
        ("with WAIT 1 (a replica acknowledged)", f"{waited * 1e6:.0f} µs per publish ({waited / plain:.1f}x)"),
    ])
    published = 2 * (WAIT_SAMPLES + 1)

    # WAIT 2: when the publish returns, both replicas hold the message — no waiting here.
    with producer(publish_wait_replicas=2) as made:
        publish(made, {"n": "on both"})
    assert {client.llen(queue) for client in replicas} == {published + 1}

    # More replicas than there are: the publish says so after the timeout. The primary has the message all the same,
    # once: with the retry policy Celery publishes with, kombu does not send it again (not a connection error).
    with producer(publish_wait_replicas=3, publish_wait_timeout_ms=100) as made, \
            pytest.raises(redis_transport.PublishNotReplicated, match="2 of the 3 replica"):
        publish(made, {"n": "unconfirmed"}, retry=True, retry_policy={"max_retries": 3})
    assert deployment.node_client(deployment.primary()).llen(queue) == published + 2


# --- min-replicas-to-write: a primary that refuses writes pauses the stack, it does not stop it -----------------


@pytest.mark.django_db(transaction=True)
def test_a_primary_refusing_writes_for_want_of_replicas_pauses_the_worker_instead_of_stopping_it(
        deployment: SentinelDeployment, live_env: dict[str, str], tmp_path: Path) -> None:
    from django_celery_results.models import TaskResult

    supervisor = Supervisor(log_dir=tmp_path / "logs", env={**live_env, **deployment.env()})
    probe = probe_app(deployment)
    primary = deployment.node_client(deployment.primary())

    def send(action_id: str) -> str:
        task_id = str(uuid.uuid4())
        probe.send_task("apps.main.tasks.process_user_action", task_id=task_id, queue=HIGH_PRIORITY,
                        kwargs={"action_id": action_id, "user_id": "sentinel", "action": "min-replicas"})
        return task_id

    def succeeded(task_id: str) -> bool:
        return TaskResult.objects.filter(task_id=task_id, status="SUCCESS").exists()

    try:
        worker = supervisor.spawn("worker-sentinel", commands.worker("sentinel", WORKER_POOLS["high-priority"]),
                                  extra_env={"METRICS_PORT": "0"})
        node = f"sentinel@{socket.gethostname()}"
        wait_until(lambda: pings(probe, node), timeout=scaled(90), what=f"worker {node}", interval=0.5)
        # More replicas asked for than there are: every write is refused (NOREPLICAS), BLMOVE included.
        primary.config_set("min-replicas-to-write", len(deployment.nodes))
        with pytest.raises((kombu.exceptions.OperationalError, redis_lib.ConnectionError), match="good replicas"):
            send(f"refused-{uuid.uuid4().hex[:6]}")
        # The worker treats it as a lost broker connection and keeps trying, for seconds, without stopping.
        def retried_for(seconds: float) -> bool:
            if worker.process.poll() is not None:
                raise Abort(supervisor.describe_failure(worker))
            stamps = [datetime.fromisoformat(entry["time"]).timestamp() for entry in read_json_lines(worker.log_path)
                      if "Cannot connect to sentinel://" in entry.get("message", "")]
            return len(stamps) >= 2 and stamps[-1] - stamps[0] >= seconds

        wait_until(lambda: retried_for(3.0), timeout=scaled(60), what="the worker to retry for 3 s", interval=0.2)
        assert "Unrecoverable error" not in worker.log_path.read_text(errors="replace")

        primary.config_set("min-replicas-to-write", 0)
        task_id = send(f"after-{uuid.uuid4().hex[:6]}")
        wait_until(lambda: succeeded(task_id), timeout=scaled(90), what="the worker to run a task again", interval=0.5)
        assert worker.process.poll() is None
    finally:
        supervisor.stop_all()
        probe.close()
