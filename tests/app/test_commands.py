"""Every management command, and the celery CLI, against real components: the session's PostgreSQL and
Valkey, real worker processes, a real Flower. Commands run as subprocesses exactly as the chart runs them."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from io import StringIO
from pathlib import Path

import psycopg
import pytest
from django.core.management import call_command

from apps.main.management.commands.test_celery import sample_calls
from apps.main.queues import queue_for, task_name
from apps.main.schedule import DEFAULT_SCHEDULE
from embedded import stack_env
from embedded.network import free_port, wait_until
from embedded.process import stop_process
from embedded.supervisor import python_env
from portfolio_site import commands
from portfolio_site import environment as env_names
from portfolio_site.celery import app
from tests.app.procs import APP_DIR, manage, redis_db_url, scratch_database
from tests.support.timeouts import scaled

#: A Redis database index of the session server that no test worker consumes.
IDLE_REDIS_DB = 3
#: A command's own wait for its tasks or servers, and the test's wait for the command around it.
COMMAND_WAIT = scaled(60)
COMMAND_TIMEOUT = scaled(180)


def celery_cli(*args: str, env: dict[str, str], timeout: float = COMMAND_TIMEOUT,
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "celery", "-A", "portfolio_site", *args], cwd=APP_DIR, env=env,
                          capture_output=True, text=True, timeout=timeout)


# --- setup_periodic_tasks and the post_migrate seed ----------------------------------------------

def setup_periodic_tasks(*args: str) -> list[str]:
    out = StringIO()
    call_command("setup_periodic_tasks", *args, stdout=out)
    return out.getvalue().split()


@pytest.mark.django_db
def test_setup_periodic_tasks_creates_the_defaults_exactly_once() -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    names = [default.name for default in DEFAULT_SCHEDULE]
    PeriodicTask.objects.filter(name__in=names).delete()
    others = PeriodicTask.objects.exclude(name__in=names).count()

    first = setup_periodic_tasks()
    intervals = IntervalSchedule.objects.count()
    second = setup_periodic_tasks()

    assert first == [word for name in names for word in ("created", name)]
    assert second == [word for name in names for word in ("kept", name)]
    assert PeriodicTask.objects.count() == others + len(DEFAULT_SCHEDULE)
    assert IntervalSchedule.objects.count() == intervals  # no duplicate schedules either
    for default in DEFAULT_SCHEDULE:
        entry = PeriodicTask.objects.get(name=default.name)
        assert (entry.task, entry.enabled) == (task_name(default.task), True)
        assert (entry.interval.every, entry.interval.period) == (default.every_seconds, IntervalSchedule.SECONDS)


@pytest.mark.django_db
def test_plain_run_keeps_an_admin_edit_and_reset_restores_the_default() -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    setup_periodic_tasks()
    default = DEFAULT_SCHEDULE[0]
    entry = PeriodicTask.objects.get(name=default.name)
    entry.interval = IntervalSchedule.objects.create(every=17, period=IntervalSchedule.MINUTES)
    entry.enabled = False
    entry.save()

    assert setup_periodic_tasks()[:2] == ["kept", default.name]
    entry.refresh_from_db()
    assert (entry.interval.every, entry.interval.period, entry.enabled) == (17, IntervalSchedule.MINUTES, False)

    assert setup_periodic_tasks("--reset")[:2] == ["reset", default.name]
    entry.refresh_from_db()
    assert (entry.interval.every, entry.interval.period) == (default.every_seconds, IntervalSchedule.SECONDS)
    assert entry.enabled is True


# --- wait_for_migrations (and migrate seeding the schedule) on a database of its own -------------

def test_wait_for_migrations_on_empty_then_migrated_database(live_env: dict[str, str],
                                                            test_database_url: str) -> None:
    with scratch_database(test_database_url, prefix="fresh") as url:
        env = {**live_env, "DATABASE_URL": url}
        waited = manage("wait_for_migrations", "--timeout", "1", "--interval", "0.2", env=env,
                        timeout=COMMAND_TIMEOUT)
        assert waited.returncode != 0
        assert "gave up after 1s" in waited.stderr and "migration(s) not applied yet" in waited.stderr, waited

        migrated = manage("migrate", "--noinput", env=env, timeout=COMMAND_TIMEOUT)
        assert migrated.returncode == 0, migrated.stderr
        # post_migrate seeded the beat schedule without setup_periodic_tasks being run.
        with psycopg.connect(url.replace("postgres://", "postgresql://", 1)) as conn:
            rows = conn.execute("SELECT name, task, enabled FROM django_celery_beat_periodictask").fetchall()
        assert sorted(rows) == sorted((d.name, task_name(d.task), True) for d in DEFAULT_SCHEDULE)

        ready = manage("wait_for_migrations", "--timeout", str(scaled(5)), env=env, timeout=COMMAND_TIMEOUT)
        assert (ready.returncode, ready.stdout.strip()) == (0, "all migrations are applied"), ready.stderr


def test_wait_for_migrations_names_an_unreachable_database(live_env: dict[str, str]) -> None:
    env = {**live_env, "DATABASE_URL": f"postgres://u:p@127.0.0.1:{free_port()}/nothing"}
    waited = manage("wait_for_migrations", "--timeout", "0.5", "--interval", "0.2", env=env, timeout=COMMAND_TIMEOUT)
    assert waited.returncode != 0
    assert "database not reachable: OperationalError" in waited.stderr, waited.stderr


# --- wait_for_database (the migration Job's first step) --------------------------------------------

def test_wait_for_database_waits_then_fails_in_one_line_on_a_closed_port(live_env: dict[str, str]) -> None:
    env = {**live_env, "DATABASE_URL": f"postgres://u:p@127.0.0.1:{free_port()}/nothing"}
    started = time.monotonic()
    waited = manage("wait_for_database", "--timeout", "2", "--interval", "0.2", env=env)
    elapsed = time.monotonic() - started
    assert waited.returncode != 0
    assert elapsed >= 2, f"gave up after {elapsed:.1f}s, before its timeout"
    assert waited.stdout.count("waiting: database not reachable: OperationalError") == 1, waited.stdout  # said once
    error = waited.stderr.strip().splitlines()
    assert len(error) == 1, waited.stderr  # one line, no traceback
    assert error[0].startswith("CommandError: gave up after 2s: database not reachable: OperationalError"), error


def test_wait_for_database_returns_once_the_database_accepts_connections(live_env: dict[str, str],
                                                                       test_database_url: str) -> None:
    with scratch_database(test_database_url, prefix="reachable") as url:
        ready = manage("wait_for_database", "--timeout", "10", env={**live_env, "DATABASE_URL": url})
    assert (ready.returncode, ready.stdout.strip()) == (0, "the database accepts connections"), ready.stderr


# --- the web command (gunicorn) ----------------------------------------------------------------------

def test_web_command_runs_gunicorn_without_a_control_socket(live_env: dict[str, str], tmp_path: Path,
                                                            process_logs: Path) -> None:
    """gunicorn >= 25 opens a control socket under $HOME/.gunicorn/; in a pod HOME is /nonexistent on a
    read-only root filesystem ("Control server error: [Errno 30]" at every start): the web command has none."""
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    log_path = process_logs / f"web-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(commands.web(port, 1), cwd=APP_DIR, env={**live_env, "HOME": str(home)},
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            def answers() -> bool:
                if process.poll() is not None:
                    raise AssertionError(f"gunicorn exited with {process.returncode}:\n{log_path.read_text()}")
                request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz", headers={"Host": "localhost"})
                try:
                    urllib.request.urlopen(request, timeout=2).close()
                except urllib.error.HTTPError:
                    pass  # answered: the arbiter is past its start-up, control socket included
                except OSError:
                    return False
                return True

            wait_until(answers, timeout=scaled(30), what="gunicorn to answer", interval=0.2)
        finally:
            stop_process(process, timeout=15)
    output = log_path.read_text()
    assert "Booting worker" in output, output
    assert "Control" not in output, output
    assert not (home / ".gunicorn").exists()


# --- test_celery -----------------------------------------------------------------------------------

@pytest.mark.live
def test_test_celery_all_reports_every_task(live_env: dict[str, str], stack_workers: dict[str, str]) -> None:
    done = manage("test_celery", "--task=all", "--timeout", str(COMMAND_WAIT), env=live_env, timeout=COMMAND_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for short, _kwargs in sample_calls().values():
        sent = [line for line in lines if line.startswith("sent") and f" {short} " in line]
        report = [line.split()[:3] for line in lines if line.startswith(f"{short} ")]
        assert len(sent) == 1 and f"-> {queue_for(short)}" in sent[0], lines
        assert report == [[short, queue_for(short), "SUCCESS"]], lines
    assert lines[-1] == f"all {len(sample_calls())} task(s) succeeded"


def test_test_celery_fails_clearly_when_no_worker_consumes(live_env: dict[str, str], redis_url: str) -> None:
    import redis

    idle = redis_db_url(redis_url, IDLE_REDIS_DB)
    started = time.monotonic()
    done = manage("test_celery", "--task=health", "--timeout", "3", env={**live_env, "REDIS_URL": idle},
                  timeout=COMMAND_TIMEOUT)
    assert done.returncode != 0
    assert done.stderr.strip() == "CommandError: 1 of 1 task(s) did not succeed", done.stderr
    assert "health_check         default        PENDING     3.00  no result within 3s" in done.stdout, done.stdout
    assert time.monotonic() - started < scaled(30)
    redis.Redis.from_url(idle).flushdb()


# --- test_celery and test_celery_setup.py without a stack --------------------------------------------

STACK_COMMANDS = {
    "test_celery": [sys.executable, "manage.py", "test_celery", "--task=all"],  # make test-celery
    "check-stack": [sys.executable, "test_celery_setup.py"],  # make check-stack
}
NO_STACK_LINE = "no stack running — start `make up` first"


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


@pytest.mark.parametrize("command", STACK_COMMANDS)
@pytest.mark.parametrize("stack_file", ["none", "stale"])
def test_stack_commands_say_in_one_line_that_no_stack_runs(tmp_path: Path, command: str, stack_file: str) -> None:
    """A developer's shell, no `make up` running: no REDIS_URL, and no stack.env or one left behind by a
    kill -9 (its Redis port closed). One line and exit code 2: no traceback, no SQLite file made."""
    env = python_env()
    for name in (env_names.REDIS_URL, env_names.DATABASE_URL, env_names.BROKER_URL, env_names.BROKER_KEY_PREFIX):
        env.pop(name, None)
    env.update({
        env_names.SETTINGS_MODULE: "portfolio_site.settings.dev",
        env_names.LOCAL_STACK_DIR: str(tmp_path / "local"),
        env_names.DATA_DIR: str(tmp_path / "data"),
        env_names.LOG_DIR: str(tmp_path / "logs"),
    })
    if stack_file == "stale":
        stack_env.write({
            env_names.REDIS_URL: f"redis://:gone@127.0.0.1:{free_port()}/0",
            env_names.DATABASE_URL: f"postgres://postgres:gone@127.0.0.1:{free_port()}/celery_stack",
        }, tmp_path / "local" / "stack.env")
    before = files_under(tmp_path)

    done = subprocess.run(STACK_COMMANDS[command], cwd=APP_DIR, env=env, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT)

    assert (done.returncode, done.stderr, done.stdout) == (2, NO_STACK_LINE + "\n", ""), done
    # Not even an empty log file: the development log handlers open their files on the first record.
    assert files_under(tmp_path) - before == set()


# --- worker_liveness -------------------------------------------------------------------------------

@pytest.mark.live
def test_worker_liveness_follows_the_heartbeat_file(celery_worker_factory, live_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {**live_env, env_names.DATA_DIR: str(data_dir)}
    heartbeat = data_dir / "worker-heartbeat"

    missing = manage("worker_liveness", env=env, timeout=COMMAND_TIMEOUT)
    assert missing.returncode != 0
    assert missing.stderr.strip() == (
        f"CommandError: no worker heartbeat at {heartbeat}: the worker has not connected yet"
    )

    # The solo pool runs the same consumer (which touches the file) and stops faster than prefork.
    celery_worker_factory([f"liveness-{uuid.uuid4().hex[:6]}"], concurrency=1, pool="solo",
                          extra_env={env_names.DATA_DIR: str(data_dir)})
    wait_until(heartbeat.exists, timeout=scaled(10), what="the worker's first heartbeat")
    alive = manage("worker_liveness", "--max-age", "120", env=env, timeout=COMMAND_TIMEOUT)
    assert alive.returncode == 0, alive.stderr
    assert alive.stdout.startswith("worker alive: heartbeat ")

    # A hung worker stops touching the file; a stopped one does too, and cannot race the backdating.
    celery_worker_factory.supervisor.stop_all()
    stale = time.time() - 600
    os.utime(heartbeat, (stale, stale))
    dead = manage("worker_liveness", "--max-age", "120", env=env, timeout=COMMAND_TIMEOUT)
    assert dead.returncode != 0
    assert dead.stderr.strip().startswith("CommandError: worker heartbeat is 60") and "limit 120s" in dead.stderr


# --- start_flower ------------------------------------------------------------------------------------

@pytest.mark.parametrize("credentials", [None, "admin:ok,other"])
def test_start_flower_refuses_to_run_without_basic_auth(live_env: dict[str, str], credentials: str | None) -> None:
    env = {k: v for k, v in live_env.items() if k != env_names.FLOWER_BASIC_AUTH}
    if credentials is not None:
        env[env_names.FLOWER_BASIC_AUTH] = credentials
    refused = manage("start_flower", f"--port={free_port()}", env=env, timeout=COMMAND_TIMEOUT)
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("CommandError: FLOWER_BASIC_AUTH must be set to user:password")
    assert refused.stdout == ""  # it never got as far as starting Flower


@pytest.mark.live
def test_start_flower_serves_behind_basic_auth_and_sees_the_workers(
    live_env: dict[str, str], stack_workers: dict[str, str], process_logs: Path,
) -> None:
    port = free_port()
    user, password = "flower-admin", uuid.uuid4().hex
    env = {**live_env, env_names.FLOWER_BASIC_AUTH: f"{user}:{password}"}
    log = (process_logs / f"flower-{port}.log").open("w")
    process = subprocess.Popen([sys.executable, "manage.py", "start_flower", f"--port={port}", "--address=127.0.0.1"],
                               cwd=APP_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api/workers"
    auth = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    wrong = {"Authorization": "Basic " + base64.b64encode(f"{user}:wrong".encode()).decode()}
    try:
        def refuses(headers: dict[str, str]) -> int:
            if process.poll() is not None:
                raise AssertionError(f"flower exited with {process.returncode}:\n{_read(log)}")
            try:
                urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5)
            except urllib.error.HTTPError as exc:
                return exc.code
            return 200

        assert wait_until(lambda: refuses({}), timeout=scaled(30), what="Flower to answer") == 401
        assert refuses(wrong) == 401

        def workers() -> set[str] | None:
            request = urllib.request.Request(f"{url}?refresh=1", headers=auth)
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
                listed = set(json.load(response))
            return listed if set(stack_workers.values()) <= listed else None

        wait_until(workers, timeout=scaled(30), what="Flower to list the stack's workers", interval=0.5)
    finally:
        stop_process(process, timeout=scaled(15))
        log.close()
    assert process.returncode is not None


def _read(log) -> str:
    log.flush()
    return Path(log.name).read_text()[-3000:]


# --- The celery CLI against the live stack ------------------------------------------------------------

@pytest.mark.live
def test_celery_status_and_inspect_ping_list_every_pool(live_env: dict[str, str],
                                                        stack_workers: dict[str, str]) -> None:
    # With -d the CLI returns as soon as every named node replied, not after the whole timeout.
    nodes = ",".join(stack_workers.values())
    status = celery_cli("status", "--timeout", str(scaled(10)), "-d", nodes, env=live_env)
    assert status.returncode == 0, status.stderr
    ping = celery_cli("inspect", "ping", "--timeout", str(scaled(10)), "-d", nodes, env=live_env)
    assert ping.returncode == 0, ping.stderr
    for node in stack_workers.values():
        assert f"{node}: OK" in status.stdout, status.stdout
        assert re.search(rf"^->\s+{re.escape(node)}: OK\n\s+pong$", ping.stdout, re.MULTILINE), ping.stdout


@pytest.mark.live
def test_celery_purge_empties_a_queue(live_env: dict[str, str], redis_client) -> None:
    queue = f"purge-{uuid.uuid4().hex[:6]}"  # nobody consumes it: the messages wait there
    for _ in range(3):
        app.send_task(task_name("health_check"), queue=queue)
    assert redis_client.llen(queue) == 3
    purged = celery_cli("purge", "-f", "-Q", queue, env=live_env)
    assert purged.returncode == 0, purged.stderr
    assert "Purged 3 messages from 1 known task queue." in purged.stdout, purged.stdout
    assert redis_client.llen(queue) == 0


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_celery_control_revoke_reaches_every_worker(live_env: dict[str, str], stack_workers: dict[str, str]) -> None:
    task_id = str(uuid.uuid4())
    revoked = celery_cli("control", "revoke", task_id, "--timeout", str(scaled(10)), "-d",
                         ",".join(stack_workers.values()), env=live_env)
    assert revoked.returncode == 0, revoked.stderr
    for node in stack_workers.values():
        assert re.search(rf"^->\s+{re.escape(node)}: OK\n\s+tasks {{'{task_id}'}} flagged as revoked$",
                         revoked.stdout, re.MULTILINE), revoked.stdout
    replies = app.control.inspect(destination=list(stack_workers.values()), timeout=scaled(2)).revoked() or {}
    assert all(task_id in replies.get(node, []) for node in stack_workers.values()), replies
    # A revoked id is never run: sent now, it is discarded by the worker that receives it.
    result = app.send_task(task_name("health_check"), task_id=task_id)
    wait_until(lambda: result.state == "REVOKED", timeout=scaled(15), what="the revoked task to be discarded")
