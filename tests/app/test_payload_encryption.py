"""Encrypted task payloads (apps.main.payload_encryption) on real Valkey, PostgreSQL and worker processes.

A unique marker goes into every argument of send_notification; it must never be readable in Redis (every key:
queue lists, the unacked hash, the spool, the cache — message bodies decoded from their base64), in the
message headers, in task events, in the result row or in the dead-letter row. Tampered, foreign-key and
forged plain messages end in the dead-letter store, and the worker keeps running; keys rotate with messages
in flight.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib
from celery.beat import ScheduleEntry, Scheduler
from celery.events.receiver import EventReceiver
from django.test import override_settings
from django_celery_results.models import TaskResult
from kombu.compression import decompress

from apps.main import deadletter, payload_encryption
from apps.main.models import DeadLetter
from apps.main.payload_encryption import CONTENT_TYPE, HIDDEN, PayloadDecryptionError
from apps.main.queues import task_name
from embedded.network import wait_until
from portfolio_site import environment as env_names
from portfolio_site.celery import app
from tests.app.test_tasks_live import wait_for_dead_letter
from tests.support.timeouts import scaled
from tests.support.webhook import webhook_server

NOTIFY = task_name("send_notification")
KEY_A, KEY_B, KEY_C = (payload_encryption.generate_key() for _ in range(3))


def marked(marker: str, **extra: str) -> dict[str, str]:
    """send_notification kwargs with the marker in every value it can hold."""
    return {"channel": "in_app", "recipient": f"user-{marker}", "subject": f"s-{marker}",
            "message": f"m-{marker}", **extra}


def queue_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def truncated(token: str) -> str:
    """The token less its last 7 bytes: no longer whole cipher blocks, however long it was."""
    raw = base64.urlsafe_b64decode(token)
    return base64.urlsafe_b64encode(raw[:-7]).decode()


def flipped(token: str, at: int = 60) -> str:
    """The token with one base64 character (inside the ciphertext) changed."""
    return token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1:]


# --- reading Redis as an attacker would ------------------------------------------------------------------


def envelopes(raw: bytes) -> Iterator[dict[str, Any]]:
    """kombu's message envelopes inside a Redis value (a queue entry, or an unacked entry [envelope, …])."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "body" in item and isinstance(item.get("properties"), dict):
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def body_of(envelope: dict[str, Any]) -> bytes:
    """The body as a consumer reads it: decoded from base64, decompressed as the ``compression`` header says
    (apps.main.large_payloads compresses large bodies, and every body of some tasks)."""
    body = envelope["body"]
    if envelope["properties"].get("body_encoding") == "base64":
        body = base64.b64decode(body)
    body = body.encode() if isinstance(body, str) else body
    if compression := (envelope.get("headers") or {}).get("compression"):
        body = decompress(body, compression)
    return body


def readable(client: redis_lib.Redis) -> dict[bytes, bytes]:
    """Every key's value, and every message body in it decoded from its base64: what anyone reading Redis sees."""
    seen: dict[bytes, bytes] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            values = [client.get(key) or b""]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "hash":
            values = [item for pair in client.hgetall(key).items() for item in pair]
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = client.zrange(key, 0, -1)
        else:
            values = [repr(client.xrange(key)).encode()] if kind == "stream" else []
        bodies = [body_of(e) for value in values for e in envelopes(value)]
        seen[key] = b"\n".join([*values, *bodies])
    return seen


def assert_nowhere_in_redis(client: redis_lib.Redis, marker: str) -> None:
    leaks = [key for key, value in readable(client).items() if marker.encode() in value]
    assert not leaks, f"the marker is readable in Redis under {leaks}"


def queued(client: redis_lib.Redis, queue: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]


# --- the codec ------------------------------------------------------------------------------------------------


def test_round_trip_and_rotation_with_messages_of_the_old_key() -> None:
    old = payload_encryption.dumps([[], {"when": "x"}, {}], keys=[KEY_A])
    assert payload_encryption.is_token(old) and "when" not in old
    assert payload_encryption.loads(old, keys=[KEY_B, KEY_A]) == [[], {"when": "x"}, {}]
    new = payload_encryption.dumps("v", keys=[KEY_B, KEY_A])
    with pytest.raises(PayloadDecryptionError):  # the first key encrypts: A alone cannot read it
        payload_encryption.loads(new, keys=[KEY_A])


