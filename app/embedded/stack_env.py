"""The running local stack's connection settings, shared with commands run in another terminal.

start_celery_services.py writes ``.local/stack.env`` (``$LOCAL_STACK_DIR/stack.env`` if set) once its
servers are up and removes it on stop; development settings read it for any variable the environment
does not set, so that ``python manage.py test_celery`` finds the same Redis and database as the stack.
Those commands first ask ``no_stack_reason()``: without a stack they would fall back to SQLite files
or print a long traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

SHARED_KEYS = ("REDIS_URL", "DATABASE_URL", "API_TOKEN", "FLOWER_BASIC_AUTH", "APP_DATA_DIR", "LOCAL_ADMIN_PASSWORD",
               "WEB_URL", "FLOWER_URL", "WORKER_METRICS_URLS", "PAYLOAD_ENCRYPTION_KEYS")

NO_STACK = "no stack running — start `make up` first"
#: Exit code of a command that needs the stack and finds none.
NO_STACK_EXIT = 2

#: Variables that load_defaults() took from the stack file (not from the environment).
_loaded: set[str] = set()


def local_dir() -> Path:
    """The stack's state directory: $LOCAL_STACK_DIR (tests use a temporary one), else <repo>/.local."""
    from portfolio_site.environment import LOCAL_STACK_DIR, get

    return Path(get(LOCAL_STACK_DIR) or Path(__file__).resolve().parent.parent.parent / ".local")


def stack_env_path() -> Path:
    return local_dir() / "stack.env"


def write(env: dict[str, str], path: Path | None = None) -> None:
    path = path or stack_env_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{key}={env[key]}\n" for key in SHARED_KEYS if env.get(key)))
    path.chmod(0o600)


def read(path: Path | None = None) -> dict[str, str]:
    """The stack file's variables; empty if there is none."""
    path = path or stack_env_path()
    try:
        text = path.read_text()
    except OSError:
        return {}
    pairs = (line.partition("=") for line in text.splitlines())
    return {key: value for key, sep, value in pairs if sep and key in SHARED_KEYS}


def load_defaults(path: Path | None = None) -> None:
    """Set each variable of the stack file that the environment leaves unset."""
    for key, value in read(path).items():
        if not os.environ.get(key):
            os.environ[key] = value
            _loaded.add(key)


def _from_environment(name: str) -> str | None:
    """A variable as the user's environment sets it (not as load_defaults() filled it in)."""
    from portfolio_site.environment import get

    return None if name in _loaded else get(name)


def redis_answers(url: str, timeout: float) -> bool:
    """The Redis of ``url`` answers a PING (through its sentinels for a sentinel:// URL: the environment names the
    master and the sentinels' password)."""
    import redis

    from apps.main.redis_connection import connect
    from portfolio_site import environment as env

    try:
        client = connect(url, sentinel_master=env.get(env.REDIS_SENTINEL_MASTER),
                         sentinel_password=env.get(env.REDIS_SENTINEL_PASSWORD),
                         socket_connect_timeout=timeout, socket_timeout=timeout)
        with client:
            return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):  # ValueError: a sentinel:// URL without its master name
        return False


def no_stack_reason(timeout: float = 2.0, path: Path | None = None) -> str | None:
    """One line saying why the commands that need a running stack cannot work; None if they can.

    A broker the environment names is the user's choice: used as it is (the SQLite fallback too), and
    only reported if it is a Redis that does not answer. Otherwise the stack file must name a Redis that
    answers within ``timeout`` seconds; one left behind by a killed stack does not.
    """
    from portfolio_site.environment import BROKER_URL, REDIS_URL

    if _from_environment(BROKER_URL):
        return None
    if url := _from_environment(REDIS_URL):
        if redis_answers(url, timeout):
            return None
        return f"REDIS_URL ({urlsplit(url).netloc.rpartition('@')[2]}) does not answer within {timeout:.0f}s"
    url = read(path).get(REDIS_URL)
    if url and redis_answers(url, timeout):
        return None
    return NO_STACK


def remove(path: Path | None = None) -> None:
    path = path or stack_env_path()
    path.unlink(missing_ok=True)
