"""kombu's Redis transport with two changes: one Redis client per channel, and deliveries that a
``kill -9`` cannot drop.

**One client per channel.** kombu's ``Channel.conn_or_acquire`` builds a new ``redis.Redis`` for every
command it runs on the channel's connection pool: every publish and, in a worker's main process, two per
task with acks_late (the ``unacked`` hash and index written on delivery, removed on the ack). With
redis-py 8 a client costs ~100 µs to build (it copies a table of ~170 response callbacks): py-spy put it
at 12-15 % of the main process's samples, and its CPU per task went from ~1.35 to ~1.08 ms without it
(docs/benchmarks.md). A client holds no connection of its own — every command checks one out of the
pool — so one client per channel and pool is equivalent; it is rebuilt when kombu replaces the channel's
pool (after a connection loss).

**Atomic delivery.** kombu takes a message with ``BRPOP`` and only then writes it to the ``unacked``
hash: from the moment Redis sends the reply until that write — the reply may wait in the socket while
the main process forks a pool process or handles a dead one — the message exists only in the worker's
memory, and a worker killed then loses it (kombu#305, celery#4354; our fault suite caught it). Here a
channel consuming one list key takes the message with ``BLMOVE`` into a *landing list* of its own in the
same step, and moves it from there to the ``unacked`` hash in one Lua script. A landing list is
registered in ``<unacked_key>_landing`` (score: the channel's last sign of life, renewed at least every
``LANDING_HEARTBEAT`` seconds while it consumes); the periodic restore sweep of every live worker gives
the contents of a landing list older than the visibility timeout back to its queue, in the same script
that checks its age, so a channel that comes back to life is never robbed. A channel that closes gives
its landing list back itself.

A channel that reads several keys at once (a worker on several queues, or message priorities on:
``priority_steps`` other than ``[0]``) needs ``BRPOP`` — ``BLMOVE`` takes one source — and keeps kombu's
delivery; ``LANDING_NOTE`` says so once in its log. With priorities off, the same sweep moves what a client
on kombu's default settings sent with a priority (to ``<queue>\x06\x16<step>``) into the queue itself.

**A full broker.** At ``maxmemory`` with ``noeviction`` Redis refuses every command that may add memory
(OOM), ``BLMOVE``, ``ZADD`` and ``SET`` among them, while consuming is what frees memory: kombu's restore
sweep (its lock is a ``SET``), the landing registration and ``BLMOVE`` would stop every worker
("Unrecoverable error"), and kombu's own ``BRPOP`` delivery would lose the message it popped when writing it
to ``unacked`` fails. So on an OOM reply the scripts run again flagged ``allow-oom`` (Redis >= 7; they move
what Redis holds, or add a few bytes of bookkeeping), ``BLMOVE`` becomes the same move in such a script
(nothing waiting: the channel idles ``OOM_IDLE`` seconds, so that it does not spin), a queue binding is
written the same way, and the restore sweep waits for memory. Publishers still get the OOM error.

**Sentinel.** ``sentinel://`` URLs get the same channel on kombu's Sentinel connection pool (``SentinelChannel``):
its connections ask the sentinels for the primary whenever they connect, and a connection error or a READONLY reply
drops them, so after a failover Celery's reconnect lands on the new primary. The sentinels themselves are asked with
short timeouts and no retries (``redis_connection.sentinel_node_options``).

**Replicated publishes (optional).** With ``publish_wait_replicas`` N > 0 each publish is followed, on the same
connection, by ``WAIT N publish_wait_timeout_ms``: a publish returns only once N replicas hold the message, so a
failover cannot take it back (asynchronous replication otherwise can, for the last writes before the primary died).
Fewer acknowledgements in time raise ``PublishNotReplicated``: the message is on the primary and may still run, so
the caller (an idempotent retry, or the API's 503) decides; it is not published again here.

``install()`` registers it for ``redis://``, ``rediss://`` and ``sentinel://`` broker URLs (``portfolio_site.celery``).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, NamedTuple

import redis
from kombu.exceptions import OperationalError
from kombu.transport import TRANSPORT_ALIASES, _transport_cache
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from apps.main.redis_connection import SENTINEL_SCHEME, sentinel_node_options

logger = logging.getLogger(__name__)

#: URL scheme -> the transport of this module that serves it.
SCHEMES = {"redis": "Transport", "rediss": "Transport", SENTINEL_SCHEME: "SentinelTransport"}
#: Seconds between a consuming channel's renewals of its landing list's registration.
LANDING_HEARTBEAT = 5.0
#: (registry, landing list, source) of channels of this process that closed while Redis was unreachable:
#: the next channel here (Celery's, after it reconnected) gives them back at once instead of leaving them
#: to other workers' sweeps, which wait out the visibility timeout.
_UNRETURNED: set[tuple[str, str, str]] = set()
#: Seconds a channel waits before it asks again for a message after a full broker found its queue empty.
OOM_IDLE = 1.0
#: The flag that lets a script write when Redis is at maxmemory (Redis >= 7 script flags); prepended to our
#: scripts only after an OOM reply, so the usual path also runs on servers without script flags.
ALLOW_OOM = "#!lua flags=allow-oom\n"
LANDING_NOTE = ("this channel reads %d list keys (%s): BLMOVE takes one, so it uses kombu's BRPOP, which can "
                "lose the message being delivered if the worker is killed at that moment")

# KEYS: unacked index, unacked hash, landing list. ARGV: delivery tag, time, the unacked entry,
# the landed element. The message moves from the landing list to the unacked hash in one step.
RESERVE = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('LREM', KEYS[3], 1, ARGV[4])
return 1
"""