@pytest.mark.parametrize(("tamper", "reason"), [
    (flipped, "not authentic under any of the 1 configured"),
    (truncated, "truncated or malformed"),
    (lambda t: payload_encryption.dumps("v", keys=[KEY_C]), "not authentic"),
    (lambda t: "not a token!", "malformed: not a Fernet token"),
])
def test_altered_truncated_and_foreign_tokens_are_refused_with_the_reason(tamper: Any, reason: str) -> None:
    token = payload_encryption.dumps({"k": "v"}, keys=[KEY_A])
    with pytest.raises(PayloadDecryptionError, match=reason):
        payload_encryption.loads(tamper(token), keys=[KEY_A])


def test_keys_are_validated_and_named_by_position_only() -> None:
    assert payload_encryption.parse_keys([f" {KEY_A} ", "", KEY_B]) == [KEY_A, KEY_B]
    with pytest.raises(ValueError, match="key 2 of 2 is not a Fernet key") as raised:
        payload_encryption.parse_keys([KEY_A, "not-a-key"])
    assert "not-a-key" not in str(raised.value)


def test_production_refuses_a_key_that_is_not_a_fernet_key_in_one_line_without_it() -> None:
    from tests.app.test_settings import SETUP, production_env, python

    done = python(SETUP, production_env(**{env_names.PAYLOAD_ENCRYPTION_KEYS: f"{KEY_A},wrong-secret"}))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("production settings: PAYLOAD_ENCRYPTION_KEYS: key 2 of 2 is not a Fernet key")
    assert len(done.stderr.splitlines()) == 1 and "wrong-secret" not in done.stderr and KEY_A not in done.stderr


# --- every publishing path ------------------------------------------------------------------------------------


def publish_send_task(queue: str, kwargs: dict[str, str]) -> None:
    app.send_task(NOTIFY, kwargs=kwargs, queue=queue)  # as the API and any client that has only the name


def publish_apply_async(queue: str, kwargs: dict[str, str]) -> None:
    from apps.main.tasks import send_notification

    send_notification.apply_async(kwargs=kwargs, queue=queue)  # .delay is apply_async without options


def publish_beat(queue: str, kwargs: dict[str, str]) -> None:
    entry = ScheduleEntry(name=f"enc-{queue}", task=NOTIFY, kwargs=kwargs, options={"queue": queue}, app=app)
    Scheduler(app, lazy=True).apply_async(entry, advance=False)  # what beat's scheduler does with a due entry


def publish_requeue(queue: str, kwargs: dict[str, str]) -> None:
    letter = deadletter.record(task_id=str(uuid.uuid4()), task_name=NOTIFY, args=[], kwargs=kwargs, queue=queue,
                               reason="permanent_error", exception="PermanentError: x")
    assert letter is not None and letter.kwargs == {} and payload_encryption.is_token(letter.raw_body)
    deadletter.requeue(letter)


@pytest.mark.django_db
@pytest.mark.parametrize("publish", [publish_send_task, publish_apply_async, publish_beat, publish_requeue])
def test_every_publishing_path_encrypts_the_body_and_hides_the_arguments(publish: Any, redis_client) -> None:
    marker, queue = uuid.uuid4().hex, queue_name("enc-path")  # no worker consumes this queue
    publish(queue, marked(marker))
    [message] = queued(redis_client, queue)
    assert message["content-type"] == CONTENT_TYPE
    assert (message["headers"]["argsrepr"], message["headers"]["kwargsrepr"]) == (HIDDEN, HIDDEN)
    assert payload_encryption.loads(body_of(message))[1] == marked(marker)
    assert_nowhere_in_redis(redis_client, marker)
    redis_client.delete(queue)


def test_a_task_without_opt_in_stays_plain_json(redis_client) -> None:
    queue = queue_name("plain")
    app.send_task(task_name("process_user_action"), kwargs={"action_id": "a", "user_id": "u", "action": "x"},
                  queue=queue)
    [message] = queued(redis_client, queue)
    assert message["content-type"] == "application/json"
    assert json.loads(body_of(message))[1]["action_id"] == "a" and "'action_id'" in message["headers"]["kwargsrepr"]
    redis_client.delete(queue)


# --- through a worker -------------------------------------------------------------------------------------------


