"""One embedded Valkey and one embedded PostgreSQL for the whole benchmark, and the processes run on them.

The database is migrated once; between scenarios ``reset`` empties the broker (FLUSHALL) and the tables
the scenarios write, so each starts from the same state. Children are started with the chart's command
lines through the project's ``Supervisor`` and get an environment of their own: the caller's variables
that could point them at other servers or settings are removed first.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
from pathlib import Path
from typing import Any

import redis

from embedded import EmbeddedPostgres, EmbeddedValkey
from embedded.network import Abort, free_port, wait_until
from embedded.process import tail
from embedded.supervisor import APP_DIR, Child, Supervisor, python_env
from portfolio_site import environment

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION_SETTINGS = "portfolio_site.settings.production"
#: Tables the scenarios write; emptied between scenarios.
TABLES = ("django_celery_results_taskresult", "main_useraction", "main_deadletter", "main_apiauditevent",
          "main_payloadclaim")
#: Prefixes of caller variables a child must not inherit (settings, broker, test-suite servers).
_FOREIGN_PREFIXES = ("DJANGO_", "CELERY_", "TEST_", "BENCH_", "PROMETHEUS_", "SENTRY_")


def _foreign(name: str) -> bool:
    app_names = {value for key, value in vars(environment).items() if key.isupper() and isinstance(value, str)}
    return name.startswith(_FOREIGN_PREFIXES) or name in app_names


class BenchServers:
    """Valkey, PostgreSQL (migrated) and a supervisor for the benchmark's processes, all under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.valkey = EmbeddedValkey(root / "valkey")
        self.postgres = EmbeddedPostgres(root / "postgres", database="bench")
        self.secret_key = secrets.token_urlsafe(40)
        self.api_token = secrets.token_urlsafe(24)
        # A Fernet key (32 random bytes, url-safe base64): production settings require one.
        self.payload_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        self.supervisor = Supervisor(log_dir=root / "logs", env=self.base_env())
        self._redis: redis.Redis | None = None
        self._db: Any = None

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> BenchServers:
        self.valkey.start()
        self.postgres.start()
        migrate = subprocess.run(["python", "manage.py", "migrate", "--noinput"], cwd=APP_DIR,
                                 env=self.project_env(), capture_output=True, text=True)
        if migrate.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{migrate.stdout[-3000:]}\n{migrate.stderr[-3000:]}")
        return self

    def stop(self) -> None:
        try:
            self.supervisor.stop_all(timeout=20)
        finally:
            if self._db is not None:
                self._db.close()
            self.valkey.stop()
            self.postgres.stop()

    def __enter__(self) -> BenchServers:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- environments ----------------------------------------------------------------------------
    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in python_env().items() if not _foreign(k)}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(APP_DIR)])  # `tests` importable in children
        env["LOG_LEVEL"] = "WARNING"
        return env

    def bare_env(self) -> dict[str, str]:
        """(b): the broker URL only; no DJANGO_SETTINGS_MODULE, else Celery would install its Django fixup."""
        return {**self.base_env(), "BENCH_BROKER_URL": self.valkey.url}

    def project_env(self) -> dict[str, str]:
        """The project's production settings on these servers (what the chart's pods get)."""
        return {
            **self.base_env(),
            environment.SETTINGS_MODULE: PRODUCTION_SETTINGS,
            environment.REDIS_URL: self.valkey.url,
            environment.DATABASE_URL: self.postgres.url,
            environment.SECRET_KEY: self.secret_key,
            environment.DATA_DIR: str(self.root / "app-data"),
            environment.API_TOKEN: self.api_token,
            # The API's own throughput is measured, not a token's quota (the limiter's INCR still runs).
            environment.API_RATE_LIMIT: "1000000",
            environment.PAYLOAD_ENCRYPTION_KEYS: self.payload_key,
            environment.ALLOWED_HOSTS: "127.0.0.1,localhost",
        }

    def _strip_foreign_environment(self) -> None:
        for name in [n for n in os.environ if _foreign(n)]:
            del os.environ[name]

    def use_bare_client(self) -> None:
        """Make this process a client of the bare app (b): its broker URL, and no Django settings."""
        self._strip_foreign_environment()
        os.environ["BENCH_BROKER_URL"] = self.valkey.url

    def use_project_settings(self) -> None:
        """Make this process a client of the project (Django set up with the production settings)."""
        self._strip_foreign_environment()
        env = self.project_env()
        os.environ.update({k: env[k] for k in env if _foreign(k) or k == "LOG_LEVEL"})
        import django

        django.setup()

    # --- processes -------------------------------------------------------------------------------
    def spawn_bare(self, name: str, argv: list[str]) -> Child:
        return self.supervisor.spawn(name, argv, extra_env=self.bare_env())

    def spawn_project(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> tuple[Child, int]:
        """A project process; each has its own metrics directory and port, like a pod. Returns it and the port."""
        port = free_port()
        metrics_dir = self.root / "metrics" / name
        metrics_dir.mkdir(parents=True, exist_ok=True)
        env = {**self.project_env(), environment.PROMETHEUS_MULTIPROC_DIR: str(metrics_dir),
               environment.METRICS_PORT: str(port), **(extra_env or {})}
        return self.supervisor.spawn(name, argv, extra_env=env), port

    def stop_child(self, child: Child, timeout: float = 60) -> None:
        """SIGTERM (Celery's warm shutdown, gunicorn's graceful stop), then wait for it to exit."""
        self.supervisor.stop(child, timeout=timeout)

    def check_alive(self, child: Child) -> None:
        if child.process.poll() is not None:
            raise Abort(self.supervisor.describe_failure(child))

    def wait_ready(self, app: Any, node: str, child: Child, timeout: float = 120) -> None:
        """Until the worker ``node`` answers a ping; a worker that exits meanwhile fails at once."""

        def answered() -> bool:
            self.check_alive(child)
            return any(node in reply for reply in app.control.ping(destination=[node], timeout=0.5))

        wait_until(answered, timeout=timeout, what=f"worker {node}", interval=0.2)

    def log_tails(self, lines: int = 25) -> str:
        logs = sorted((self.root / "logs").glob("*.log"))
        return "\n".join(f"--- {path.name} ---\n{tail(path, lines)}" for path in logs)

    # --- the servers -----------------------------------------------------------------------------
    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.valkey.url, socket_timeout=30)
        return self._redis

    def _connection(self) -> Any:
        import psycopg

        if self._db is None or self._db.closed:
            self._db = psycopg.connect(self.postgres.url, autocommit=True, connect_timeout=10)
        return self._db

    def sql(self, query: str, *params: object) -> list[tuple]:
        return self._connection().execute(query, params).fetchall()

    def execute(self, statement: str) -> None:
        self._connection().execute(statement)

    def reset(self) -> None:
        """Empty broker, cache and the written tables; zero Valkey's command statistics."""
        self.redis.flushall()
        self.redis.config_resetstat()
        self.execute(f"TRUNCATE {', '.join(TABLES)}")

    def publish_calls(self) -> int:
        """PUBLISH commands since the last reset: how task events reach Valkey (and worker heartbeats)."""
        stats = self.redis.info("commandstats")
        return int(stats.get("cmdstat_publish", {}).get("calls", 0))

    def versions(self) -> dict[str, str]:
        info = self.redis.info("server")
        version = info.get("valkey_version") or info.get("redis_version")
        return {"valkey": str(version), "postgresql": str(self.sql("SHOW server_version")[0][0])}


def node_name(pool_name: str) -> str:
    """The node name a worker started with ``-n <pool>@%h`` answers to."""
    return f"{pool_name}@{socket.gethostname()}"
