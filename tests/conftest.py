"""Fixtures on real components: the session's Redis and PostgreSQL (tests.support.backends) and
real Celery workers in subprocesses, started with the same command lines as the chart's pods."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis as redis_lib

from apps.main.queues import WorkerPool
from embedded.supervisor import Supervisor, python_env
from tests.support import backends, leaks
from tests.support.timeouts import scaled

LIVE_READY_TIMEOUT = scaled(60.0)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # pytest-timeout's per-test limit scales with the waits (TEST_TIMEOUT_SCALE) on a slow machine.
    limit = config.getoption("timeout", None) or config.getini("timeout")
    if limit:
        config.option.timeout = scaled(float(limit))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build Tilt (a cold Go build: minutes of CPU) in the background while the first tests run, mostly
    waiting on their subprocesses, instead of at the end: tests/tilt then finds it built, or waits on
    the install lock. At lower priority (nice applies to this thread and the go it starts)."""
    if not any("tests/tilt/" in item.nodeid for item in session.items):
        return
    from tests.support.tools import TOOLS, tool_path

    tool = TOOLS["tilt-headless"]
    if (tool.home / tool.executable).exists():
        return

    def build() -> None:
        os.nice(10)
        with contextlib.suppress(Exception):  # a failure is raised again, with its reason, by the test's call
            tool_path(tool.name)

    threading.Thread(target=build, name="tilt-build", daemon=True).start()


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_the_run_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The run's logs never hold its secrets (tests.support.leaks.run_secrets): every *.log under the run's
    temporary directory (process_logs, ...) and the servers' data directory, and the output pytest captured.
    A hit is an error at the teardown of the last test (also of each pytest-xdist worker, which checks its own
    run). Autouse, so set up before and torn down after every other session fixture: their processes have
    stopped and flushed their logs by then."""
    yield
    roots = [tmp_path_factory.getbasetemp(), backends.data_dir()]
    logs = sorted({path for root in roots if root for path in root.rglob("*.log") if path.is_file()})
    found = _captured_leaks + leaks.scan_files(logs, leaks.run_secrets())
    assert not found, leaks.describe(found)


_captured_leaks: list[leaks.Leak] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """What pytest captured of a test (its log records, stdout, stderr) is searched for the run's secrets too."""
    if report.sections:
        secrets = leaks.run_secrets()
        _captured_leaks.extend(leaks.Leak(f"{report.nodeid} ({title})", name, secrets[name])
                               for title, text in report.sections for name in leaks.find(text, secrets))


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ["REDIS_URL"]


@pytest.fixture
def redis_client(redis_url: str) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(redis_url)


@pytest.fixture(scope="session")
def app_data_dir() -> Path:
    path = Path(os.environ["APP_DATA_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def test_database_url(django_db_setup: None) -> str:
    """DATABASE_URL of the migrated test database that pytest-django created (test_<name>)."""
    from django.db import connection

    s = connection.settings_dict
    # Outside a django_db test the connection may still name the original database: apply Django's
    # documented rule for the test database's name (TEST.NAME, else "test_" + NAME).
    name = s["NAME"] if s["NAME"].startswith("test_") else (s.get("TEST") or {}).get("NAME") or f"test_{s['NAME']}"
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{name}"


@pytest.fixture(scope="session")
def live_env(test_database_url: str, redis_url: str, app_data_dir: Path) -> dict[str, str]:
    """Environment of every subprocess of the live tests: test settings on the test database."""
    from django.conf import settings

    env = python_env()
    env.update({
        "DJANGO_SETTINGS_MODULE": "portfolio_site.settings.test",
        "REDIS_URL": redis_url,
        "DATABASE_URL": test_database_url,
        "APP_DATA_DIR": str(app_data_dir),
        "API_TOKEN": settings.API_TOKEN,  # random per session (tests.support.backends)
    })
    env.pop("CELERY_BROKER_URL", None)
    return env


@pytest.fixture(scope="session")
def process_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("process-logs")


WorkerFactory = Callable[..., str]


def start_worker(
    supervisor: Supervisor, queues: list[str] | WorkerPool, *, name: str, concurrency: int = 2,
    extra_env: dict[str, str] | None = None, pool: str = "prefork",
) -> str:
    """A real ``celery worker`` (the chart's command line) answering pings; returns its node name.

    ``queues`` is a list (a pool with the default prefetch and events) or a whole ``WorkerPool``."""
    spec = queues if isinstance(queues, WorkerPool) else WorkerPool(tuple(queues), concurrency)
    extra_args = ("--pool", pool) if pool != "prefork" else ()
    # Several workers on one host: each serves its metrics on a port of its own (0: the OS picks).
    extra_env = {"METRICS_PORT": "0", **(extra_env or {})}
    return supervisor.start_worker(name, spec, timeout=LIVE_READY_TIMEOUT, extra_args=extra_args,
                                   extra_env=extra_env)


@pytest.fixture
def celery_worker_factory(live_env: dict[str, str], process_logs: Path) -> Iterator[WorkerFactory]:
    """Start extra workers for one test: ``factory(queues, concurrency=2, name=None, extra_env=None)``."""
    supervisor = Supervisor(log_dir=process_logs, env=live_env)

    def factory(queues: list[str], *, concurrency: int = 2, name: str | None = None,
                extra_env: dict[str, str] | None = None, pool: str = "prefork") -> str:
        return start_worker(supervisor, queues, name=name or f"test-{uuid.uuid4().hex[:6]}",
                            concurrency=concurrency, extra_env=extra_env, pool=pool)

    factory.supervisor = supervisor  # type: ignore[attr-defined]
    yield factory
    supervisor.stop_all()


@pytest.fixture(scope="session")
def stack_workers(live_env: dict[str, str], process_logs: Path) -> Iterator[dict[str, str]]:
    """One worker per pool of apps.main.queues.WORKER_POOLS for the whole session: pool -> node name."""
    from apps.main.queues import WORKER_POOLS

    supervisor = Supervisor(log_dir=process_logs, env=live_env)
    try:
        nodes = {name: start_worker(supervisor, pool, name=name) for name, pool in WORKER_POOLS.items()}
        yield nodes
    finally:
        supervisor.stop_all()
