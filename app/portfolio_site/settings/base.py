"""Settings shared by every environment; each value that differs per deployment comes from the environment."""

from __future__ import annotations

import sys
from pathlib import Path

from apps.main import redis_connection
from apps.main.queues import DEFAULT_QUEUE, MAX_PREFETCH_MULTIPLIER, TASK_ROUTES
from portfolio_site import environment as env

BASE_DIR = Path(__file__).resolve().parent.parent.parent  # app/
DATA_DIR = Path(env.get(env.DATA_DIR, str(BASE_DIR.parent / ".local" / "data")))

SECRET_KEY = env.get(env.SECRET_KEY, "insecure-development-key-change-me")
SECRET_KEY_FALLBACKS = env.get_list(env.SECRET_KEY_FALLBACKS)
DEBUG = False
ALLOWED_HOSTS = env.get_list(env.ALLOWED_HOSTS, ("localhost", "127.0.0.1", "[::1]"))
CSRF_TRUSTED_ORIGINS = env.get_list(env.CSRF_TRUSTED_ORIGINS)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI as static files: the docs page loads nothing from a CDN
    "django_celery_beat",
    "django_celery_results",
    "apps.main",
]

MIDDLEWARE = [
    "apps.main.metrics.web.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "portfolio_site.urls"
WSGI_APPLICATION = "portfolio_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------------
# Persistent connections: workers run thousands of tasks, a connection per task wastes the database.
# Health checks: a reused connection is pinged (SELECT 1) on its first use per request or task.
CONN_MAX_AGE = env.get_int("DATABASE_CONN_MAX_AGE", 60)
# Celery's Django fixup closes every connection around each task unless this is set; set so high it
# never does: apps.main.db_connections recycles them per task by CONN_MAX_AGE and health checks instead.
CELERY_DB_REUSE_MAX = 2**62


def database_from_url(url: str) -> dict:
    import dj_database_url

    config = dj_database_url.parse(url, conn_max_age=CONN_MAX_AGE, conn_health_checks=True)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Several processes share one file: wait for the lock instead of failing at once.
        config.setdefault("OPTIONS", {})["timeout"] = 20
    return config


DATABASE_URL = env.get(env.DATABASE_URL)
DATABASES = {
    "default": database_from_url(DATABASE_URL or f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (Redis when there is one: health_check and cleanup use it across processes) -----------
REDIS_URL = env.get(env.REDIS_URL)
# A sentinel:// REDIS_URL: the master's name and the sentinels' password (apps.main.redis_connection).
REDIS_SENTINEL_MASTER = env.get(env.REDIS_SENTINEL_MASTER)
REDIS_SENTINEL_PASSWORD = env.get(env.REDIS_SENTINEL_PASSWORD)
CACHES = {
    "default": (
        # Django's RedisCache with its client from apps.main.redis_connection (it speaks sentinel:// too).
        # Timeouts: a primary that vanished without closing its connections must not hang a request or worker.
        {"BACKEND": "apps.main.redis_cache.RedisCache", "LOCATION": REDIS_URL, "KEY_PREFIX": "cache",
         "OPTIONS": {"socket_timeout": 5, "socket_connect_timeout": 5}}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "django_cache"}
    )
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- HTTP API -----------------------------------------------------------------------------------
API_TOKEN = env.get(env.API_TOKEN)
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps.main.api.auth.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Celery Stack task API",
    "DESCRIPTION": (
        "Enqueue allow-listed background tasks and read their state. Every call needs "
        "`Authorization: Bearer <token>` (in this page: **Authorize**): a token may enqueue the tasks it was "
        "issued for (else 403) and read results only when allowed to (else 403), at most its rate per window "
        "(else 429 with `Retry-After`); every call is audited. Tokens: `manage.py api_tokens` or the admin; "
        "`API_TOKEN` of the environment is one that may do everything. Every error is JSON with a `detail`; "
        "a path under /api/ that is no route is a 404, another method on a route is a 405 with `Allow`. "
        "The schema: /api/schema/ (JSON; YAML with `?format=yaml`)."
    ),
    "VERSION": "1.0.0",
    # 3.1: full JSON Schema (propertyNames, const), to state every rule the API checks.
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # validatorUrl: Swagger UI would otherwise show a badge loaded from validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

# --- API limits and error handling ---------------------------------------------------------------
# Bodies are refused before they can reach a task: larger than this many bytes (413, on Content-Length
# before reading, then on the bytes read), or arrays/objects nested deeper than this (400; measured
# without recursion before parsing). Keep the depth well below TASK_MAX_ARGUMENT_DEPTH.
API_MAX_BODY_BYTES = env.get_int(env.API_MAX_BODY_BYTES, 1024 * 1024)
API_MAX_JSON_DEPTH = env.get_int(env.API_MAX_JSON_DEPTH, 32)
API_RETRY_AFTER_SECONDS = 5  # Retry-After of a 503 (broker, database or cache unreachable)
# Per-token rate limit (apps.main.api.ratelimit) and the audit trail (apps.main.api.audit).
API_RATE_LIMIT = env.get_int(env.API_RATE_LIMIT, 600)
API_RATE_LIMIT_WINDOW_SECONDS = env.get_int(env.API_RATE_LIMIT_WINDOW_SECONDS, 60)
API_AUDIT_RETENTION_DAYS = env.get_int(env.API_AUDIT_RETENTION_DAYS, 90)
REST_FRAMEWORK["NUM_PROXIES"] = env.get_int(env.API_NUM_PROXIES, 0)
REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"] = ["apps.main.api.parsers.LimitedJSONParser"]
REST_FRAMEWORK["EXCEPTION_HANDLER"] = "apps.main.api.errors.exception_handler"
SPECTACULAR_SETTINGS["PREPROCESSING_HOOKS"] = ["apps.main.api.schema.canonical_paths_only"]
# JSON errors on /api/, the probes and /metrics, whatever raised them; right after the metrics middleware.
MIDDLEWARE.insert(MIDDLEWARE.index("apps.main.metrics.web.RequestMetricsMiddleware") + 1,
                  "apps.main.api.middleware.JsonErrorsMiddleware")
# Error reports (the DEBUG page, admin e-mails) hide secrets by name and any URL's password by value.
DEFAULT_EXCEPTION_REPORTER_FILTER = "apps.main.reporting.SecretHidingFilter"
DEFAULT_EXCEPTION_REPORTER = "apps.main.reporting.SecretHidingReporter"

# --- Working directories of the tasks -----------------------------------------------------------
TEMP_FILES_DIR = Path(env.get(env.TEMP_FILES_DIR, str(DATA_DIR / "tmp")))
TEMP_FILE_MAX_AGE_SECONDS = env.get_int("TEMP_FILE_MAX_AGE_SECONDS", 24 * 3600)
REPORTS_DIR = Path(env.get(env.REPORTS_DIR, str(DATA_DIR / "reports")))
BACKUP_DIR = Path(env.get(env.BACKUP_DIR, str(DATA_DIR / "backups")))
BACKUP_KEEP = env.get_int("BACKUP_KEEP", 7)
BACKUP_MODELS = ["main.UserAction", "main.Notification", "main.AnalyticsSnapshot",
                 "django_celery_beat.PeriodicTask"]
WEBHOOK_TIMEOUT_SECONDS = float(env.get("WEBHOOK_TIMEOUT_SECONDS", "10"))
EMAIL_BACKEND = env.get("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
DEFAULT_FROM_EMAIL = env.get("DEFAULT_FROM_EMAIL", "celery-stack@localhost")

# --- Celery: the seed's figures, then what production needs -------------------------------------
CELERY_BROKER_URL = env.get(env.BROKER_URL) or REDIS_URL or f"sqla+sqlite:///{DATA_DIR / 'broker.sqlite3'}"
CELERY_RESULT_BACKEND = "apps.main.results_backend:ResilientDatabaseBackend"  # django-db, retrying
# Storing a state retries through a database restart: 0.1 s doubling to 5 s, about 2 minutes in all.
CELERY_RESULT_BACKEND_ALWAYS_RETRY = True
CELERY_RESULT_BACKEND_BASE_SLEEP_BETWEEN_RETRIES_MS = 100
CELERY_RESULT_BACKEND_MAX_SLEEP_BETWEEN_RETRIES_MS = 5000
CELERY_RESULT_BACKEND_MAX_RETRIES = 30
CELERY_CACHE_BACKEND = "django-cache"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_EVENT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_BEAT_SCHEDULER = "apps.main.beat:LeasedDatabaseScheduler"
CELERY_TASK_ROUTES = TASK_ROUTES
CELERY_TASK_DEFAULT_QUEUE = DEFAULT_QUEUE
CELERY_TASK_CREATE_MISSING_QUEUES = True
CELERY_WORKER_CONCURRENCY = 4
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # a pool's own --prefetch-multiplier overrides it
# A pool process is replaced after this many tasks, or once its resident memory passed the second figure
# (KiB; checked after each task, the task finishes first). Memory is the real leak guard: replacing a
# process every 1000 short tasks cost ~10 % of a pool's throughput (docs/benchmarks.md).
CELERY_WORKER_MAX_TASKS_PER_CHILD = env.get_int("CELERY_WORKER_MAX_TASKS_PER_CHILD", 10_000)
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env.get_int("CELERY_WORKER_MAX_MEMORY_PER_CHILD", 200 * 1024)
CELERY_TASK_SOFT_TIME_LIMIT = 60
CELERY_TASK_TIME_LIMIT = 120
CELERY_TASK_DEFAULT_MAX_RETRIES = 3
CELERY_TASK_DEFAULT_RETRY_DELAY = 60
CELERY_RESULT_EXPIRES = 3600
CELERY_RESULT_EXTENDED = True  # store name, args, queue: the API and reports read them
# Acknowledge after the task ran, and requeue it when its worker dies: a killed pod loses nothing.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Retry policy (apps.main.retry): exponential backoff with full jitter, capped. The cap is also the
# longest countdown any of our tasks is given.
RETRY_BACKOFF_MAX = env.get_int("RETRY_BACKOFF_MAX", 600)
# A message stays in Redis' "unacked" set from delivery until its ack (acks_late: after the task ran),
# and a worker that dies hard (kill -9, OOM, node loss) leaves its reserved messages there until the
# visibility timeout redelivers them. So the timeout must exceed the longest time a live worker holds
# a message — its countdown, then waiting behind the tasks prefetched before it, then running up to
# the hard time limit — and should not be longer: that is how long a dead worker's tasks wait.
VISIBILITY_TIMEOUT_MARGIN = 60
# Each pool sets its own --prefetch-multiplier (apps.main.queues.WorkerPool); every worker sweeps the
# one shared `unacked` hash, so the timeout must cover the largest multiplier of any pool.
PREFETCH_MULTIPLIER_MAX = max(CELERY_WORKER_PREFETCH_MULTIPLIER,
                              env.get_int(env.PREFETCH_MULTIPLIER_MAX, MAX_PREFETCH_MULTIPLIER))
MIN_VISIBILITY_TIMEOUT = (
    RETRY_BACKOFF_MAX + (PREFETCH_MULTIPLIER_MAX + 1) * CELERY_TASK_TIME_LIMIT + VISIBILITY_TIMEOUT_MARGIN
)
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
if redis_connection.scheme(CELERY_BROKER_URL) in ("redis", "rediss", redis_connection.SENTINEL_SCHEME):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.get_int(env.VISIBILITY_TIMEOUT, MIN_VISIBILITY_TIMEOUT),
        # Every live worker sweeps for expired reservations every 10 s (kombu's default is ~100 s).
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "health_check_interval": 25,
        # One list key per queue unless message priorities are asked for: a worker on one key takes
        # each message atomically (apps.main.redis_transport); kombu's default is [0, 3, 6, 9].
        "priority_steps": env.get_int_list(env.BROKER_PRIORITY_STEPS, [0]),
    }
    if prefix := env.get(env.BROKER_KEY_PREFIX):
        CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = prefix
    if redis_connection.is_sentinel(CELERY_BROKER_URL):  # kombu's Sentinel options; production requires the name
        CELERY_BROKER_TRANSPORT_OPTIONS["master_name"] = REDIS_SENTINEL_MASTER
        if REDIS_SENTINEL_PASSWORD:
            CELERY_BROKER_TRANSPORT_OPTIONS["sentinel_kwargs"] = {"password": REDIS_SENTINEL_PASSWORD}
    # Publishes acknowledged by replicas (WAIT) before they return: off unless asked for (docs/reliability.md).
    if wait_replicas := env.get_int(env.BROKER_PUBLISH_WAIT_REPLICAS, 0):
        CELERY_BROKER_TRANSPORT_OPTIONS["publish_wait_replicas"] = wait_replicas
        if wait_ms := env.get(env.BROKER_PUBLISH_WAIT_TIMEOUT_MS):
            CELERY_BROKER_TRANSPORT_OPTIONS["publish_wait_timeout_ms"] = int(wait_ms)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BROKER_POOL_LIMIT = env.get_int("CELERY_BROKER_POOL_LIMIT", 10)
# Task events are a pool's choice, on its command line (--task-events; WorkerPool.task_events,
# chart: workers.<pool>.taskEvents): a worker started without it sends none.
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_TASK_SEND_SENT_EVENT = True
# STARTED rows only for the long tasks that ask for them (track_started=True in tasks.py).
CELERY_TASK_TRACK_STARTED = False
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# Soft shutdown (Celery >= 5.5): seconds a worker keeps running tasks after a cold-shutdown signal.
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = float(env.get("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", "0"))
CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE = env.get_bool("CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE")
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

RETRY_POLICIES = {
    "send_notification": {"max_retries": 3, "base_delay": 60},
    "process_user_action": {"max_retries": 2, "base_delay": 30},
}

# Poison messages (apps.main.delivery): arguments nested deeper than this are refused by the worker
# before they reach pickle; a message redelivered this many times without an ack is dead-lettered.
TASK_MAX_ARGUMENT_DEPTH = env.get_int(env.TASK_MAX_ARGUMENT_DEPTH, 100)
TASK_MAX_DELIVERIES = env.get_int(env.TASK_MAX_DELIVERIES, 3)

BEAT_LEASE_TTL = env.get_int(env.BEAT_LEASE_TTL, 30)

FLOWER_MAX_TASKS = env.get_int(env.FLOWER_MAX_TASKS, 10000)
# Save last_run_at after every periodic send: a beat taking over the lease never resends.
CELERY_BEAT_SYNC_EVERY = 1

# --- Logging: JSON lines on stdout (what Kubernetes collects) -----------------------------------
LOG_LEVEL = (env.get(env.LOG_LEVEL, "INFO") or "INFO").upper()
LOGGING: dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "apps.main.logging.JsonFormatter"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "json"}},
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "celery": {"level": LOG_LEVEL},
    },
}
# No record carries a secret, whichever handler writes it (apps.main.logging).
from apps.main.logging import mask_secrets_in_records  # noqa: E402

