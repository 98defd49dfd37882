"""The running local stack's connection settings, shared with commands run in another terminal.

start_celery_services.py writes ``.local/stack.env`` (``$LOCAL_STACK_DIR/stack.env`` if set) once its
servers are up and removes it on stop; development settings read it for any variable the environment
does not set, so that ``python manage.py test_celery`` finds the same Redis and database as the stack.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_KEYS = ("REDIS_URL", "DATABASE_URL", "API_TOKEN", "FLOWER_BASIC_AUTH", "APP_DATA_DIR")


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


def load_defaults(path: Path | None = None) -> None:
    """Set each variable of the stack file that the environment leaves unset."""
    path = path or stack_env_path()
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key in SHARED_KEYS and not os.environ.get(key):
            os.environ[key] = value


def remove(path: Path | None = None) -> None:
    path = path or stack_env_path()
    path.unlink(missing_ok=True)
