"""Production: every connection comes from the environment; missing ones stop start-up at once."""

import sys

from apps.main import payload_encryption, redis_connection
from apps.main.queues import ENCRYPTED_TASKS
from portfolio_site import environment as env

_REQUIRED = {
    env.REDIS_URL: "the broker and cache, e.g. redis://:PASSWORD@redis:6379/0 (rediss:// for TLS), or through "
                   "Redis Sentinel sentinel://:PASSWORD@sentinel-1:26379/0;sentinel://:PASSWORD@sentinel-2:26379/0;… "
                   "(PASSWORD: the data nodes'; with REDIS_SENTINEL_MASTER, and REDIS_SENTINEL_PASSWORD when the "
                   "sentinels have one)",
    env.DATABASE_URL: "the database, e.g. postgres://USER:PASSWORD@postgres:5432/celery_stack",
    env.SECRET_KEY: "a long random string for Django's signing",
}
if ENCRYPTED_TASKS:  # no development key here: every process must be given the same keys
    _REQUIRED[env.PAYLOAD_ENCRYPTION_KEYS] = (
        f"the Fernet keys of the encrypted task payloads ({', '.join(sorted(ENCRYPTED_TASKS))}), comma "
        "separated, the newest first (docs/security.md); a new key: python -c 'from cryptography.fernet "
        "import Fernet; print(Fernet.generate_key().decode())'"
    )
_SENTINEL_URLS = [name for name in (env.REDIS_URL, env.BROKER_URL) if redis_connection.is_sentinel(env.get(name))]
if _SENTINEL_URLS:
    _REQUIRED[env.REDIS_SENTINEL_MASTER] = f"the master name the sentinels monitor ({_SENTINEL_URLS[0]} is sentinel://)"
for _name, _meaning in _REQUIRED.items():
    if not env.get(_name):
        # One line, no traceback: this is a configuration error, not a bug.
        sys.stderr.write(f"production settings: {_name} is not set; it must be {_meaning}\n")
        raise SystemExit(2)
try:
    payload_encryption.parse_keys(env.get_list(env.PAYLOAD_ENCRYPTION_KEYS))
    for _name in _SENTINEL_URLS:
        try:
            redis_connection.SentinelURL.parse(env.get(_name) or "")
        except ValueError as _error:
            raise ValueError(f"{_name}: {_error}") from None
except ValueError as _error:
    sys.stderr.write(f"production settings: {_error}\n")
    raise SystemExit(2) from None

from portfolio_site.settings.base import *  # noqa: E402, F403
from portfolio_site.settings.base import CELERY_BROKER_URL  # noqa: E402

if CELERY_BROKER_URL.startswith("sqla+"):
    sys.stderr.write("production settings: the SQLite broker fallback is for development only\n")
    raise SystemExit(2)

DEBUG = False
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.get_int("DJANGO_SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env.get_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
# TLS ends at the Ingress, which redirects http to https; kubelet probes and in-cluster clients
# (helm test, exporter) reach pods over plain HTTP and must not be redirected.
SECURE_SSL_REDIRECT = env.get_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_SSL_REDIRECT else ["security.W008"]
if not SECURE_HSTS_PRELOAD:
    SILENCED_SYSTEM_CHECKS.append("security.W021")
