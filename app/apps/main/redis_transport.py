"""kombu's Redis transport, keeping one Redis client per channel instead of making one per command.

kombu's ``Channel.conn_or_acquire`` builds a new ``redis.Redis`` for every command it runs on the
channel's connection pool: every publish and, in a worker's main process, two per task with acks_late
(the ``unacked`` hash and index written on delivery, removed on the ack). With redis-py 8 a client costs
~100 µs to build (it copies a table of ~170 response callbacks): py-spy put it at 12-15 % of the main
process's samples, and its CPU per task went from ~1.35 to ~1.08 ms without it (docs/benchmarks.md).
A client holds no connection of its own — every command checks one out of the pool — so one client per
channel and pool is equivalent; it is rebuilt when kombu replaces the channel's pool (after a connection
loss). Pipelines and the channel's asynchronous client (BRPOP, pub/sub) stay as kombu makes them.

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