class CapturingReceiver(EventReceiver):
    """Keeps every task event (task-sent from this process, the worker's own)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, handlers={}, **kwargs)
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()

    def on_consume_ready(self, *args: Any, **kwargs: Any) -> None:
        super().on_consume_ready(*args, **kwargs)
        self.ready.set()

    def _receive(self, body: Any, message: Any, **kwargs: Any) -> None:
        for event in body if isinstance(body, list) else [body]:
            if event.get("type", "").startswith("task-"):
                self.events.append(event)

    def about(self, task_ids: set[str]) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("uuid") in task_ids]

    def kinds(self, task_id: str) -> list[str]:
        return [e["type"] for e in self.about({task_id})]


@pytest.fixture
def events() -> Iterator[CapturingReceiver]:
    with app.connection_for_read() as connection:
        receiver = CapturingReceiver(connection, app=app)
        thread = threading.Thread(target=receiver.capture, kwargs={"wakeup": False}, daemon=True)
        thread.start()
        assert receiver.ready.wait(scaled(30)), "event receiver did not start consuming"
        try:
            yield receiver
        finally:
            receiver.should_stop = True
            thread.join(scaled(10))


def assert_row_sealed(task_id: str, marker: str) -> TaskResult:
    row = TaskResult.objects.get(task_id=task_id)
    assert row.content_type == CONTENT_TYPE
    for column in ("result", "meta", "task_args", "task_kwargs", "traceback"):
        value = getattr(row, column) or ""
        assert marker not in value, f"the marker is in the result row's {column}"
        assert not value or payload_encryption.is_token(value), (column, value)
    return row


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_an_encrypted_task_leaves_no_clear_argument_anywhere(
    celery_worker_factory, redis_client, events: CapturingReceiver,
) -> None:
    from django.conf import settings
    from django.test import Client

    marker, queue = uuid.uuid4().hex, queue_name("enc-live")
    celery_worker_factory([queue, "high_priority"], concurrency=2)

    ok = app.send_task(NOTIFY, kwargs=marked(marker), queue=queue)
    assert ok.get(timeout=scaled(30))["channel"] == "in_app"  # the backend opens the sealed result

    # The API enqueues by name on the route's queue (high_priority): encrypted as well.
    api = Client(HTTP_AUTHORIZATION=f"Bearer {settings.API_TOKEN}")
    answer = api.post("/api/tasks/send_notification/", data=json.dumps(marked(marker)), content_type="application/json")
    assert answer.status_code == 202, answer.content
    by_api = app.AsyncResult(answer.json()["id"])

    with webhook_server([503, 200, 400, 200]) as hook:
        # A retry is published by the worker: encrypted (a plain one would be refused, not run).
        retried = app.send_task(NOTIFY, kwargs=marked(marker, channel="webhook", recipient=f"{hook.url}?{marker}"),
                                queue=queue)
        assert retried.get(timeout=scaled(30))["duplicate"] is False
        failed = app.send_task(NOTIFY, kwargs=marked(marker, channel="webhook", recipient=f"{hook.url}?{marker}"),
                               queue=queue)
        with pytest.raises(Exception, match="rejected the notification with 400"):
            failed.get(timeout=scaled(30))  # the exception (it quotes the URL) is readable through the backend
        letter = wait_for_dead_letter(failed.id)
        assert letter.reason == "permanent_error" and letter.exception == f"PermanentError: {HIDDEN}"
        stored = {f.name: str(getattr(letter, f.name)) for f in DeadLetter._meta.fields}
        assert not [name for name, value in stored.items() if marker in value], stored
        assert marker in payload_encryption.reveal(letter.traceback)
        assert deadletter.arguments(letter)[1]["recipient"] == f"{hook.url}?{marker}"
        requeued = app.AsyncResult(deadletter.requeue(letter))  # sent encrypted again, to the same queue
        assert requeued.get(timeout=scaled(30))["channel"] == "webhook"
    assert [call["message"] for _, call in hook.calls] == [f"m-{marker}"] * 4
    assert by_api.get(timeout=scaled(30))["channel"] == "in_app"

    for result in (ok, by_api, retried, failed):
        assert_row_sealed(result.id, marker)
    assert marker in app.AsyncResult(failed.id).traceback  # opened for a client with the keys

    ours = {r.id for r in (ok, by_api, retried, failed, requeued)}
    wait_until(lambda: all("task-succeeded" in events.kinds(r.id) for r in (ok, by_api, retried, requeued))
               and "task-failed" in events.kinds(failed.id), timeout=scaled(30), what="the task events")
    received = [e for e in events.about(ours) if e["type"] == "task-received"]
    assert len(received) == 6 and all((e["args"], e["kwargs"]) == (HIDDEN, HIDDEN) for e in received)
    assert "task-sent" in events.kinds(ok.id) and "task-retried" in events.kinds(retried.id)
    assert [e["exception"] for e in events.about({failed.id}) if e["type"] == "task-failed"] == [HIDDEN]
    leaked = [e for e in events.events if marker in json.dumps(e)]
    assert not leaked, leaked
    assert_nowhere_in_redis(redis_client, marker)


def tampered(envelope: dict[str, Any], body: bytes, *, content_type: str = CONTENT_TYPE) -> tuple[str, str]:
    """A copy of a queued message with another body (and task id, delivery tag): (task id, envelope JSON)."""
    copy = json.loads(json.dumps(envelope))
    task_id = str(uuid.uuid4())
    copy["headers"]["id"] = copy["properties"]["correlation_id"] = task_id
    copy["properties"]["delivery_tag"] = str(uuid.uuid4())
    copy["body"] = base64.b64encode(body).decode()
    copy["content-type"] = content_type
    return task_id, json.dumps(copy)


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_tampered_and_forged_messages_are_dead_lettered_and_the_worker_keeps_running(
    celery_worker_factory, redis_client,
) -> None:
    marker, parked, queue = uuid.uuid4().hex, queue_name("enc-parked"), queue_name("enc-tamper")
    app.send_task(NOTIFY, kwargs=marked(marker), queue=parked)
    [envelope] = queued(redis_client, parked)
    token = body_of(envelope).decode()
    plain = json.dumps([[], marked(marker), {}]).encode()
    cases = {
        "flipped byte": (tampered(envelope, flipped(token).encode()), "not authentic under any of the 1 configured"),
        "truncated": (tampered(envelope, truncated(token).encode()), "truncated or malformed"),
        "unknown key": (tampered(envelope, payload_encryption.dumps([[], marked(marker), {}], keys=[KEY_C]).encode()),
                        "not authentic"),
        "forged plain JSON": (tampered(envelope, plain, content_type="application/json"),
                              "takes only encrypted messages"),
    }
    for (_, raw), _ in cases.values():
        redis_client.lpush(queue, raw)
    node = celery_worker_factory([queue], concurrency=1)

    for name, ((task_id, _), reason) in cases.items():
        letter = wait_for_dead_letter(task_id)
        assert letter.reason == "poison_message" and reason in letter.exception, (name, letter.exception)
        assert (letter.task_name, letter.args, letter.kwargs) == (NOTIFY, [], {}), name
        stored = {f.name: str(getattr(letter, f.name)) for f in DeadLetter._meta.fields}
        assert not [field for field, value in stored.items() if marker in value], (name, stored)
    # The forged plain message is kept sealed, and can still be requeued (encrypted this time).
    forged = DeadLetter.objects.get(task_id=cases["forged plain JSON"][0][0])
    assert deadletter.arguments(forged)[1] == marked(marker)

    assert app.control.ping(destination=[node], timeout=scaled(5)), "the worker stopped"
    good = app.send_task(NOTIFY, kwargs=marked(marker), queue=queue)
    assert good.get(timeout=scaled(30))["channel"] == "in_app"
    redis_client.delete(parked)
    assert_nowhere_in_redis(redis_client, marker)


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_rotation_with_messages_in_flight(celery_worker_factory, redis_client) -> None:
    """Published with key A; a worker started with B,A runs them all; one with only B dead-letters them
    (nothing lost), and once requeued by a client that has both keys they run on the B-only worker."""
    marker = uuid.uuid4().hex
    first, second = queue_name("rot-ba"), queue_name("rot-b")
    with override_settings(PAYLOAD_ENCRYPTION_KEYS=[KEY_A]):
        in_flight = [app.send_task(NOTIFY, kwargs=marked(f"{marker}-{i}"), queue=first) for i in range(5)]
        orphaned = [app.send_task(NOTIFY, kwargs=marked(f"{marker}-{i}"), queue=second) for i in range(3)]

    celery_worker_factory([first], concurrency=2, extra_env={env_names.PAYLOAD_ENCRYPTION_KEYS: f"{KEY_B},{KEY_A}"})
    with override_settings(PAYLOAD_ENCRYPTION_KEYS=[KEY_B, KEY_A]):
        assert [r.get(timeout=scaled(30))["channel"] for r in in_flight] == ["in_app"] * 5
    # The worker sealed the results with B, its first key: A alone no longer reads them.
    with override_settings(PAYLOAD_ENCRYPTION_KEYS=[KEY_A]), pytest.raises(PayloadDecryptionError):
        payload_encryption.loads(TaskResult.objects.get(task_id=in_flight[0].id).result)

    celery_worker_factory([second], concurrency=2, extra_env={env_names.PAYLOAD_ENCRYPTION_KEYS: KEY_B})
    letters = [wait_for_dead_letter(r.id) for r in orphaned]
    assert all(letter.reason == "poison_message" and "not authentic" in letter.exception for letter in letters)
    with override_settings(PAYLOAD_ENCRYPTION_KEYS=[KEY_B, KEY_A]):
        again = [app.AsyncResult(deadletter.requeue(letter)) for letter in letters]
        assert [r.get(timeout=scaled(30))["channel"] for r in again] == ["in_app"] * 3
