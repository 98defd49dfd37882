"""Names of the environment variables the app reads: the one list the chart and docs follow."""

from __future__ import annotations

import os

SETTINGS_MODULE = "DJANGO_SETTINGS_MODULE"
SECRET_KEY = "DJANGO_SECRET_KEY"
#: Former secret keys, comma separated: sessions and signatures made with them stay valid (key rotation).
SECRET_KEY_FALLBACKS = "DJANGO_SECRET_KEY_FALLBACKS"
ALLOWED_HOSTS = "DJANGO_ALLOWED_HOSTS"
CSRF_TRUSTED_ORIGINS = "DJANGO_CSRF_TRUSTED_ORIGINS"
LOG_LEVEL = "LOG_LEVEL"

#: Broker (and cache) URL: ``redis://`` / ``rediss://``, or through Redis Sentinel kombu's
#: ``sentinel://:PASSWORD@host1:26379/0;sentinel://:PASSWORD@host2:26379/0;…`` (PASSWORD: the data nodes');
#: in production it is required.
REDIS_URL = "REDIS_URL"
#: The master name the sentinels monitor; required when REDIS_URL is ``sentinel://``.
REDIS_SENTINEL_MASTER = "REDIS_SENTINEL_MASTER"
#: The sentinels' own password (their ``requirepass``), if they have one.
REDIS_SENTINEL_PASSWORD = "REDIS_SENTINEL_PASSWORD"
#: Overrides the broker only, e.g. ``sqla+sqlite:///…`` for the development fallback.
BROKER_URL = "CELERY_BROKER_URL"
#: kombu ``global_keyprefix``: queue list keys become ``<prefix><queue>`` (KEDA must know it).
BROKER_KEY_PREFIX = "CELERY_BROKER_KEY_PREFIX"
#: kombu ``priority_steps``, comma separated (default ``0``: no message priorities, one list key per
#: queue — what atomic delivery needs, apps.main.redis_transport). KEDA must watch the same keys.
BROKER_PRIORITY_STEPS = "CELERY_BROKER_PRIORITY_STEPS"
#: Replicas that must hold each published task message before the publish returns (``WAIT``; default 0: none),
#: and how long a publish waits for them (ms, default 500). apps.main.redis_transport, docs/reliability.md.
BROKER_PUBLISH_WAIT_REPLICAS = "CELERY_BROKER_PUBLISH_WAIT_REPLICAS"
BROKER_PUBLISH_WAIT_TIMEOUT_MS = "CELERY_BROKER_PUBLISH_WAIT_TIMEOUT_MS"
DATABASE_URL = "DATABASE_URL"

#: A bearer token of the HTTP task API: stored (hashed) as the token ``environment`` at each migrate, with every
#: task and result reads; other tokens are issued with ``manage.py api_tokens`` or in the admin.
API_TOKEN = "API_TOKEN"
#: Calls one token may make per API_RATE_LIMIT_WINDOW_SECONDS unless the token sets its own limit (more: 429).
API_RATE_LIMIT = "API_RATE_LIMIT"
API_RATE_LIMIT_WINDOW_SECONDS = "API_RATE_LIMIT_WINDOW_SECONDS"
#: Reverse proxies in front of the web app that append to X-Forwarded-For (an ingress: 1); the audit log
#: records the address the nearest of them saw. 0: the TCP peer (REMOTE_ADDR).
API_NUM_PROXIES = "API_NUM_PROXIES"
#: Days an API audit event is kept (the hourly cleanup_temp_files deletes older ones).
API_AUDIT_RETENTION_DAYS = "API_AUDIT_RETENTION_DAYS"
#: Fernet keys of the encrypted task payloads, comma separated: the first encrypts, all decrypt (rotation).
#: Required in production; without it development and tests derive one from the Django secret key.
PAYLOAD_ENCRYPTION_KEYS = "PAYLOAD_ENCRYPTION_KEYS"
#: Largest request body the API reads, in bytes (larger: 413).
API_MAX_BODY_BYTES = "API_MAX_BODY_BYTES"
#: Deepest nesting of arrays and objects in a JSON request body (deeper: 400).
API_MAX_JSON_DEPTH = "API_MAX_JSON_DEPTH"
#: ``user:password`` pairs (comma separated) for Flower's basic auth.
FLOWER_BASIC_AUTH = "FLOWER_BASIC_AUTH"
FLOWER_MAX_TASKS = "FLOWER_MAX_TASKS"
SENTRY_DSN = "SENTRY_DSN"

