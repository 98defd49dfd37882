"""pytest plugin (``-p tests.support.backends``): real Redis and PostgreSQL for the whole session.

Django reads REDIS_URL and DATABASE_URL when pytest-django loads the settings, which happens before
any conftest is imported; this hook wraps that step, so the servers are up and the variables set
first. TEST_REDIS_URL / TEST_DATABASE_URL point the suite at servers of your own instead.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

_started: list = []
_data_dir: Path | None = None


def _start_backends() -> None:
    global _data_dir
    from embedded import EmbeddedPostgres, EmbeddedValkey

    _data_dir = Path(tempfile.mkdtemp(prefix="celery-stack-tests-"))
    os.environ["APP_DATA_DIR"] = str(_data_dir / "app")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portfolio_site.settings.test")
    # The session's API token, random so that the leak check (tests.support.leaks) can search for it: the test
    # settings and every subprocess (live_env) read it from here, and the test database stores it.
    os.environ["API_TOKEN"] = secrets.token_urlsafe(24)
    redis_url = os.environ.get("TEST_REDIS_URL")
    if not redis_url:
        _started.append(EmbeddedValkey(_data_dir / "valkey").start())
        redis_url = _started[-1].url
    database_url = os.environ.get("TEST_DATABASE_URL")
    if not database_url:
        _started.append(EmbeddedPostgres(_data_dir / "postgres").start())
        database_url = _started[-1].url
    os.environ["REDIS_URL"] = redis_url
    os.environ["DATABASE_URL"] = database_url


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]):
    import sys

    app_dir = str(Path(__file__).resolve().parents[2] / "app")
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    _start_backends()
    return (yield)


def data_dir() -> Path | None:
    """Where this session keeps its servers' data and logs and APP_DATA_DIR (None before the plugin ran)."""
    return _data_dir


def pytest_unconfigure(config: pytest.Config) -> None:
    while _started:
        _started.pop().stop()
    if _data_dir is not None:
        shutil.rmtree(_data_dir, ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> list[str]:
    kinds = ", ".join(type(server).__name__ for server in _started) or "from TEST_* URLs"
    return [f"backends: {kinds}; data under {_data_dir}"]
