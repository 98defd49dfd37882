"""The dead-letter spool: where a dead letter waits while the database cannot take it.

``deadletter.record`` pushes the letter, sanitised, as one JSON object onto a Redis list on the
broker's Redis (``SPOOL_KEY``); without Redis, or when Redis does not answer either, it appends the
letter to a JSON-lines file under ``DATA_DIR``. ``deadletter.flush_spool`` stores the spooled letters
once the database answers. Who flushes: every worker (``DeadLetterSpoolFlusher`` below, a consumer
step), the ``health_check`` task and ``manage.py flush_dead_letters``.

Flushing never stores a letter twice: each spooled letter has a ``spool_id`` the table holds once, and
a letter stays on a list (Redis) or in a file until it is stored, so a flush that crashes half-way
leaves it to the next flush, which finds it already stored at worst.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import IO, Any, Protocol

import redis
from celery import bootsteps
from django.conf import settings

from apps.main import redis_connection
from apps.main.redis_keys import DEAD_LETTER_SPOOL_KEY as SPOOL_KEY

logger = logging.getLogger(__name__)


#: Letters a flush has taken off the spool and not yet stored; a crashed flush leaves them here and
#: the next flush puts them back on the spool.
PROCESSING_KEY = f"{SPOOL_KEY}:processing"
#: Letters the database refused although it answered (it should not happen: letters are sanitised).
UNSTORABLE_KEY = f"{SPOOL_KEY}:unstorable"
FLUSH_INTERVAL_SECONDS = 30.0
#: A dead letter is spooled while a task fails: never wait long for a Redis that does not answer.
REDIS_TIMEOUT_SECONDS = 5.0


# --- where the spool is ------------------------------------------------------------------------------


_clients: dict[str, redis.Redis] = {}


def redis_client() -> redis.Redis | None:
    """A client of the broker's Redis (redis_connection.app_redis_url), else None."""
    url = redis_connection.app_redis_url()
    if url is None:
        return None
    if url not in _clients:  # one connection pool per process (redis-py renews it after a fork)
        _clients[url] = redis_connection.client(
            url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
    return _clients[url]


def spool_file() -> Path:
    """The fallback spool: one JSON object per line."""
    return Path(settings.DATA_DIR) / "deadletter-spool.jsonl"


def _flushing_file() -> Path:
    return Path(settings.DATA_DIR) / "deadletter-spool.flushing.jsonl"


def _unstorable_file() -> Path:
    return Path(settings.DATA_DIR) / "deadletter-spool.unstorable.jsonl"


def _flush_lock_file() -> Path:
    return Path(settings.DATA_DIR) / "deadletter-spool.lock"


# --- spooling ----------------------------------------------------------------------------------------


def push(payload: str) -> str:
    """Spool one letter (a JSON text on one line); returns where it went: "redis" or "file".

    Raises OSError only when Redis failed (or is not configured) and the file cannot be written.
    """
    client = redis_client()
    if client is not None:
        try:
            client.rpush(SPOOL_KEY, payload)
            return "redis"
        except redis.RedisError as exc:
            logger.error("dead-letter spool: Redis did not take the letter (%s); writing %s", exc, spool_file())
    append_line(spool_file(), payload)
    return "file"


def append_line(path: Path, line: str) -> None:
    """Append a line under an exclusive lock, to the file that has ``path`` now (a flush renames it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with open(path, "a", encoding="utf-8") as stream:
            fcntl.flock(stream, fcntl.LOCK_EX)
            if not _is_current(stream, path):
                continue  # a flush took this file over while we waited for the lock
            stream.write(line + "\n")
            stream.flush()
            os.fsync(stream.fileno())
            return


def _is_current(stream: IO[str], path: Path) -> bool:
    try:
        return os.fstat(stream.fileno()).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as stream:
            return sum(1 for line in stream if line.strip())
    except FileNotFoundError:
        return 0


def pending() -> dict[str, int | None]:
    """Spooled letters by place (None: Redis not configured or not answering)."""
    client = redis_client()
    in_redis: int | None = None
    unstorable: int | None = None
    if client is not None:
        try:
            with client.pipeline(transaction=False) as pipe:
                spooled, taken, refused = pipe.llen(SPOOL_KEY).llen(PROCESSING_KEY).llen(UNSTORABLE_KEY).execute()
            in_redis, unstorable = spooled + taken, refused
        except redis.RedisError as exc:
            logger.warning("dead-letter spool: Redis does not answer: %s", exc)
    return {
        "redis": in_redis,
        "redis_unstorable": unstorable,
        "file": _count_lines(spool_file()) + _count_lines(_flushing_file()),
        "file_unstorable": _count_lines(_unstorable_file()),
    }


def waiting(*, include_taken: bool = False) -> bool:
    """Whether a flush has anything to do: one LLEN (two with ``include_taken``) and a stat."""
    if _has_content(spool_file()) or _has_content(_flushing_file()):
        return True
    client = redis_client()
    if client is None:
        return False
    keys = (SPOOL_KEY, PROCESSING_KEY) if include_taken else (SPOOL_KEY,)
    return any(client.llen(key) for key in keys)


# --- draining, for deadletter.flush_spool ------------------------------------------------------------


#: One spooled letter as its source holds it (Redis: the exact bytes, so LREM finds them again).
Item = str | bytes


class Source(Protocol):
    """Spooled letters handed out one by one; each ends ``done``, ``give_back`` or ``set_aside``."""

    name: str

    def __enter__(self) -> Source: ...
    def __exit__(self, *exc: object) -> None: ...
    def claim(self) -> Item | None: ...
    def done(self, item: Item) -> None: ...
    def give_back(self, item: Item) -> None: ...
    def set_aside(self, item: Item) -> None: ...


class RedisSource:
    """The Redis list: a claimed letter moves to ``PROCESSING_KEY`` (LMOVE) until it is stored."""

    name = "redis"

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def __enter__(self) -> RedisSource:
        # Letters a crashed flush left taken go back to the head of the spool, in their order.
        for _ in range(self.client.llen(PROCESSING_KEY)):
            if self.client.lmove(PROCESSING_KEY, SPOOL_KEY, "RIGHT", "LEFT") is None:
                break
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def claim(self) -> Item | None:
        return self.client.lmove(SPOOL_KEY, PROCESSING_KEY, "LEFT", "RIGHT")

    def done(self, item: Item) -> None:
        self.client.lrem(PROCESSING_KEY, 1, item)

    def give_back(self, item: Item) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.lrem(PROCESSING_KEY, 1, item).lpush(SPOOL_KEY, item).execute()

    def set_aside(self, item: Item) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.lrem(PROCESSING_KEY, 1, item).rpush(UNSTORABLE_KEY, item).execute()


class FileSource:
    """The fallback file, drained by one flusher of the host at a time (a lock file).

    The spool file is renamed to a "flushing" file first, so letters spooled meanwhile go to a new
    file; what the flush does not store is written back to the flushing file for the next flush.
    """

    name = "file"

    def __init__(self) -> None:
        self.items: list[str] = []
        self.position = 0
        self._in_hand = False  # the item last claimed is neither done, given back nor set aside
        self._lock: IO[str] | None = None

    def __enter__(self) -> FileSource:
        lock_path = _flush_lock_file()
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(lock_path, "a")  # held until __exit__
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another flush of this host has it: nothing to do here
            self._release()
            return self
        flushing = _flushing_file()
        if not flushing.exists():
            _take_over(spool_file(), flushing)
        if flushing.exists():
            self.items = [line for line in flushing.read_text(encoding="utf-8").splitlines() if line.strip()]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is None:
            return
        # A flush that broke off holding an item keeps it: storing it again is a no-op at worst.
        start = self.position - 1 if self._in_hand else self.position
        try:
            self._write_back(self.items[start:])
        finally:
            self._release()

    def claim(self) -> Item | None:
        if self._lock is None or self.position >= len(self.items):
            return None
        self.position += 1
        self._in_hand = True
        return self.items[self.position - 1]

    def done(self, item: Item) -> None:
        self._in_hand = False

    def give_back(self, item: Item) -> None:
        self.position -= 1
        self._in_hand = False

    def set_aside(self, item: Item) -> None:
        self._in_hand = False
        append_line(_unstorable_file(), item if isinstance(item, str) else item.decode("utf-8", "replace"))

    def _write_back(self, remaining: list[str]) -> None:
        flushing = _flushing_file()
        if not remaining:
            flushing.unlink(missing_ok=True)
            return
        partial = flushing.with_suffix(".partial")
        partial.write_text("".join(f"{line}\n" for line in remaining), encoding="utf-8")
        partial.replace(flushing)

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing releases the flock
            self._lock = None


def _take_over(spool: Path, flushing: Path) -> None:
    """Rename the spool file while holding its append lock, so no append is cut in half."""
    if not spool.exists():
        return
    with open(spool, "a", encoding="utf-8") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        if not _is_current(stream, spool):
            return
        if spool.stat().st_size:
            spool.replace(flushing)
        else:
            spool.unlink()  # an empty file would make every check think letters are waiting


def sources() -> list[Source]:
    """Where spooled letters may wait: the Redis list (if Redis is configured) and the fallback file."""
    client = redis_client()
    found: list[Source] = [] if client is None else [RedisSource(client)]
    found.append(FileSource())
    return found


# --- the worker's flusher ------------------------------------------------------------------------------


class DeadLetterSpoolFlusher(bootsteps.StartStopStep):
    """Every worker stores spooled dead letters once the database answers again.

    It looks at the spool when the consumer starts (taking back what a crashed flush left) and then
    every ``FLUSH_INTERVAL_SECONDS``: one LLEN when the spool is empty. A flush runs in a thread of
    its own, so a database that does not answer never holds up the consumer's event loop.
    """

    requires = ("celery.worker.consumer.connection:Connection",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        self.timer_ref = None
        self._thread: threading.Thread | None = None
        super().__init__(parent, **kwargs)

    def start(self, parent: Any) -> None:
        self._check(include_taken=True)
        self.timer_ref = parent.timer.call_repeatedly(FLUSH_INTERVAL_SECONDS, self._check)

    def stop(self, parent: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def _check(self, include_taken: bool = False) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        try:
            if not waiting(include_taken=include_taken):
                return
        except redis.RedisError as exc:
            logger.warning("dead-letter spool: cannot look at the spool: %s", exc)
            return
        self._thread = threading.Thread(target=_flush_in_thread, name="deadletter-spool-flush", daemon=True)
        self._thread.start()


def _flush_in_thread() -> None:
    from django.db import connections

    from apps.main.deadletter import flush_spool

    try:
        flush_spool(limit=None)
    except Exception:
        logger.exception("dead-letter spool: flush failed")
    finally:
        with contextlib.suppress(Exception):
            connections.close_all()  # this thread's connections only; the thread ends here

