"""The project's Redis transport (apps.main.redis_transport) on a real Valkey: kombu's semantics, one client."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib
from kombu import Connection
from kombu import Queue as KQueue

from apps.main import redis_transport
from embedded.network import wait_until
from embedded.supervisor import APP_DIR
from portfolio_site.celery import app
from tests.support.timeouts import scaled

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
    # sentinel:// gets the same channel on kombu's Sentinel pool (tests/app/test_sentinel.py runs it for real).
    sentinel = Connection("sentinel://127.0.0.1:26379").transport
    assert isinstance(sentinel, redis_transport.SentinelTransport)
    assert isinstance(sentinel, redis_transport.kombu_redis.SentinelTransport)
    assert issubclass(sentinel.Channel, redis_transport.Channel)


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


# --- atomic delivery: BLMOVE into a landing list, then one script into the unacked hash --------------

#: A consumer in a process of its own that dies (SIGKILL) the moment a message reaches it: after the
#: broker let go of the message, before kombu could write it to the unacked hash.
KILLED_CONSUMER = """
import os, signal, sys
from kombu import Connection, Consumer, Queue
url, transport, queue, options = sys.argv[1], sys.argv[2], sys.argv[3], eval(sys.argv[4])
with Connection(url, transport=transport, transport_options=options) as connection:
    connection.transport._deliver = lambda message, queue: os.kill(os.getpid(), signal.SIGKILL)
    with Consumer(connection, [Queue(queue, routing_key=queue)], accept=["json"], no_ack=False):
        connection.drain_events(timeout=30)
"""


def _options(**extra: Any) -> dict[str, Any]:
    """Transport options with keys of the test's own (other tests' sweeps never see them)."""
    tag = uuid.uuid4().hex[:8]
    return {"unacked_key": f"unacked-{tag}", "unacked_index_key": f"unacked_index-{tag}",
            "unacked_mutex_key": f"unacked_mutex-{tag}", "priority_steps": [0], **extra}


def _kill_a_consumer_mid_delivery(redis_url: str, transport: str, queue: str, options: dict) -> None:
    with Connection(redis_url, transport=redis_transport.Transport, transport_options=options) as connection, \
            connection.Producer() as producer:
        producer.publish({"n": 1}, routing_key=queue, declare=[KQueue(queue, routing_key=queue)], serializer="json")
    done = subprocess.run([sys.executable, "-c", KILLED_CONSUMER, redis_url, transport, queue, repr(options)],
                          timeout=scaled(60), capture_output=True, text=True, cwd=APP_DIR)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


def test_a_consumer_killed_mid_delivery_leaves_the_message_to_be_restored(
        redis_url: str, redis_client: redis_lib.Redis) -> None:
    queue = f"landing-{uuid.uuid4().hex[:8]}"
    options = _options(visibility_timeout=1)
    _kill_a_consumer_mid_delivery(redis_url, "apps.main.redis_transport:Transport", queue, options)
    assert redis_client.llen(queue) == 0
    registry = f"{options['unacked_key']}_landing"
    [landing] = redis_client.zrange(registry, 0, -1)
    assert redis_client.llen(landing) == 1, "the message was not in the dead consumer's landing list"

    # A live worker's sweep gives it back once its consumer has been silent for the visibility timeout.
    with Connection(redis_url, transport=redis_transport.Transport, transport_options=options) as connection:
        channel = connection.default_channel
        wait_until(lambda: time.time() - redis_client.zscore(registry, landing) > 1.2, timeout=scaled(10),
                   what="the visibility timeout")
        channel.qos.restore_visible(num=10, interval=1)
        assert redis_client.llen(queue) == 1 and not redis_client.exists(landing)
        assert redis_client.zcard(registry) == 0
        message = connection.SimpleQueue(queue, no_ack=False).get(timeout=scaled(5))
        assert message.payload == {"n": 1}
        message.ack()


def test_kombus_own_transport_loses_that_message(redis_url: str, redis_client: redis_lib.Redis) -> None:
    """Why the transport above exists: the same kill with kombu's BRPOP leaves the message nowhere."""
    queue = f"landing-{uuid.uuid4().hex[:8]}"
    options = _options(visibility_timeout=1)
    _kill_a_consumer_mid_delivery(redis_url, "kombu.transport.redis:Transport", queue, options)
    assert redis_client.llen(queue) == 0
    assert redis_client.hlen(options["unacked_key"]) == 0
    assert not redis_client.keys(f"{options['unacked_key']}_landing*")


def _consume(connection: Any, queue: str, count: int, on_message: Any) -> None:
    seen: list[Any] = []

    def received(body: Any, message: Any) -> None:
        on_message(message)
        seen.append(body)
        message.ack()

    with connection.Consumer([KQueue(queue, routing_key=queue)], callbacks=[received], accept=["json"]):
        while len(seen) < count:
            connection.drain_events(timeout=scaled(10))


