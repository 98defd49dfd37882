"""Settings as processes load them: production refuses to start half-configured, and the Celery
configuration that a worker really gets (``app.conf`` after ``django.setup()``) is the specified one."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from typing import Any

import pytest

from apps.main.payload_claims import SERIALIZER as CLAIM
from apps.main.payload_encryption import SERIALIZER as ENCRYPTED
from apps.main.payload_encryption import generate_key
from apps.main.queues import DEFAULT_QUEUE, ENCRYPTED_TASKS, TASK_ROUTES, WORKER_POOLS
from embedded.supervisor import python_env
from portfolio_site import environment as env_names
from tests.app.procs import APP_DIR, manage

PRODUCTION = "portfolio_site.settings.production"
#: The tasks that run for seconds: their STARTED state is stored.
LONG_TASKS = {"update_analytics", "cleanup_temp_files", "generate_reports", "backup_data"}
REQUIRED = (env_names.REDIS_URL, env_names.DATABASE_URL, env_names.SECRET_KEY, env_names.PAYLOAD_ENCRYPTION_KEYS)


def production_env(**overrides: str | None) -> dict[str, str]:
    """A production environment with every required variable; ``NAME=None`` removes one."""
    env = python_env()
    for name in (*REQUIRED, env_names.BROKER_URL, env_names.SENTRY_DSN, env_names.LOCAL_STACK_DIR):
        env.pop(name, None)
    env.update({
        env_names.SETTINGS_MODULE: PRODUCTION,
        # Nothing listens on these: loading settings and the checks below must not need a connection.
        env_names.REDIS_URL: "redis://:secret@127.0.0.1:1/0",
        env_names.DATABASE_URL: "postgres://app:secret@127.0.0.1:1/celery_stack",
        env_names.SECRET_KEY: secrets.token_urlsafe(64),
        env_names.PAYLOAD_ENCRYPTION_KEYS: f"{generate_key()},{generate_key()}",
    })
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=APP_DIR, env=env, capture_output=True, text=True,
                          timeout=60)


SETUP = "import django; django.setup()"


@pytest.mark.parametrize(("missing", "how"), [*((name, "unset") for name in REQUIRED), (REQUIRED[0], "blank")])
def test_production_refuses_to_start_without(missing: str, how: str) -> None:
    done = python(SETUP, production_env(**{missing: None if how == "unset" else "   "}))
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"production settings: {missing} is not set; it must be "), lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_production_refuses_the_sqlite_broker_fallback(tmp_path) -> None:
    done = python(SETUP, production_env(**{env_names.BROKER_URL: f"sqla+sqlite:///{tmp_path}/broker.sqlite3"}))
    assert done.returncode != 0
    assert done.stderr == "production settings: the SQLite broker fallback is for development only\n"


def test_priority_steps_come_from_the_environment_and_bad_ones_are_named() -> None:
    code = (SETUP + "; from django.conf import settings; "
            "print(settings.CELERY_BROKER_TRANSPORT_OPTIONS['priority_steps'])")
    done = python(code, production_env(**{env_names.BROKER_PRIORITY_STEPS: "0,3,6,9"}))
    assert done.stdout.strip() == "[0, 3, 6, 9]", done.stderr
    done = python(code, production_env(**{env_names.BROKER_PRIORITY_STEPS: "0,high"}))
    assert done.returncode != 0
    assert "CELERY_BROKER_PRIORITY_STEPS must be comma-separated integers, got '0,high'" in done.stderr


def test_production_with_everything_set_passes_the_deploy_checks() -> None:
    done = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout, done.stdout
    assert "drf_spectacular" not in done.stdout + done.stderr


DUMP = """
import json, django
django.setup()
from celery.utils.imports import symbol_by_name
from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler
from apps.main.queues import task_name, TASK_NAMES
from apps.main.retry import policy_for
from portfolio_site.celery import app

