"""Helpers of the app tests that run real processes: manage.py commands, extra databases, free Redis DBs."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

from embedded.supervisor import APP_DIR

__all__ = [
    "APP_DIR", "LineReader", "manage", "read_json_lines", "redis_db_url", "scratch_database",
]


def manage(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python manage.py ARGS`` in app/, as the chart's containers run it."""
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=APP_DIR, env=env, capture_output=True, text=True,
        timeout=timeout,
    )


def redis_db_url(url: str, db: int) -> str:
    """The same Redis server, another database index: a broker no test worker listens on."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def database_url(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _admin_dsn(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))


@contextmanager
def scratch_database(server_url: str, prefix: str = "scratch") -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of ``server_url``; dropped afterwards. Yields its URL."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_admin_dsn(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(server_url, name)
    finally:
        with psycopg.connect(_admin_dsn(server_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class LineReader:
    """Reads a process's output in a thread so the test can wait for a line without blocking forever."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait_for_line(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if needle in line:
                        return line
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    state = "output ended" if self._closed else f"timed out after {timeout:.0f}s"
                    raise AssertionError(f"{state} before {needle!r}; output:\n" + self.text()[-4000:])
                self._changed.wait(remaining)

    def text(self) -> str:
        return "\n".join(self.lines)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def read_json_lines(path: Path) -> list[dict]:
    """The JSON objects of a log file (lines that are not JSON, e.g. celery's banner, are skipped)."""
    import json

    entries = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))  # a line that looks like JSON and is not is a bug
    return entries