#: Directory for prometheus_client's multiprocess files (one per pod, wiped at start).
PROMETHEUS_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
METRICS_PORT = "METRICS_PORT"

#: Writable directories (the containers' root filesystem is read-only).
DATA_DIR = "APP_DATA_DIR"
TEMP_FILES_DIR = "TEMP_FILES_DIR"
REPORTS_DIR = "REPORTS_DIR"
BACKUP_DIR = "BACKUP_DIR"
LOG_DIR = "LOG_DIR"
#: The local stack's state (stack.env, generated credentials, embedded servers' data); default <repo>/.local.
LOCAL_STACK_DIR = "LOCAL_STACK_DIR"
#: The local stack's URLs of its web app and Flower (default http://127.0.0.1:<port>/ of ports.py) and its
#: workers' metrics endpoints (``pool=url``, comma separated): the development landing page links them, and
#: the commands run in another terminal read them from stack.env.
WEB_URL = "WEB_URL"
FLOWER_URL = "FLOWER_URL"
WORKER_METRICS_URLS = "WORKER_METRICS_URLS"
#: The local stack's admin password (user ``admin``), generated on its first start; never read in production.
LOCAL_ADMIN_PASSWORD = "LOCAL_ADMIN_PASSWORD"

#: Beat's Redis lease: seconds a lease lives without renewal.
BEAT_LEASE_TTL = "BEAT_LEASE_TTL"

#: Seconds before Redis redelivers an unacknowledged message; default derived in settings.
VISIBILITY_TIMEOUT = "CELERY_VISIBILITY_TIMEOUT"
#: The largest --prefetch-multiplier of the pools sharing the broker (the chart computes it from its
#: pools); the derived visibility timeout covers it.
PREFETCH_MULTIPLIER_MAX = "WORKER_PREFETCH_MULTIPLIER_MAX"
#: Poison-message guard of the workers (apps.main.delivery).
TASK_MAX_ARGUMENT_DEPTH = "TASK_MAX_ARGUMENT_DEPTH"
TASK_MAX_DELIVERIES = "TASK_MAX_DELIVERIES"
#: Large task payloads (apps.main.large_payloads, docs/payloads.md): the compression codec (kombu's name: zlib,
#: bzip2, lzma; brotli and zstd when their package is installed), the body size above which every task's body is
#: compressed, the size (after compression) above which the body is stored in the database and the message
#: carries a reference (claim-check), the largest body a task may have (larger: refused at publish), and the
#: hours an unclaimed stored body is kept before cleanup_temp_files deletes it.
TASK_COMPRESSION = "TASK_COMPRESSION"
TASK_COMPRESSION_THRESHOLD_BYTES = "TASK_COMPRESSION_THRESHOLD_BYTES"
TASK_CLAIM_CHECK_BYTES = "TASK_CLAIM_CHECK_BYTES"
TASK_MAX_PAYLOAD_BYTES = "TASK_MAX_PAYLOAD_BYTES"
TASK_CLAIM_RETENTION_HOURS = "TASK_CLAIM_RETENTION_HOURS"


def get(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


def get_bool(name: str, default: bool = False) -> bool:
    value = get(name)
    if value is None:
        return default
    return value.lower() in {"1", "true", "yes", "on"}


def get_int(name: str, default: int) -> int:
    value = get(name)
    return default if value is None else int(value)


def get_list(name: str, default: tuple[str, ...] = ()) -> list[str]:
    value = get(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def get_int_list(name: str, default: list[int]) -> list[int]:
    items = get_list(name)
    if not items:
        return list(default)
    try:
        return [int(item) for item in items]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers, got {get(name)!r}") from None