conf = app.conf
keys = '''accept_content task_serializer result_serializer event_serializer timezone enable_utc beat_scheduler
task_routes task_default_queue worker_concurrency worker_prefetch_multiplier worker_max_tasks_per_child
worker_max_memory_per_child
task_soft_time_limit task_time_limit result_expires task_acks_late task_reject_on_worker_lost
broker_transport_options broker_connection_retry_on_startup broker_pool_limit worker_send_task_events
task_send_sent_event task_track_started result_backend task_default_max_retries task_default_retry_delay
result_accept_content'''.split()
out = {key: conf[key] for key in keys}
out["broker_url_scheme"] = conf.broker_url.split(":", 1)[0]
out["scheduler_is_database_scheduler"] = issubclass(symbol_by_name(conf.beat_scheduler), DatabaseScheduler)
out["RETRY_BACKOFF_MAX"] = settings.RETRY_BACKOFF_MAX
out["PREFETCH_MULTIPLIER_MAX"] = settings.PREFETCH_MULTIPLIER_MAX
out["db_reuse_max"] = conf.get("CELERY_DB_REUSE_MAX")
out["CONN_MAX_AGE"] = settings.DATABASES["default"]["CONN_MAX_AGE"]
out["DEBUG"] = settings.DEBUG
# What each registered task really runs with, after Celery bound it to this configuration.
out["tasks"] = {
    short: {attr: getattr(app.tasks[task_name(short)], attr) for attr in
            ("serializer", "acks_late", "reject_on_worker_lost", "time_limit", "soft_time_limit", "track_started")}
    for short in TASK_NAMES
}
out["default_policy"] = [policy_for("update_analytics").max_retries, policy_for("update_analytics").base_delay]
print(json.dumps(out, default=str))
"""


@pytest.fixture(scope="module", params=["portfolio_site.settings.base", PRODUCTION])
def loaded_conf(request: pytest.FixtureRequest) -> dict[str, Any]:
    done = python(DUMP, production_env(**{env_names.SETTINGS_MODULE: request.param}))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_json_only_and_utc(loaded_conf: dict[str, Any]) -> None:
    # JSON, JSON encrypted (payload_encryption) and the reference of a claim-checked body (payload_claims), whose
    # stored body is decoded with its own content type, one of the others.
    assert loaded_conf["accept_content"] == ["json", ENCRYPTED, CLAIM]
    assert loaded_conf["result_accept_content"] in (None, ["json"])  # None: Celery uses accept_content
    for key in ("task_serializer", "result_serializer", "event_serializer"):
        assert loaded_conf[key] == "json", key
    assert (loaded_conf["timezone"], loaded_conf["enable_utc"]) == ("UTC", True)
    assert {short: task["serializer"] for short, task in loaded_conf["tasks"].items()} == {
        short: ENCRYPTED if short in ENCRYPTED_TASKS else "json" for short in loaded_conf["tasks"]}


def test_scheduler_routes_and_queues(loaded_conf: dict[str, Any]) -> None:
    assert loaded_conf["beat_scheduler"] == "apps.main.beat:LeasedDatabaseScheduler"
    assert loaded_conf["scheduler_is_database_scheduler"] is True
    assert loaded_conf["task_routes"] == TASK_ROUTES
    assert loaded_conf["task_default_queue"] == DEFAULT_QUEUE == "default"


def test_worker_limits_and_retries(loaded_conf: dict[str, Any]) -> None:
    assert loaded_conf["worker_concurrency"] == 4
    assert loaded_conf["worker_prefetch_multiplier"] == 1
    # Recycled by memory (about twice a fresh pool process's ~100 MiB), and after 10,000 tasks at the latest.
    assert (loaded_conf["worker_max_tasks_per_child"], loaded_conf["worker_max_memory_per_child"]) == (10_000, 204_800)
    assert (loaded_conf["task_soft_time_limit"], loaded_conf["task_time_limit"]) == (60, 120)
    assert (loaded_conf["task_default_max_retries"], loaded_conf["task_default_retry_delay"]) == (3, 60)
    assert loaded_conf["default_policy"] == [3, 60]  # what a task without its own policy really gets
    assert loaded_conf["result_expires"] == 3600
    assert loaded_conf["result_backend"] == "apps.main.results_backend:ResilientDatabaseBackend"
    for short, task in loaded_conf["tasks"].items():
        assert (task["acks_late"], task["reject_on_worker_lost"]) == (True, True), short
        # STARTED rows only for the tasks that run for seconds (one more write each).
        assert task["track_started"] is (short in LONG_TASKS), short
        assert (task["soft_time_limit"], task["time_limit"]) == (60, 120), short


def test_broker_reliability(loaded_conf: dict[str, Any]) -> None:
    assert loaded_conf["broker_url_scheme"] == "redis"
    assert (loaded_conf["task_acks_late"], loaded_conf["task_reject_on_worker_lost"]) == (True, True)
    visibility = loaded_conf["broker_transport_options"]["visibility_timeout"]
    # An unacknowledged message is redelivered after this: it must outlast every countdown and run.
    assert visibility > loaded_conf["RETRY_BACKOFF_MAX"] and visibility > loaded_conf["task_time_limit"]
    # ... and no longer than that: it is how long a hard-killed worker's reservations wait (15 min, not 6 h).
    # Behind a message wait at most the pool's multiplier x its concurrency reservations, the largest of any pool.
    assert loaded_conf["PREFETCH_MULTIPLIER_MAX"] == max(p.prefetch_multiplier for p in WORKER_POOLS.values())
    prefetched = loaded_conf["PREFETCH_MULTIPLIER_MAX"] + 1
    assert visibility == loaded_conf["RETRY_BACKOFF_MAX"] + prefetched * loaded_conf["task_time_limit"] + 60 == 900
    options = loaded_conf["broker_transport_options"]
    assert (options["unacked_restore_interval"], options["unacked_restore_throttle"]) == (10, 1)
    # Priorities off: one list key per queue, taken atomically (apps.main.redis_transport).
    assert options["priority_steps"] == [0]
    assert loaded_conf["broker_connection_retry_on_startup"] is True
    assert isinstance(loaded_conf["broker_pool_limit"], int) and 0 < loaded_conf["broker_pool_limit"] <= 100
    # Task events are each pool's choice on its command line (--task-events); publishers send task-sent.
    assert (loaded_conf["worker_send_task_events"], loaded_conf["task_send_sent_event"]) == (False, True)
    assert loaded_conf["task_track_started"] is False
    # Connections live across tasks (CONN_MAX_AGE, health-checked): Celery's fixup must never close them.
    assert loaded_conf["CONN_MAX_AGE"] > 0 and loaded_conf["db_reuse_max"] >= 2**62
    assert loaded_conf["DEBUG"] is False


# --- Redis Sentinel (apps.main.redis_connection; the live tests are in test_sentinel.py) ---------------------------

SENTINEL_URL = "sentinel://:data-secret@127.0.0.1:1/0;sentinel://:data-secret@127.0.0.1:2/0"


def test_production_with_a_sentinel_url_refuses_to_start_without_the_master_name() -> None:
    done = python(SETUP, production_env(**{env_names.REDIS_URL: SENTINEL_URL}))
    assert done.returncode != 0
    assert done.stderr == ("production settings: REDIS_SENTINEL_MASTER is not set; it must be the master name the "
                           "sentinels monitor (REDIS_URL is sentinel://)\n"), done.stderr


def test_production_refuses_a_sentinel_url_it_cannot_read() -> None:
    done = python(SETUP, production_env(**{env_names.REDIS_URL: "sentinel://:data-secret@:1/0",
                                           env_names.REDIS_SENTINEL_MASTER: "mymaster"}))
    assert done.returncode != 0
    assert done.stderr == ("production settings: REDIS_URL: not a sentinel URL: it must be sentinel://[:PASSWORD@]HOST"
                           "[:PORT][/DB], one per sentinel, joined with ';'\n"), done.stderr


SENTINEL_DUMP = """
import json, django
django.setup()
from django.conf import settings
from django.core.cache import caches
from apps.main.reporting import SecretHidingFilter, mask_secrets
from portfolio_site.celery import app