mask_secrets_in_records()

# --- Sentry, only when a DSN is given ------------------------------------------------------------
SENTRY_DSN = env.get(env.SENTRY_DSN)
if SENTRY_DSN:
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=SENTRY_DSN,
        integrations=[DjangoIntegration(), CeleryIntegration(monitor_beat_tasks=True)],
        traces_sample_rate=float(env.get("SENTRY_TRACES_SAMPLE_RATE", "0") or 0),
        send_default_pii=False,
        environment=env.get("SENTRY_ENVIRONMENT", "production"),
    )

# --- Encrypted task payloads (apps.main.payload_encryption; docs/security.md) --------------------
# Importing it registers the serializer with kombu: before Celery resolves CELERY_ACCEPT_CONTENT.
from apps.main import payload_encryption  # noqa: E402

# Fernet keys, the first encrypts, all decrypt. Production refuses to start without them (production.py);
# elsewhere a key derived from SECRET_KEY, the same in every process of one setup (never a random one: the
# web app, workers and beat would not read each other's messages).
PAYLOAD_ENCRYPTION_KEYS = payload_encryption.parse_keys(env.get_list(env.PAYLOAD_ENCRYPTION_KEYS)) or [
    payload_encryption.development_key(SECRET_KEY)
]
# The encrypted tasks' serializer and hidden argsrepr are in their routes (apps.main.queues.TASK_ROUTES).
CELERY_ACCEPT_CONTENT = [*CELERY_ACCEPT_CONTENT, payload_encryption.SERIALIZER]