@pytest.mark.parametrize("prefix", ["", "tenant-a:"], ids=["plain", "global_keyprefix"])
def test_each_delivery_moves_from_the_queue_to_the_unacked_hash_in_one_step(
        redis_url: str, redis_client: redis_lib.Redis, prefix: str) -> None:
    queue = f"landing-{uuid.uuid4().hex[:8]}"
    options = _options(global_keyprefix=prefix) if prefix else _options()
    unacked = prefix + options["unacked_key"]
    with Connection(redis_url, transport=redis_transport.Transport, transport_options=options) as connection:
        with connection.Producer() as producer:
            for n in range(20):
                producer.publish({"n": n}, routing_key=queue, declare=[KQueue(queue, routing_key=queue)],
                                 serializer="json")
        assert redis_client.llen(prefix + queue) == 20

        def reserved(message: Any) -> None:
            # While the task runs its message is in the unacked hash and in no landing list.
            assert redis_client.hexists(unacked, message.delivery_tag)
            landings = redis_client.zrange(f"{unacked}_landing", 0, -1)
            assert landings and all(redis_client.llen(key) == 0 for key in landings)

        _consume(connection, queue, 20, reserved)
        assert redis_client.llen(prefix + queue) == 0 and redis_client.hlen(unacked) == 0
    assert redis_client.zcard(f"{unacked}_landing") == 0, "a closed channel left its landing list registered"


def test_a_live_channels_landing_list_is_not_swept_and_closing_gives_it_back(
        redis_url: str, redis_client: redis_lib.Redis) -> None:
    queue = f"landing-{uuid.uuid4().hex[:8]}"
    options = _options(visibility_timeout=1)
    with Connection(redis_url, transport=redis_transport.Transport, transport_options=options) as connection:
        channel = connection.channel()
        landing = channel._landing_for(channel._key(queue))  # registered now: alive
        redis_client.lpush(landing, b'{"stranded": true}')
        channel.restore_dead_landings()
        assert redis_client.llen(landing) == 1 and redis_client.llen(queue) == 0
        channel.close()
    assert redis_client.lrange(queue, 0, -1) == [b'{"stranded": true}']
    assert not redis_client.exists(landing)


def test_several_list_keys_fall_back_to_brpop(redis_url: str, redis_client: redis_lib.Redis,
                                               caplog: pytest.LogCaptureFixture) -> None:
    queue = f"landing-{uuid.uuid4().hex[:8]}"
    options = _options(priority_steps=[0, 3, 6, 9])
    with Connection(redis_url, transport=redis_transport.Transport, transport_options=options) as connection:
        with connection.Producer() as producer:
            producer.publish({"n": 1}, routing_key=queue, declare=[KQueue(queue, routing_key=queue)],
                             serializer="json", priority=5)
        with caplog.at_level(logging.WARNING, logger=redis_transport.__name__):
            _consume(connection, queue, 1, lambda message: None)
    assert "uses kombu's BRPOP" in caplog.text
    assert redis_client.zcard(f"{options['unacked_key']}_landing") == 0


def test_messages_a_stock_client_sent_with_a_priority_are_adopted(redis_url: str,
                                                                   redis_client: redis_lib.Redis) -> None:
    """Priorities off here; a client on kombu's defaults writes priority 5 to ``<queue>\\x06\\x163``."""
    queue = f"landing-{uuid.uuid4().hex[:8]}"
    declare = [KQueue(queue, routing_key=queue)]
    with Connection(redis_url, transport="kombu.transport.redis:Transport") as stock, stock.Producer() as producer:
        producer.publish({"n": 1}, routing_key=queue, declare=declare, serializer="json", priority=5)
        producer.publish({"n": 2}, routing_key=queue, declare=declare, serializer="json", priority=5)
    assert redis_client.llen(f"{queue}\x06\x163") == 2
    with Connection(redis_url, transport=redis_transport.Transport, transport_options=_options()) as connection:
        got: list[Any] = []
        with connection.Consumer(declare, callbacks=[lambda body, message: got.append(body) or message.ack()],
                                 accept=["json"]):
            connection.default_channel.qos.restore_visible(num=10, interval=1)  # the periodic sweep
            while len(got) < 2:
                connection.drain_events(timeout=scaled(10))
    assert got == [{"n": 1}, {"n": 2}]
    assert not redis_client.exists(f"{queue}\x06\x163")


def test_a_channel_closed_while_redis_was_down_has_its_landing_list_returned_by_the_next(
        redis_url: str, redis_client: redis_lib.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery reconnects with a new channel: it gives back what the lost one had taken, without waiting
    out the visibility timeout (the broker-restart fault)."""
    queue = f"landing-{uuid.uuid4().hex[:8]}"
    options = _options()
    with Connection(redis_url, transport=redis_transport.Transport, transport_options=options) as connection:
        lost = connection.channel()
        landing = lost._landing_for(lost._key(queue))
        redis_client.lpush(landing, b'{"taken": "before the loss"}')

        def unreachable(*args: Any, **kwargs: Any) -> Any:
            raise redis_lib.ConnectionError("Error 111 connecting: Connection refused.")

        monkeypatch.setattr(lost, "_give_back", unreachable)
        lost.close()
        assert redis_client.llen(landing) == 1 and redis_client.llen(queue) == 0
        monkeypatch.undo()
        reconnected = connection.channel()
        reconnected._landing_for(reconnected._key(queue))  # its first BLMOVE registers a landing list
        assert redis_client.lrange(queue, 0, -1) == [b'{"taken": "before the loss"}']
        assert not redis_client.exists(landing)
        assert not redis_client.zscore(f"{options['unacked_key']}_landing", landing)
        reconnected.close()