# kombu's unacked write of a message BRPOP delivered (QoS.append), for when the broker is full.
# KEYS: unacked index, unacked hash. ARGV: delivery tag, time, the unacked entry.
RESERVE_POPPED = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"""

# BLMOVE's move without the wait (scripts cannot block). KEYS: source queue, landing list.
TAKE = """
return redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
"""

# KEYS: landing registry. ARGV: score, landing list.
REGISTER = """
return redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
"""

# kombu's queue binding (Channel._queue_bind). KEYS: the exchange's table, its permanent-members set. ARGV: member.
BIND = """
redis.call('SADD', KEYS[1], ARGV[1])
return redis.call('SADD', KEYS[2], ARGV[1])
"""

# KEYS: a queue's priority sub-lists, then the queue. Moves what waits in the sub-lists to the queue.
ADOPT = """
local queue, moved = KEYS[#KEYS], 0
for i = 1, #KEYS - 1 do
  while redis.call('LMOVE', KEYS[i], queue, 'RIGHT', 'LEFT') do moved = moved + 1 end
end
return moved
"""

# KEYS: landing registry, landing list, its source queue. ARGV: the newest registration score that
# counts as dead ('' = give back regardless). Gives the landing list back to the end BLMOVE/BRPOP
# read next, oldest first, and unregisters it.
GIVE_BACK = """
local score = redis.call('ZSCORE', KEYS[1], KEYS[2])
if ARGV[1] ~= '' and score and tonumber(score) > tonumber(ARGV[1]) then return -1 end
local moved = 0
while redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT') do moved = moved + 1 end
redis.call('ZREM', KEYS[1], KEYS[2])
return moved
"""


class QoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        landed = self.channel._take_landed()
        channel = self.channel
        if landed is None:
            try:
                return super().append(message, delivery_tag)
            except redis.exceptions.OutOfMemoryError:  # BRPOP took it: refused now, it would be lost
                channel._script(ALLOW_OOM + RESERVE_POPPED)(
                    keys=[channel._key(self.unacked_index_key), channel._key(self.unacked_key)],
                    args=[delivery_tag, time.time(), self._entry(message)],
                )
                return kombu_redis.virtual.QoS.append(self, message, delivery_tag)
        channel._run(
            RESERVE,
            keys=[channel._key(self.unacked_index_key), channel._key(self.unacked_key), landed.landing],
            args=[delivery_tag, time.time(), self._entry(message), landed.element],
        )
        kombu_redis.virtual.QoS.append(self, message, delivery_tag)

    @staticmethod
    def _entry(message: Any) -> str:
        """The message's ``unacked`` hash value, as kombu writes it."""
        delivery = message.delivery_info
        return dumps([message._raw, delivery["exchange"], delivery["routing_key"]])

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        try:
            super().restore_visible(start=start, num=num, interval=interval)
        except redis.exceptions.OutOfMemoryError as exc:
            # A full broker refuses the sweep's lock and the LPUSH of a restore: what is due stays in the
            # unacked hash, untouched, for a sweep once memory is freed. Not a reason to stop the worker.
            logger.warning("restore of unacknowledged messages postponed, the broker is full: %s", exc)
        if (self._vrestore_count - 1) % (interval or 1) == 0:  # the throttled sweep ran
            self.channel.restore_dead_landings()
            self.channel.adopt_stray_priorities()


class Landed(NamedTuple):
    """An element BLMOVE put in a landing list, until QoS.append reserves it."""

    element: bytes
    landing: str


class PublishNotReplicated(OperationalError):
    """A publish the primary took but fewer replicas than ``publish_wait_replicas`` acknowledged in time."""


class Channel(kombu_redis.Channel):
    QoS = QoS
    from_transport_options = (*kombu_redis.Channel.from_transport_options,
                              "publish_wait_replicas", "publish_wait_timeout_ms")
    #: Replicas that must hold each published message before the publish returns (0: no WAIT).
    publish_wait_replicas = 0
    publish_wait_timeout_ms = 500
    _shared_client: Any = None
    _plain_client: redis.Redis | None = None
    _landed: Landed | None = None
    _blmove_source: str | None = None  # the queue of the BLMOVE in flight; None: a BRPOP or nothing
    _noted_brpop = False
    _oom_idle_until = 0.0  # monotonic: until then a full broker had nothing for this channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._landing_id = uuid.uuid4().hex
        self._landings: dict[str, tuple[str, float]] = {}  # source key -> (landing key, registered at)
        self._scripts: dict[str, Any] = {}
        self._acked_queues: set[str] = set()  # consumed with acks: what a lost delivery would matter for
        super().__init__(*args, **kwargs)

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if not no_ack:
            self._acked_queues.add(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    # --- one client per channel ------------------------------------------------------------------
    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()
        return client

    # --- replicated publishes ----------------------------------------------------------------------
    @property
    def supports_batch_publish(self) -> bool:  # kombu's Producer.batch(): each publish waits on its own here
        return not self.publish_wait_replicas

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        wanted = int(self.publish_wait_replicas or 0)
        if wanted <= 0:
            return super()._put(queue, message, **kwargs)
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            # One pipeline, one connection: WAIT counts the writes of the connection it is sent on.
            pipe.lpush(key, dumps(message))
            if self._expires and queue in self._expires:
                for step in self.priority_steps:
                    pipe.pexpire(self._q_for_pri(queue, step), self._expires[queue])
            pipe.wait(wanted, int(self.publish_wait_timeout_ms))
            acknowledged = int(pipe.execute()[-1])
        if acknowledged < wanted:
            raise PublishNotReplicated(
                f"the broker took the message for {queue!r} but {acknowledged} of the {wanted} replica(s) asked for "
                f"acknowledged it within {self.publish_wait_timeout_ms} ms: a failover now could lose it"
            )

    # --- atomic delivery -------------------------------------------------------------------------
    @property
    def landing_registry(self) -> str:
        return self._key(f"{self.unacked_key}_landing")

    def _key(self, name: str) -> str:
        """The full Redis key: our scripts and raw commands get no help from kombu's key prefixing."""
        return f"{self.global_keyprefix or ''}{name}"

    def _plain(self) -> redis.Redis:
        """A client that prefixes nothing (the shared one, unless kombu's prefixing client is in use)."""
        if not self.global_keyprefix:
            return self._create_client()
        client = self._plain_client
        if client is None or client.connection_pool is not self.pool:
            client = self._plain_client = redis.Redis(connection_pool=self.pool)
        return client

    def _script(self, source: str) -> Any:
        script = self._scripts.get(source)
        if script is None or script.registered_client.connection_pool is not self.pool:
            script = self._scripts[source] = self._plain().register_script(source)
        return script

    def _run(self, source: str, keys: list[str], args: list[Any] | None = None) -> Any:
        """Run one of our scripts; refused for OOM (they move what Redis holds, or add a few bytes of
        bookkeeping), run it again flagged allow-oom: a full broker must not stop its consumers."""
        try:
            return self._script(source)(keys=keys, args=args or [])
        except redis.exceptions.OutOfMemoryError:
            return self._script(ALLOW_OOM + source)(keys=keys, args=args or [])

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        try:
            super()._queue_bind(exchange, routing_key, pattern, queue)
        except redis.exceptions.OutOfMemoryError:
            # A worker (re)started on a full broker must be able to declare the queue it will drain, and a
            # control client (ping, inspect) its reply queue: a binding is a few bytes.
            member = self.sep.join([routing_key or "", pattern or "", queue or ""])
            table = self._key(self.keyprefix_queue % (exchange,))
            if queue in self._expires:  # kombu's expiring binding, its own script
                self._script(ALLOW_OOM + kombu_redis.REFRESH_BINDING)(
                    keys=[table, self._script_binding_deadlines], args=[member, exchange, self._binding_ttl(queue)])
            else:
                self._script(ALLOW_OOM + BIND)(
                    keys=[table, self._key(self.keyprefix_binding_permanent % (exchange,))], args=[member])

    def _landing_for(self, source: str) -> str:
        """This channel's landing list for ``source`` (full keys), registered as alive."""
        landing, registered = self._landings.get(source, ("", 0.0))
        if not landing:
            landing = self._key(f"{self.unacked_key}_landing:{self._landing_id}:{source}")
            self._return_unreturned()
        now = time.monotonic()
        if now - registered >= LANDING_HEARTBEAT:
            # Before the BLMOVE is sent: a sweep that saw the old score finds this one and leaves it.
            self._run(REGISTER, keys=[self.landing_registry], args=[time.time(), landing])
            self._landings[source] = (landing, now)
        return landing

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        if len(set(keys)) != 1:
            if not self._noted_brpop and self._acked_queues.intersection(queues):  # replies: no acks, no note
                self._noted_brpop = True
                logger.warning(LANDING_NOTE, len(keys), ", ".join(map(repr, keys)))
            return super()._brpop_start(timeout)
        if time.monotonic() < self._oom_idle_until:
            return  # nothing sent: the event loop waits on its other work and timers, then asks again
        source = self._key(keys[0])
        landing = self._landing_for(source)
        self._blmove_source = queues[0]
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        self.client.connection.send_command(
            "BLMOVE", source, landing, "RIGHT", "LEFT", self.brpop_timeout if timeout is None else timeout or 0,
        )

    def _brpop_read(self, **options: Any) -> bool:
        queue = self._blmove_source
        if queue is None:
            return super()._brpop_read(**options)
        try:
            landing = self._landings[self._key(queue)][0]
            try:
                element = self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except redis.exceptions.OutOfMemoryError:
                # A full broker refuses BLMOVE (it may create the landing list): the same move in a script
                # that may run then. Consuming is what frees memory.
                element = self._script(ALLOW_OOM + TAKE)(keys=[self._key(queue), landing])
                if element is None:
                    self._oom_idle_until = time.monotonic() + OOM_IDLE
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if element is None:
                raise kombu_redis.Empty()
            self._queue_cycle.rotate(queue)
            self._landed = Landed(element, landing)
            try:
                self.connection._deliver(loads(bytes_to_str(element)), queue)
            except BaseException:
                if self._landed is not None:  # not reserved: back to the head of its queue
                    self._give_back(landing, self._key(queue))
                raise
            if self._landed is not None:  # a consumer without acks: nothing to keep
                self._plain().lrem(landing, 1, element)
            return True
        finally:
            self._landed = None
            self._blmove_source = None
            self._in_poll = None
            self._flush_brpop_reauth()

    def _poll_error(self, type: str, **options: Any) -> None:
        if type == "BRPOP" and self._blmove_source is not None:
            self._blmove_source = None
            self.client.parse_response(self.client.connection, "BLMOVE")
            return
        super()._poll_error(type, **options)

    def _take_landed(self) -> Landed | None:
        landed, self._landed = self._landed, None
        return landed

    def _give_back(self, landing: str, source: str, *, dead_before: float | None = None,
                   registry: str | None = None) -> int:
        """Move a landing list back to its queue and unregister it; with ``dead_before``, only if its
        channel did not renew it since. Returns how many messages moved (-1: it was renewed)."""
        ceiling = "" if dead_before is None else repr(dead_before)
        keys = [registry or self.landing_registry, landing, source]
        moved = int(self._run(GIVE_BACK, keys=keys, args=[ceiling]))
        if dead_before is None and registry is None:
            self._landings.pop(source, None)  # unregistered: the next BLMOVE registers it again
        return moved

    def _return_unreturned(self) -> None:
        for registry, landing, source in list(_UNRETURNED):
            moved = self._give_back(landing, source, registry=registry)
            _UNRETURNED.discard((registry, landing, source))
            if moved > 0:
                logger.warning("restored %d message(s) taken just before the connection was lost, from %s",
                               moved, source)

    def restore_dead_landings(self) -> None:
        """Give back the landing lists of channels silent for longer than the visibility timeout."""
        self._return_unreturned()
        dead_before = time.time() - self.visibility_timeout
        client = self._plain()
        prefix = self._key(f"{self.unacked_key}_landing:")
        for raw in client.zrange(self.landing_registry, "-inf", dead_before, byscore=True):
            landing = bytes_to_str(raw)
            # "<prefix><channel id>:<source key>"
            source = landing[len(prefix):].split(":", 1)[1] if landing.startswith(prefix) else None
            if source is None:
                client.zrem(self.landing_registry, landing)
                continue
            moved = self._give_back(landing, source, dead_before=dead_before)
            if moved > 0:
                logger.warning("restored %d message(s) a dead worker had taken from %s", moved, source)

    def adopt_stray_priorities(self) -> None:
        """With priorities off (one key per queue), move messages a client on kombu's default
        ``priority_steps`` sent with a priority — to ``<queue><sep><step>``, which no worker here reads —
        into their queue, behind what waits there."""
        if list(self.priority_steps) != [0]:
            return
        for queue in self.active_queues:
            subs = [self._key(f"{queue}{self.sep}{step}") for step in kombu_redis.PRIORITY_STEPS if step]
            moved = int(self._run(ADOPT, keys=[*subs, self._key(queue)]))
            if moved:
                logger.warning("moved %d message(s) sent with a priority into %s (priorities are off)", moved, queue)

    def close(self) -> None:
        if self._in_poll and self._blmove_source is not None:
            try:
                self._brpop_read()  # deliver what the pending BLMOVE took: restored with the unacked
            except kombu_redis.Empty:
                pass
            except self.connection_errors:
                pass
        for source, (landing, _) in list(self._landings.items()):
            try:
                self._give_back(landing, source)
            except self.connection_errors:  # the next channel of this process gives it back
                _UNRETURNED.add((self.landing_registry, landing, source))
        self._landings.clear()
        super().close()


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """This module's channel on kombu's Sentinel pool (kombu's SentinelChannel supplies ``_get_pool``)."""

    from_transport_options = tuple(dict.fromkeys((*Channel.from_transport_options,
                                                  *kombu_redis.SentinelChannel.from_transport_options)))

    def _sentinel_managed_pool(self, asynchronous: bool = False) -> Any:
        self.sentinel_kwargs = sentinel_node_options(getattr(self, "sentinel_kwargs", None),
                                                     socket_timeout=self.socket_timeout,
                                                     socket_connect_timeout=self.socket_connect_timeout)
        return super()._sentinel_managed_pool(asynchronous)


class SentinelTransport(Transport, kombu_redis.SentinelTransport):
    default_port = kombu_redis.SentinelTransport.default_port
    Channel = SentinelChannel


def install() -> None:
    """Make ``redis://``, ``rediss://`` and ``sentinel://`` URLs use this module's transports in this process
    (before any connection)."""
    for scheme, transport in SCHEMES.items():
        TRANSPORT_ALIASES[scheme] = f"{__name__}:{transport}"
        _transport_cache.pop(scheme, None)