# --- Large task payloads (apps.main.large_payloads, apps.main.payload_claims; docs/payloads.md) -----
# Importing payload_claims registers the claim reference's serializer: before Celery resolves CELERY_ACCEPT_CONTENT.
from apps.main import large_payloads, payload_claims  # noqa: E402

CELERY_ACCEPT_CONTENT = [*CELERY_ACCEPT_CONTENT, payload_claims.SERIALIZER]
# A task body (serialized, before compression) larger than this is refused when published (the API answers 413).
# 8x the largest API body: JSON escaping (non-ASCII text, exponents) and encryption's base64 make a task body larger
# than the request that carried its arguments, but not that much; a larger one is still a 413, naming this limit.
TASK_MAX_PAYLOAD_BYTES = env.get_int(env.TASK_MAX_PAYLOAD_BYTES, 8 * API_MAX_BODY_BYTES)
# Bodies above this are compressed with TASK_COMPRESSION (and every body of queues.COMPRESSED_TASKS); a compressed
# body is kept only when smaller.
TASK_COMPRESSION_THRESHOLD_BYTES = env.get_int(env.TASK_COMPRESSION_THRESHOLD_BYTES, 32 * 1024)
# Bodies still above this after compression are stored in the database; the message carries a reference.
TASK_CLAIM_CHECK_BYTES = env.get_int(env.TASK_CLAIM_CHECK_BYTES, 256 * 1024)
# A stored body no message or pending dead letter took (failed publish, purged queue) is deleted after this long.
TASK_CLAIM_RETENTION_HOURS = env.get_int(env.TASK_CLAIM_RETENTION_HOURS, 7 * 24)
try:
    TASK_COMPRESSION = large_payloads.codec(env.get(env.TASK_COMPRESSION, "zlib") or "zlib")
except ValueError as _error:
    # One line, no traceback, in every process (web, worker, beat, manage.py): a configuration error.
    sys.stderr.write(f"settings: {_error}\n")
    raise SystemExit(2) from None
