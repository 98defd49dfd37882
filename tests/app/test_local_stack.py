"""``start_celery_services.py`` (``make up``) as a developer runs it: the whole stack comes up, the
verification checklist and ``manage.py test_celery`` pass against it, and SIGTERM or SIGINT stops it
with no process left behind. State and logs go to temporary directories (LOCAL_STACK_DIR, LOG_DIR),
never to a developer's .local/ or logs/."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import redis

from apps.main.management.commands.test_celery import sample_calls
from apps.main.queues import WORKER_POOLS
from embedded import stack_env
from embedded.network import free_port
from embedded.supervisor import python_env
from portfolio_site import environment as env_names
from tests.app.procs import APP_DIR, LineReader, manage, redis_db_url, scratch_database

pytestmark = pytest.mark.live

#: The stack's own Redis database on the session server: the test workers listen on database 0.
STACK_REDIS_DB = 6
UP_TIMEOUT = 90
STOP_TIMEOUT = 60


@dataclass
class Stack:
    process: subprocess.Popen
    output: LineReader
    env: dict[str, str]
    web_port: int
    flower_port: int
    children: list[psutil.Process]


def stack_env_for(tmp_path: Path, **backends: str) -> dict[str, str]:
    env = python_env()
    for name in (env_names.REDIS_URL, env_names.DATABASE_URL, env_names.BROKER_URL, env_names.BROKER_KEY_PREFIX):
        env.pop(name, None)
    env.update({
        env_names.SETTINGS_MODULE: "portfolio_site.settings.dev",
        env_names.DATA_DIR: str(tmp_path / "data"),
        env_names.LOCAL_STACK_DIR: str(tmp_path / "local"),
        env_names.LOG_DIR: str(tmp_path / "logs"),
        env_names.API_TOKEN: "stack-token",
        env_names.FLOWER_BASIC_AUTH: "admin:stack-pass",
        env_names.METRICS_PORT: "0",  # three workers on one host: each its own port
        **backends,
    })
    return env


def start_stack(env: dict[str, str]) -> Stack:
    web_port, flower_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "start_celery_services.py", "--web-port", str(web_port), "--flower-port", str(flower_port)],
        cwd=APP_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = LineReader(process.stdout)
    stack = Stack(process, output, env, web_port, flower_port, [])
    try:
        output.wait_for_line("[stack] the stack is up:", timeout=UP_TIMEOUT)
        output.wait_for_line("Ctrl-C stops everything.", timeout=10)
    except BaseException:
        stop_stack(stack, signal.SIGTERM)
        raise
    stack.children = psutil.Process(process.pid).children(recursive=True)
    return stack


def survivors(processes: list[psutil.Process]) -> list[str]:
    alive = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            continue
    return alive


def stop_stack(stack: Stack, sig: int) -> int | None:
    """Send ``sig``; returns the exit code, or None if the stack did not stop in time (then it is killed)."""
    if stack.process.poll() is None:
        stack.process.send_signal(sig)
    try:
        code = stack.process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        code = None
    if code is None:  # clean up what this test started before failing
        stack.process.kill()
        stack.process.wait(10)
    for proc in stack.children:
        if survivors([proc]):
            proc.kill()
    stack.output.join(10)
    return code


@pytest.fixture
def stack_redis(redis_url: str) -> Iterator[str]:
    url = redis_db_url(redis_url, STACK_REDIS_DB)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


def assert_stopped_cleanly(stack: Stack, code: int | None) -> None:
    assert code == 0, f"stack exit code {code}; output:\n{stack.output.text()[-3000:]}"
    assert stack.output.lines[-1] == "[stack] stopped; no process left running"
    assert survivors(stack.children) == []
    assert not (Path(stack.env[env_names.LOCAL_STACK_DIR]) / "stack.env").exists()


def assert_developer_files_untouched(tmp_path: Path) -> None:
    """A developer's own stack may be running: its .local/stack.env must not describe ours."""
    saved = os.environ.pop(env_names.LOCAL_STACK_DIR, None)
    try:
        path = stack_env.stack_env_path()
    finally:
        if saved is not None:
            os.environ[env_names.LOCAL_STACK_DIR] = saved
    assert path.parent != tmp_path / "local"
    assert not path.exists() or str(tmp_path) not in path.read_text()


def test_stack_on_given_servers_passes_the_checklist_and_stops_on_sigterm(
    tmp_path: Path, stack_redis: str, test_database_url: str,
) -> None:
    with scratch_database(test_database_url, prefix="stack_e2e") as database_url:
        env = stack_env_for(tmp_path, REDIS_URL=stack_redis, DATABASE_URL=database_url)
        stack = start_stack(env)
        try:
            written = (tmp_path / "local" / "stack.env").read_text().splitlines()
            assert f"REDIS_URL={stack_redis}" in written and f"DATABASE_URL={database_url}" in written
            assert_developer_files_untouched(tmp_path)
            expected_children = {"celery worker", "celery beat", "celery flower", "manage.py runserver"}
            cmdlines = [" ".join(p.cmdline()) for p in stack.children]
            for what in expected_children:
                assert any(what.split()[0] in c and what.split()[1] in c for c in cmdlines), (what, cmdlines)

            checklist = subprocess.run(
                [sys.executable, "test_celery_setup.py", "--flower-url", f"http://127.0.0.1:{stack.flower_port}",
                 "--timeout", "30"],
                cwd=APP_DIR, env=env, capture_output=True, text=True, timeout=120,
            )
            assert checklist.returncode == 0, checklist.stdout + checklist.stderr
            assert checklist.stdout.rstrip().endswith("6 passed, 0 failed"), checklist.stdout
            assert "401 without credentials, 200 with them" in checklist.stdout

            tasks = manage("test_celery", "--task=all", "--timeout", "60", env=env)
            assert tasks.returncode == 0, tasks.stdout + tasks.stderr
            assert f"all {len(sample_calls())} task(s) succeeded" in tasks.stdout
        finally:
            code = stop_stack(stack, signal.SIGTERM)
        assert_stopped_cleanly(stack, code)
    logs = {path.name for path in (tmp_path / "logs" / "processes").iterdir()}
    assert logs == {f"worker-{name}.log" for name in WORKER_POOLS} | {"beat.log", "flower.log", "web.log"}


def test_stack_with_embedded_servers_serves_stack_env_and_stops_on_sigint(tmp_path: Path) -> None:
    env = stack_env_for(tmp_path)
    stack = start_stack(env)
    try:
        text = stack.output.text()
        assert "REDIS_URL not set: starting embedded Valkey" in text
        assert "DATABASE_URL not set: starting embedded PostgreSQL" in text
        names = {p.name() for p in stack.children}
        assert {"valkey-server", "postgres"} <= names, names
        assert (tmp_path / "local" / "postgres" / "pgdata" / "PG_VERSION").exists()
        assert_developer_files_untouched(tmp_path)

        # A command in "another terminal" with no URLs finds the stack through its stack.env.
        other = {k: v for k, v in env.items() if k not in (env_names.API_TOKEN, env_names.FLOWER_BASIC_AUTH)}
        done = manage("test_celery", "--task=health", "--timeout", "30", env=other)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        code = stop_stack(stack, signal.SIGINT)
    assert_stopped_cleanly(stack, code)