options = app.conf.broker_transport_options
with app.connection_for_write() as connection:  # the transport is chosen from the URL; nothing connects
    transport = type(connection.transport)
cache = caches["default"]
print(json.dumps({
    "broker_url": app.conf.broker_url,
    "transport": f"{transport.__module__}.{transport.__name__}",
    "options": options,
    # kombu ignores a transport option its channel does not list: every one set here must reach the channel.
    "unknown_options": sorted(set(options) - set(transport.Channel.from_transport_options)),
    "cache": [f"{type(cache).__module__}.{type(cache).__name__}", cache._servers],
    "cleansed": SecretHidingFilter().cleanse_setting("CELERY_BROKER_TRANSPORT_OPTIONS", options),
    "masked": mask_secrets(f"sentinel answered {settings.REDIS_SENTINEL_PASSWORD or ''}"),
}, default=str))
"""


def broker_dump(env: dict[str, str]) -> dict[str, Any]:
    done = python(SENTINEL_DUMP, env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("settings_module", ["portfolio_site.settings.base", PRODUCTION])
def test_a_sentinel_url_gives_the_broker_and_cache_their_sentinel_configuration(settings_module: str) -> None:
    env = production_env(**{env_names.SETTINGS_MODULE: settings_module, env_names.REDIS_URL: SENTINEL_URL,
                            env_names.REDIS_SENTINEL_MASTER: "mymaster",
                            env_names.REDIS_SENTINEL_PASSWORD: "sentinel-secret-0123",
                            env_names.BROKER_PUBLISH_WAIT_REPLICAS: "1",
                            env_names.BROKER_PUBLISH_WAIT_TIMEOUT_MS: "250"})
    loaded = broker_dump(env)
    assert loaded["broker_url"] == SENTINEL_URL
    assert loaded["transport"] == "apps.main.redis_transport.SentinelTransport"
    options = loaded["options"]
    assert options["master_name"] == "mymaster"
    assert options["sentinel_kwargs"] == {"password": "sentinel-secret-0123"}
    assert (options["publish_wait_replicas"], options["publish_wait_timeout_ms"]) == (1, 250)
    # The same reliability options as a redis:// broker.
    assert options["visibility_timeout"] == 900 and options["priority_steps"] == [0]
    assert loaded["unknown_options"] == []
    # One LOCATION, the whole sentinel URL (Django's own RedisCache would split it at ';' into "servers").
    assert loaded["cache"] == ["apps.main.redis_cache.RedisCache", [SENTINEL_URL]]
    # The sentinels' password is a secret like the others: hidden in settings dumps and in any text.
    assert "sentinel-secret-0123" not in json.dumps(loaded["cleansed"]) + loaded["masked"]


def test_redis_broker_options_all_reach_the_channel() -> None:
    loaded = broker_dump(production_env(**{env_names.BROKER_PUBLISH_WAIT_REPLICAS: "1"}))
    assert loaded["transport"] == "apps.main.redis_transport.Transport"
    assert loaded["unknown_options"] == [] and "master_name" not in loaded["options"]
