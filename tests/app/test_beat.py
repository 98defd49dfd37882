"""Beat: the default schedule in the database, and the Redis lease that keeps beat a singleton."""

from __future__ import annotations

import signal
import time

import pytest
import redis as redis_lib

from apps.main.beat import BEAT_LAST_TICK_KEY, BEAT_LEASE_KEY, BeatLease
from embedded.network import wait_until
from embedded.supervisor import Supervisor
from portfolio_site import commands
from tests.support.timeouts import scaled

PROBE_QUEUE = "beat_probe"  # consumed by nobody: its length counts what beat sent


def test_lease_is_exclusive_renewable_and_released(redis_client: redis_lib.Redis) -> None:
    redis_client.delete(BEAT_LEASE_KEY)
    first, second = BeatLease(redis_client, 5, holder="first"), BeatLease(redis_client, 5, holder="second")
    assert first.acquire_or_renew() and not second.acquire_or_renew()
    assert first.acquire_or_renew(), "the holder renews"
    assert second.current_holder() == "first"
    first.release()
    assert second.acquire_or_renew() and second.current_holder() == "second"
    first.release()  # not the holder any more: must not delete second's lease
    assert redis_client.get(BEAT_LEASE_KEY) == b"second"
    second.release()


def test_lease_expires_when_its_holder_stops_renewing(redis_client: redis_lib.Redis) -> None:
    redis_client.delete(BEAT_LEASE_KEY)
    dead, heir = BeatLease(redis_client, 0.3, holder="dead"), BeatLease(redis_client, 0.3, holder="heir")
    assert dead.acquire_or_renew()
    wait_until(heir.acquire_or_renew, timeout=scaled(5), what="the lease to expire")
    assert not dead.acquire_or_renew(), "a holder whose lease expired learns it lost the lease"


def log_has(child, text: str) -> bool:
    return text in child.log_path.read_text(errors="replace")


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_two_beats_send_each_periodic_task_once_and_the_second_takes_over(
    live_env: dict[str, str], process_logs, redis_client: redis_lib.Redis, tmp_path
) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    PeriodicTask.objects.update(enabled=False)  # only the probe below sends
    every_second = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="beat-probe", task="apps.main.tasks.health_check",
                                interval=every_second, queue=PROBE_QUEUE)
    redis_client.delete(PROBE_QUEUE, BEAT_LEASE_KEY, BEAT_LAST_TICK_KEY)

    supervisor = Supervisor(log_dir=tmp_path, env={**live_env, "BEAT_LEASE_TTL": "3"})
    try:
        first = supervisor.spawn("beat-first", commands.beat())
        wait_until(lambda: log_has(first, "acquired the lease"), timeout=scaled(30), what="the first beat's lease")
        second = supervisor.spawn("beat-second", commands.beat())
        wait_until(lambda: log_has(second, "another beat holds the lease"), timeout=scaled(30),
                   what="the second beat to wait for the lease")

        # Both run; only the holder sends. Over a window of several seconds a 1 s task may be
        # sent about once a second: two senders would double that.
        start_len, started = redis_client.llen(PROBE_QUEUE), time.monotonic()
        wait_until(lambda: redis_client.llen(PROBE_QUEUE) >= start_len + 5, timeout=scaled(30), what="5 probe sends")
        elapsed = time.monotonic() - started
        sent = redis_client.llen(PROBE_QUEUE) - start_len
        assert sent <= elapsed + 2, f"{sent} sends in {elapsed:.1f}s: both beats are sending"
        assert float(redis_client.get(BEAT_LAST_TICK_KEY)) > time.time() - 10
        assert not log_has(second, "Sending due task"), "the waiting beat sent a task"

        # The holder dies without releasing: the second takes over once the lease expires.
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        killed_at = time.monotonic()
        wait_until(lambda: log_has(second, "acquired the lease"), timeout=scaled(30),
                   what="the second beat to take over")
        assert time.monotonic() - killed_at < 3 + 2 + 3, "takeover should come within TTL + standby interval"
        before = redis_client.llen(PROBE_QUEUE)
        wait_until(lambda: redis_client.llen(PROBE_QUEUE) >= before + 2, timeout=scaled(30),
                   what="the new holder to send the probe")
    finally:
        supervisor.stop_all()
    # A beat stopped cleanly releases its lease so that a successor need not wait for the TTL.
    assert redis_client.get(BEAT_LEASE_KEY) is None
    redis_client.delete(PROBE_QUEUE)
