"""The one way the app gets a Redis client: for whichever node is the primary now.

``redis://`` / ``rediss://`` / ``unix://`` URLs name that server. A ``sentinel://`` URL is kombu's form,
``sentinel://:PASSWORD@host1:26379/0;sentinel://:PASSWORD@host2:26379/0;…``: the sentinels to ask, and the
password and database of the data nodes. Beside it, REDIS_SENTINEL_MASTER names the master the sentinels monitor
and REDIS_SENTINEL_PASSWORD is the sentinels' own password (their ``requirepass``), if they have one.

A client for a sentinel:// URL is redis-py's ``Sentinel(...).master_for(master)``: its connections ask the
sentinels where the primary is whenever they connect, and a connection error or a READONLY reply (a demoted
primary) drops them, so every user of this module follows a failover by itself, without a restart.

A primary with ``min-replicas-to-write`` refuses writes (NOREPLICAS) while too few replicas are connected, e.g.
just after a failover. redis-py makes that a plain ResponseError, which stops a Celery worker ("Unrecoverable
error"); importing this module makes it ``NoGoodReplicas``, a connection error, in this process: a worker reconnects
with Celery's backoff until the replicas are back, a publisher retries and then reports the broker unavailable (the
API's 503), beat pauses.

Importable without Django set up: the local stack's checks (embedded.stack_env) call ``connect`` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis._parsers.base import BaseParser
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "sentinel"
REDIS_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_PORT = 26379
#: Longest socket timeouts towards a sentinel (the caller's when shorter): a sentinel that does not answer must not
#: hold up the search for the primary, which asks the next one. Short, because the sentinel in a deleted pod does
#: not refuse: its address is gone, so a connection to it (or a reply on a pooled one) waits for the whole timeout —
#: on the local cluster a deleted primary's pod cost each client's first lookup 5 s with the earlier 5 s (measured).
#: A sentinel on the same network connects within milliseconds and answers from memory.
SENTINEL_CONNECT_TIMEOUT_SECONDS = 1.0
SENTINEL_TIMEOUT_SECONDS = 2.0


class NoGoodReplicas(redis.exceptions.ConnectionError):
    """NOREPLICAS: the primary takes no write while fewer replicas than its ``min-replicas-to-write`` are in sync."""


# redis-py turns error replies into exceptions through this one table (every parser, hiredis too).
BaseParser.EXCEPTION_CLASSES.setdefault("NOREPLICAS", NoGoodReplicas)


def scheme(url: str | None) -> str:
    return url.split("://", 1)[0].lower() if url and "://" in url else ""


def is_sentinel(url: str | None) -> bool:
    return scheme(url) == SENTINEL_SCHEME


@dataclass(frozen=True)
class SentinelURL:
    """What a sentinel:// URL says: the sentinels, and how to log in to the data nodes (as kombu reads it: the
    credentials and database of the first part)."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None

    FORM = "sentinel://[:PASSWORD@]HOST[:PORT][/DB], one per sentinel, joined with ';'"

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        try:
            parts = [urlsplit(part.strip()) for part in url.split(";") if part.strip()]
            if not parts or any(part.scheme.lower() != SENTINEL_SCHEME or not part.hostname for part in parts):
                raise ValueError(url)
            first, db = parts[0], parts[0].path.strip("/")
            return cls(
                sentinels=tuple((part.hostname or "", part.port or SENTINEL_PORT) for part in parts),
                db=int(db) if db else 0,
                username=unquote(first.username) if first.username else None,
                password=unquote(first.password) if first.password else None,
            )
        except ValueError:  # also a port or a database that is no number
            raise ValueError(f"not a sentinel URL: it must be {cls.FORM}") from None


def sentinel_node_options(given: dict[str, Any] | None = None, *, password: str | None = None,
                          socket_timeout: float | None = None,
                          socket_connect_timeout: float | None = None) -> dict[str, Any]:
    """Connection options for the sentinels themselves (redis-py's and kombu's ``sentinel_kwargs``).

    Never retried: redis-py's default retries a refused connection ten times with backoff (about 2.5 s), and a
    sentinel that died with the primary (a sidecar in its pod) would delay finding the new one by that much —
    the search asks the next sentinel instead. Timeouts always: given explicitly, redis-py copies none."""
    options: dict[str, Any] = {
        "socket_timeout": min(socket_timeout or SENTINEL_TIMEOUT_SECONDS, SENTINEL_TIMEOUT_SECONDS),
        "socket_connect_timeout": min(socket_connect_timeout or SENTINEL_CONNECT_TIMEOUT_SECONDS,
                                      SENTINEL_CONNECT_TIMEOUT_SECONDS),
        "retry": Retry(NoBackoff(), 0),
    }
    if password:
        options["password"] = password
    return {**options, **(given or {})}


def connect(url: str, *, sentinel_master: str | None = None, sentinel_password: str | None = None,
            **options: Any) -> redis.Redis:
    """A client for the primary ``url`` leads to; ``options`` are redis-py's connection options (timeouts, retry)."""
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    if not sentinel_master:
        raise ValueError("REDIS_SENTINEL_MASTER is not set: a sentinel:// URL needs the name of the master "
                         "the sentinels monitor")
    parsed = SentinelURL.parse(url)
    sentinels = Sentinel(
        parsed.sentinels,
        sentinel_kwargs=sentinel_node_options(password=sentinel_password,
                                              socket_timeout=options.get("socket_timeout"),
                                              socket_connect_timeout=options.get("socket_connect_timeout")),
    )
    credentials = {"username": parsed.username, "password": parsed.password}
    return sentinels.master_for(sentinel_master, db=parsed.db, **{**credentials, **options})


def client(url: str, **options: Any) -> redis.Redis:
    """``connect`` with the settings' master name and sentinel password: what the app's code calls."""
    from django.conf import settings

    return connect(url, sentinel_master=getattr(settings, "REDIS_SENTINEL_MASTER", None),
                   sentinel_password=getattr(settings, "REDIS_SENTINEL_PASSWORD", None), **options)


def broker_redis_url(broker_url: str | None) -> str | None:
    """The broker's Redis as a client URL, or None when the broker is not Redis: a sentinel:// URL whole (every
    part names a sentinel), the first of a redis:// failover list (``;``)."""
    if is_sentinel(broker_url):
        return broker_url
    first = (broker_url or "").split(";")[0].strip()
    return first if scheme(first) in REDIS_SCHEMES else None


def app_redis_url() -> str | None:
    """The Redis the app keeps its own keys on (dead-letter spool, clean-stop markers): the broker's when the
    broker is Redis, else REDIS_URL, else None."""
    from django.conf import settings

    broker = broker_redis_url(getattr(settings, "CELERY_BROKER_URL", None))
    return broker or getattr(settings, "REDIS_URL", None) or None
