"""kombu's Redis transport, keeping one Redis client per channel instead of making one per command.

kombu's ``Channel.conn_or_acquire`` builds a new ``redis.Redis`` for every command it runs on the
channel's connection pool: the QoS bookkeeping of each delivered message (``unacked`` hash and index)
and its ack, every publish. With redis-py 8 a client costs ~100 µs to build (it copies a table of
~170 response callbacks), so a worker's main process spent ~200 µs of its ~1.2 ms per task making
clients (py-spy: 12-15 % of its samples; docs/benchmarks.md). A client holds no connection of its
own — every command checks one out of the pool — so one client per channel and pool is equivalent;
it is rebuilt when kombu replaces the channel's pool (after a connection loss). Pipelines and the
channel's asynchronous client (BRPOP, pub/sub) stay as kombu makes them.

``install()`` registers it for ``redis://`` and ``rediss://`` broker URLs (``portfolio_site.celery``);
``sentinel://`` keeps kombu's own transport.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES, _transport_cache
from kombu.transport import redis as kombu_redis

SCHEMES = ("redis", "rediss")


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Make ``redis://`` and ``rediss://`` URLs use this transport in this process (before any connection)."""
    for scheme in SCHEMES:
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
        _transport_cache.pop(scheme, None)
