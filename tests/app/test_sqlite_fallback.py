"""The development fallback without Redis or PostgreSQL: SQLite as database, cache and broker.

A development convenience only: one worker process (``--pool solo``), no broadcast commands
(``celery inspect``/``ping`` need a fanout-capable broker), no beat lease. Production settings refuse
it (see test_settings). This test proves the fallback still works end to end when someone uses it.
"""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from apps.main.queues import QUEUES, WorkerPool
from embedded.network import Abort, wait_until
from embedded.supervisor import Supervisor, python_env
from portfolio_site import commands
from portfolio_site import environment as env_names
from tests.app.procs import manage, read_json_lines
from tests.support.timeouts import scaled


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    env = python_env()
    for name in (env_names.REDIS_URL, env_names.DATABASE_URL, env_names.BROKER_URL, env_names.BROKER_KEY_PREFIX):
        env.pop(name, None)
    env.update({
        env_names.SETTINGS_MODULE: "portfolio_site.settings.dev",
        env_names.DATABASE_URL: f"sqlite:///{tmp_path}/db.sqlite3",
        env_names.BROKER_URL: f"sqla+sqlite:///{tmp_path}/broker.sqlite3",
        env_names.DATA_DIR: str(tmp_path / "data"),
        env_names.LOG_DIR: str(tmp_path / "logs"),
        env_names.LOCAL_STACK_DIR: str(tmp_path / "local"),  # never a developer's running stack
        env_names.METRICS_PORT: "0",
    })
    return env


@pytest.mark.live
def test_sqlite_fallback_runs_tasks_end_to_end(sqlite_env: dict[str, str], tmp_path: Path) -> None:
    migrated = manage("migrate", "--noinput", env=sqlite_env)
    assert migrated.returncode == 0, migrated.stderr

    supervisor = Supervisor(log_dir=tmp_path / "processes", env=sqlite_env)
    argv = [*commands.worker("solo", WorkerPool(queues=QUEUES, concurrency=1)), "--pool", "solo"]
    child = supervisor.spawn("worker-solo", argv)
    node = f"solo@{socket.gethostname()}"
    try:
        def ready() -> bool:
            if child.process.poll() is not None:
                raise Abort(supervisor.describe_failure(child))
            return any(entry.get("message") == f"{node} ready." for entry in read_json_lines(child.log_path))

        wait_until(ready, timeout=scaled(60), what=f"worker {node} on the SQLite broker", interval=0.2)
        # Two commands at once, as two terminals would: SQLite's locking has to cope with that too.
        with ThreadPoolExecutor(2) as pool:
            runs = pool.map(lambda task: manage("test_celery", f"--task={task}", "--timeout", "30", env=sqlite_env),
                            ("health", "action"))
        for done in runs:
            assert done.returncode == 0, done.stdout + done.stderr
            assert done.stdout.strip().endswith("all 1 task(s) succeeded"), done.stdout
    finally:
        supervisor.stop_all()

    lines = read_json_lines(child.log_path)
    assert any(entry.get("message") == f"Connected to {sqlite_env[env_names.BROKER_URL]}" for entry in lines)
    succeeded = [e for e in lines if e.get("logger") == "celery.app.trace" and "succeeded" in e["message"]]
    assert {e["task_name"].rsplit(".", 1)[-1] for e in succeeded} == {"health_check", "process_user_action"}
    health = next(e for e in succeeded if e["task_name"].endswith("health_check"))
    assert json.dumps({"database": "ok", "broker": "ok", "cache": "ok"})[1:-1] in health["message"].replace("'", '"')

