"""The project's Redis transport (apps.main.redis_transport) on a real Valkey: kombu's semantics, one client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib
from kombu import Connection

from apps.main import redis_transport
from portfolio_site.celery import app

pytestmark = pytest.mark.live

CYCLES = 100


@pytest.fixture
def clients_built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every redis.Redis constructed while the test runs (counted, still built for real)."""
    built: list[Any] = []
    original = redis_lib.Redis.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(redis_lib.Redis, "__init__", counting)
    yield built


def test_redis_urls_use_the_project_transport(redis_url: str) -> None:
    with app.connection_for_write(redis_url) as connection:
        assert isinstance(connection.transport, redis_transport.Transport)
    assert isinstance(Connection("sentinel://127.0.0.1:26379").transport, redis_transport.kombu_redis.SentinelTransport)


def _publish_get_ack(channel: Any, queue: str, body: str) -> None:
    channel.basic_publish(channel.prepare_message(body), exchange="", routing_key=queue)
    message = channel.basic_get(queue, no_ack=False)  # QoS: the message enters the unacked hash
    assert message is not None and message.body == body.encode()
    message.ack()  # QoS: it leaves the hash and its index


def test_a_channel_builds_one_client_not_one_per_command(redis_url: str, redis_client: redis_lib.Redis,
                                                          clients_built: list[Any]) -> None:
    queue = f"transport-{uuid.uuid4().hex[:8]}"
    with app.connection_for_write(redis_url) as connection:
        channel = connection.channel()
        try:
            for i in range(CYCLES):
                _publish_get_ack(channel, queue, f"m{i}")
            # kombu makes a client for each of the 3 commands of a cycle; here one serves them all
            # (plus the channel's asynchronous client, made once).
            assert len(clients_built) <= 2, f"{len(clients_built)} Redis clients built for {CYCLES} cycles"
            assert redis_client.llen(queue) == 0
            assert redis_client.hlen(channel.unacked_key) == 0, "an acked message stayed in the unacked hash"
            assert redis_client.zcard(channel.unacked_index_key) == 0

            # After a connection loss kombu drops the channel's pool; the client follows the new one.
            old_pool = channel.pool
            channel._pool = None
            _publish_get_ack(channel, queue, "after a new pool")
            assert channel._create_client().connection_pool is channel.pool is not old_pool
        finally:
            channel.close()
