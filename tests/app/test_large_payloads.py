"""Large task payloads (apps.main.large_payloads, apps.main.payload_claims) on real Valkey, PostgreSQL and workers.

Messages are read straight from Redis: above TASK_COMPRESSION_THRESHOLD_BYTES (or for a task of
``queues.COMPRESSED_TASKS``) the body is compressed, whatever path published it; above TASK_CLAIM_CHECK_BYTES
the message holds only a reference and the body is in the database. Through real workers: the task gets its whole
arguments, the claim is gone once the message is acknowledged (also after a retry), survives a kill -9 mid-task
until the redelivered message succeeds, stays with a dead letter (a failure in the pool process, or the hard time
limit handled in the main process) until its requeue, waits out a database the worker cannot reach, and a missing,
foreign or corrupt claim is dead-lettered with its reason while the worker runs on. Above TASK_MAX_PAYLOAD_BYTES
nothing is sent (the API: 413); a codec kombu lacks stops start-up in one line.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import pytest
from celery.beat import ScheduleEntry, Scheduler
from django.conf import settings
from django.db import transaction
from django.test import Client, override_settings
from django.utils import timezone
from kombu.compression import decompress
from kombu.serialization import loads as kombu_loads

from apps.main import deadletter, payload_claims, payload_encryption
from apps.main.large_payloads import PayloadTooLarge
from apps.main.models import DeadLetter, PayloadClaim
from apps.main.queues import WorkerPool, task_name
from embedded.network import wait_until
from embedded.supervisor import Supervisor
from portfolio_site import environment as env_names
from portfolio_site.celery import app
from tests.app.payload_tasks import DIGEST, FLAKY, GATED, HELD, STUCK, measured
from tests.app.procs import APP_DIR, manage
from tests.app.test_payload_encryption import assert_nowhere_in_redis, body_of, marked, queued
from tests.app.test_settings import SETUP, production_env, python
from tests.app.test_tasks_live import wait_for_dead_letter
from tests.conftest import start_worker
from tests.support.tcpproxy import tcp_proxy
from tests.support.timeouts import scaled

pytestmark = pytest.mark.django_db(transaction=True)

ZLIB = "application/x-gzip"
ACTION, ANALYTICS, BACKUP, NOTIFY = (task_name(t) for t in ("process_user_action", "update_analytics", "backup_data",
                                                            "send_notification"))
#: What the test workers load besides the app's tasks, and how they find it (they run in app/).
TASK_ENV = {"TEST_TASK_MODULES": "tests.app.payload_tasks",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(APP_DIR.parent), os.environ.get("PYTHONPATH")]))}


def random_text(chars: int) -> str:
    """Text that compresses only to about 3/4 (base64 of random bytes): stays large after compression."""
    return secrets.token_urlsafe(chars * 3 // 4)[:chars]


def repetitive_text(chars: int) -> str:
    """Text that compresses well (log lines)."""
    line = "".join(f"event {i} of user-{i % 97}: ok; " for i in range(200))
    return (line * (chars // len(line) + 1))[:chars]


def a_queue(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def only_message(redis_client: Any, queue: str) -> dict[str, Any]:
    [message] = queued(redis_client, queue)
    return message


def wire_body(message: dict[str, Any]) -> bytes:
    """The body as Redis holds it (base64 decoded, still compressed)."""
    return base64.b64decode(message["body"])


def task_body(message: dict[str, Any]) -> list[Any]:
    """The decoded task body of a queued (not claim-checked) message (body_of decompresses it)."""
    return json.loads(body_of(message))


def claims_of(task_id: str) -> list[PayloadClaim]:
    return list(PayloadClaim.objects.filter(task_id=task_id))


def wait_no_claims(task_id: str) -> None:
    wait_until(lambda: not PayloadClaim.objects.filter(task_id=task_id).exists(), timeout=scaled(30),
               what=f"the payload claims of {task_id} to be deleted")


# --- publishing: every path compresses; the limits -------------------------------------------------------


def publish_send_task(queue: str, kwargs: dict[str, Any]) -> str:
    return app.send_task(BACKUP, kwargs=kwargs, queue=queue).id  # the API's way, and any client's by name


def publish_apply_async(queue: str, kwargs: dict[str, Any]) -> str:
    from apps.main.tasks import backup_data

    return backup_data.apply_async(kwargs=kwargs, queue=queue).id


def publish_beat(queue: str, kwargs: dict[str, Any]) -> str:
    entry = ScheduleEntry(name=f"big-{queue}", task=BACKUP, kwargs=kwargs, options={"queue": queue}, app=app)
    return Scheduler(app, lazy=True).apply_async(entry, advance=False).id  # beat's producer: app.amqp.Producer


def publish_requeue(queue: str, kwargs: dict[str, Any]) -> str:
    letter = deadletter.record(task_id=str(uuid.uuid4()), task_name=BACKUP, args=[], kwargs=kwargs, queue=queue,
                               reason="permanent_error", exception="PermanentError: x")
    assert letter is not None and not letter.sanitised
    return deadletter.requeue(letter)


@pytest.mark.parametrize("publish", [publish_send_task, publish_apply_async, publish_beat, publish_requeue])
def test_every_publishing_path_compresses_a_body_above_the_threshold(publish: Any, redis_client) -> None:
    # backup_data is not in COMPRESSED_TASKS: its body is compressed for its size alone.
    queue, kwargs = a_queue("big-path"), {"models": ["main.UserAction"] * settings.TASK_COMPRESSION_THRESHOLD_BYTES}
    task_id = publish(queue, kwargs)
    message = only_message(redis_client, queue)
    assert message["headers"]["id"] == task_id
    assert message["headers"]["compression"] == ZLIB and message["content-type"] == "application/json"
    assert len(wire_body(message)) < settings.TASK_COMPRESSION_THRESHOLD_BYTES / 10  # one label again and again
    assert task_body(message)[1] == kwargs
    redis_client.delete(queue)


def test_compression_per_task_and_only_when_it_shrinks_the_body(redis_client) -> None:
    queue = a_queue("small")
    action = {"action_id": "a-1", "user_id": "u-1", "action": "login"}
    app.send_task(ACTION, kwargs=action, queue=queue)  # in COMPRESSED_TASKS: compressed however small
    app.send_task(ANALYTICS, kwargs={"window_minutes": 5}, queue=queue)  # not: small bodies stay as they are
    with override_settings(TASK_COMPRESSION="lzma"):  # lzma's header is larger than such a body: sent plain
        app.send_task(ACTION, kwargs=action, queue=queue)
    compressed, plain, not_shrunk = reversed(queued(redis_client, queue))  # LPUSH: the newest first
    assert compressed["headers"]["compression"] == ZLIB and task_body(compressed)[1] == action
    assert "compression" not in plain["headers"] and task_body(plain)[1] == {"window_minutes": 5}
    assert "compression" not in not_shrunk["headers"] and task_body(not_shrunk)[1] == action
    redis_client.delete(queue)


def test_above_the_claim_limit_the_message_holds_only_a_reference(redis_client) -> None:
    queue, payload = a_queue("claimed"), random_text(2 * settings.TASK_CLAIM_CHECK_BYTES)
    task_id = app.send_task(DIGEST, kwargs={"payload": payload}, queue=queue).id
    raw_message = redis_client.lindex(queue, 0)
    message = json.loads(raw_message)
    [claim] = claims_of(task_id)
    assert message["content-type"] == payload_claims.CONTENT_TYPE and "compression" not in message["headers"]
    assert body_of(message) == payload_claims.reference(claim.id) and len(raw_message) < 3000
    assert (claim.task_name, claim.content_type, claim.compression) == (DIGEST, "application/json", ZLIB)
    # Compressed (base64 text: to about 3/4) and still above the limit; size is the body's before compression.
    stored = bytes(claim.body)
    assert settings.TASK_CLAIM_CHECK_BYTES < len(stored) < 0.8 * claim.size and claim.size > len(payload)
    assert json.loads(decompress(stored, ZLIB))[1] == {"payload": payload}
    # Any consumer decodes the reference through the registered serializer: the body comes from the database.
    decoded = kombu_loads(body_of(message), payload_claims.CONTENT_TYPE, "utf-8",
                          accept={payload_claims.CONTENT_TYPE})
    assert decoded[1] == {"payload": payload}
    redis_client.delete(queue)


def test_an_encrypted_claim_holds_only_ciphertext(redis_client) -> None:
    queue, marker = a_queue("sealed"), uuid.uuid4().hex
    kwargs = marked(marker, message=f"{marker} {random_text(2 * settings.TASK_CLAIM_CHECK_BYTES)}")
    task_id = app.send_task(NOTIFY, kwargs=kwargs, queue=queue).id
    [claim] = claims_of(task_id)
    assert claim.content_type == payload_encryption.CONTENT_TYPE
    token = decompress(bytes(claim.body), claim.compression).decode()
    assert payload_encryption.is_token(token) and marker not in token
    assert payload_encryption.loads(token)[1] == kwargs
    assert_nowhere_in_redis(redis_client, marker)
    redis_client.delete(queue)


def test_a_claim_is_never_written_inside_a_transaction(redis_client) -> None:
    queue, payload = a_queue("in-transaction"), random_text(2 * settings.TASK_CLAIM_CHECK_BYTES)
    with transaction.atomic(), pytest.raises(payload_claims.ClaimInTransaction, match=r"transaction\.on_commit"):
        app.send_task(DIGEST, kwargs={"payload": payload}, queue=queue)
    assert redis_client.llen(queue) == 0 and not PayloadClaim.objects.filter(task_name=DIGEST).exists()


def test_above_the_maximum_nothing_is_sent_and_the_api_answers_413(redis_client) -> None:
    queue = a_queue("too-large")
    with override_settings(TASK_MAX_PAYLOAD_BYTES=20_000):
        with pytest.raises(PayloadTooLarge, match=r"more than TASK_MAX_PAYLOAD_BYTES \(20000\): not sent"):
            app.send_task(DIGEST, kwargs={"payload": "x" * 20_000}, queue=queue)
        api = Client(HTTP_AUTHORIZATION=f"Bearer {settings.API_TOKEN}")
        body = {"action_id": "big-1", "user_id": "u", "action": "upload", "payload": {"blob": "x" * 30_000}}
        answer = api.post("/api/tasks/process_user_action/", data=json.dumps(body), content_type="application/json")
    assert redis_client.llen(queue) == 0 and not PayloadClaim.objects.exists()
    assert answer.status_code == 413, answer.content
    assert answer.json()["detail"].startswith(f"the message of {ACTION} would be ")
    assert answer.json()["detail"].endswith("more than TASK_MAX_PAYLOAD_BYTES (20000): not sent")


def test_a_maximum_below_what_the_api_reads_is_a_deploy_warning(live_env: dict[str, str]) -> None:
    checked = manage("check", env={**live_env, env_names.API_MAX_BODY_BYTES: "2000000",
                                   env_names.TASK_MAX_PAYLOAD_BYTES: "1000000"})
    assert "(main.W002) TASK_MAX_PAYLOAD_BYTES (1000000) is below API_MAX_BODY_BYTES (2000000)" in checked.stderr, \
        checked.stdout + checked.stderr
    assert "main.W002" not in manage("check", env={**live_env, env_names.API_MAX_BODY_BYTES: "2000000"}).stderr


@pytest.mark.parametrize(("codec", "reason"), [
    ("snappy", "TASK_COMPRESSION: 'snappy' is not a compression kombu knows; use one of zlib, gzip, bzip2, lzma"),
    ("zstd", "TASK_COMPRESSION: 'zstd' needs the Python package backports.zstd, which is not installed"),
])
def test_a_codec_kombu_lacks_stops_start_up_in_one_line(codec: str, reason: str) -> None:
    from apps.main.large_payloads import available_codecs

    if codec in available_codecs():
        pytest.skip(f"{codec} is installed here")
    done = python(SETUP, production_env(**{env_names.TASK_COMPRESSION: codec}))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"settings: {reason}") and len(done.stderr.splitlines()) == 1, done.stderr
    assert python(SETUP, production_env(**{env_names.TASK_COMPRESSION: "bzip2"})).returncode == 0


def test_cleanup_prunes_old_orphans_but_not_the_claims_of_pending_dead_letters() -> None:
    from apps.main.tasks import cleanup_temp_files

    def claim(hours_old: float) -> uuid.UUID:
        claim_id = payload_claims.store(task_id=str(uuid.uuid4()), task_name=DIGEST, body=b"[[], {}, {}]",
                                        content_type="application/json", content_encoding="utf-8", compression="",
                                        size=12)
        PayloadClaim.objects.filter(pk=claim_id).update(created=timezone.now() - timedelta(hours=hours_old))
        return claim_id

    retention = settings.TASK_CLAIM_RETENTION_HOURS
    orphan, young, held, released = claim(retention + 1), claim(retention - 1), claim(retention + 1), \
        claim(retention + 1)
    for claim_id, status in ((held, DeadLetter.Status.PENDING), (released, DeadLetter.Status.DISCARDED)):
        deadletter.record(task_id=str(uuid.uuid4()), task_name=DIGEST, args=[], kwargs={}, queue="q",
                          reason="permanent_error", exception="PermanentError: x", payload_claim=str(claim_id))
        DeadLetter.objects.filter(payload_claim=claim_id).update(status=status)
    removed = cleanup_temp_files.apply().get()["payload_claims_removed"]
    assert removed == 2
    assert set(PayloadClaim.objects.values_list("pk", flat=True)) == {young, held}
    assert not PayloadClaim.objects.filter(pk__in=[orphan, released]).exists()


# --- through workers ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def payload_queue(live_env: dict[str, str], process_logs: Path) -> Iterator[str]:
    """One worker (with the test tasks) on a queue of its own for this module's live tests: the queue's name."""
    queue = a_queue("payloads")
    supervisor = Supervisor(log_dir=process_logs, env=live_env)
    try:
        start_worker(supervisor, WorkerPool((queue,), 2), name=f"payloads-{queue[-8:]}", extra_env=TASK_ENV)
        yield queue
    finally:
        supervisor.stop_all()


@pytest.mark.live
def test_claimed_compressed_and_encrypted_payloads_run_whole_and_their_claims_go(payload_queue: str,
                                                                              redis_client) -> None:
    claimed, compressed = random_text(3 * settings.TASK_CLAIM_CHECK_BYTES), repetitive_text(3 * 1024 * 1024)
    results = {name: app.send_task(DIGEST, kwargs={"payload": payload}, queue=payload_queue)
               for name, payload in (("claimed", claimed), ("compressed", compressed))}
    marker = uuid.uuid4().hex
    sealed = app.send_task(NOTIFY, kwargs=marked(marker, message=f"{marker} {claimed}"), queue=payload_queue)
    assert results["claimed"].get(timeout=scaled(60)) == measured(claimed)
    assert results["compressed"].get(timeout=scaled(60)) == measured(compressed)
    assert sealed.get(timeout=scaled(60))["channel"] == "in_app"
    from apps.main.models import Notification

    assert Notification.objects.get(notification_id=sealed.id).message == f"{marker} {claimed}"
    for result in (*results.values(), sealed):
        wait_no_claims(result.id)
    assert not claims_of(results["compressed"].id)  # 3 MiB of log lines compress below the claim limit
    assert_nowhere_in_redis(redis_client, marker)


@pytest.mark.live
def test_a_retry_sends_a_claim_of_its_own_and_every_claim_goes(payload_queue: str) -> None:
    payload = random_text(2 * settings.TASK_CLAIM_CHECK_BYTES)
    result = app.send_task(FLAKY, kwargs={"payload": payload}, queue=payload_queue)
    assert result.get(timeout=scaled(60)) == {**measured(payload), "retries": 1}
    wait_no_claims(result.id)


def park_then_move(redis_client: Any, parked: str, queue: str) -> None:
    """Hand the message parked in ``parked`` (published there, no worker reads it) to ``queue``'s worker."""
    assert redis_client.lmove(parked, queue, "RIGHT", "LEFT") is not None


@pytest.mark.live
def test_a_missing_foreign_or_corrupt_claim_is_dead_lettered_with_its_reason(payload_queue: str,
                                                                             redis_client) -> None:
    payload, parked = random_text(2 * settings.TASK_CLAIM_CHECK_BYTES), a_queue("parked")
    missing, foreign, corrupt, donor = (app.send_task(DIGEST, kwargs={"payload": payload}, queue=parked).id
                                        for _ in range(4))
    PayloadClaim.objects.filter(task_id=missing).delete()
    # The foreign one's reference now names another task's claim: a message copied or forged in Redis.
    [donor_claim] = claims_of(donor)
    entries = {json.loads(raw)["headers"]["id"]: raw for raw in redis_client.lrange(parked, 0, -1)}
    forged = json.loads(entries[foreign])
    forged["body"] = base64.b64encode(payload_claims.reference(donor_claim.id)).decode()
    redis_client.lrem(parked, 1, entries[foreign])
    redis_client.rpush(parked, json.dumps(forged))
    PayloadClaim.objects.filter(task_id=corrupt).update(body=b"not zlib at all")
    redis_client.lrem(parked, 1, entries[donor])
    for _ in range(3):
        park_then_move(redis_client, parked, payload_queue)

    reasons = {missing: "does not exist: deleted, or pruned after TASK_CLAIM_RETENTION_HOURS",
               foreign: f"belongs to {DIGEST}[{donor}], not to {DIGEST}[{foreign}]",
               corrupt: "its body does not decompress as application/x-gzip"}
    for task_id, reason in reasons.items():
        letter = wait_for_dead_letter(task_id, timeout=scaled(30))
        assert letter.reason == "poison_message" and reason in letter.exception, (task_id, letter.exception)
        assert letter.exception.startswith("ClaimError: ") and letter.payload_claim is not None
    # The corrupt claim is kept with its letter (the evidence); the worker runs on.
    assert PayloadClaim.objects.filter(task_id=corrupt).exists()
    good = app.send_task(DIGEST, kwargs={"payload": payload}, queue=payload_queue)
    assert good.get(timeout=scaled(60)) == measured(payload)


def acknowledged(redis_client: Any, queue: str, task_id: str) -> None:
    """Wait until the message of ``task_id`` is acknowledged (out of Redis' unacked hash), then until the worker of
    ``queue`` has run one more task: by then it did what follows an ack (the claim's release) for that message."""
    wait_until(lambda: not any(task_id.encode() in value for value in redis_client.hvals("unacked")),
               timeout=scaled(30), what=f"the message of {task_id} to be acknowledged")
    assert app.send_task(DIGEST, kwargs={"payload": "after"}, queue=queue).get(timeout=scaled(30)) == \
        measured("after")


@pytest.mark.live
def test_a_dead_letter_keeps_its_claim_and_its_requeue_sends_the_whole_body(payload_queue: str, tmp_path: Path,
                                                                          redis_client) -> None:
    payload, gate = random_text(2 * settings.TASK_CLAIM_CHECK_BYTES), tmp_path / "gate"
    failed = app.send_task(GATED, kwargs={"payload": payload, "gate": str(gate)}, queue=payload_queue)
    with pytest.raises(Exception, match="is closed"):
        failed.get(timeout=scaled(60))
    letter = wait_for_dead_letter(failed.id)
    acknowledged(redis_client, payload_queue, failed.id)
    [claim] = claims_of(failed.id)  # acknowledged, but kept: the letter refers to it
    assert letter.payload_claim == claim.id and letter.reason == "permanent_error"
    assert letter.sanitised  # its own copy of the arguments was cut: only the claim has them whole
    assert deadletter.arguments(letter) == ([], {"payload": payload, "gate": str(gate)})

    gate.touch()
    again = app.AsyncResult(deadletter.requeue(letter))
    assert again.get(timeout=scaled(60)) == measured(payload)
    assert not claims_of(failed.id)  # the requeued message carried a claim of its own
    wait_no_claims(again.id)


@pytest.mark.live
def test_the_worker_waits_out_a_database_outage_before_opening_a_claim(celery_worker_factory,
                                                                       live_env: dict[str, str]) -> None:
    """The worker reaches PostgreSQL through a forwarder the test cuts: the claim cannot be fetched, the message
    waits (not dead-lettered) and runs once the database answers again."""
    database = urlsplit(live_env["DATABASE_URL"])
    queue, payload = a_queue("db-outage"), random_text(2 * settings.TASK_CLAIM_CHECK_BYTES)
    with tcp_proxy(database.hostname or "127.0.0.1", database.port or 5432) as proxy:
        through = urlunsplit(database._replace(
            netloc=f"{database.username}:{database.password}@127.0.0.1:{proxy.port}"))
        celery_worker_factory([queue], concurrency=1, extra_env={**TASK_ENV, env_names.DATABASE_URL: through})
        log = celery_worker_factory.supervisor.children[-1].log_path
        proxy.cut()
        result = app.send_task(DIGEST, kwargs={"payload": payload}, queue=queue)
        wait_until(lambda: f"payload claim {claims_of(result.id)[0].id}: the database did not answer"
                   in log.read_text(), timeout=scaled(30), what="the worker to find the database gone")
        assert not DeadLetter.objects.filter(task_id=result.id).exists()
        proxy.restore()
        assert result.get(timeout=scaled(90)) == measured(payload)
        wait_no_claims(result.id)  # deleted by the worker after the ack: through the forwarder too


@pytest.mark.live
def test_a_task_past_its_hard_time_limit_is_dead_lettered_with_its_claim(payload_queue: str, redis_client) -> None:
    """The hard time limit kills the pool process; the failure is recorded in the worker's main process, which
    hands the claim to the dead letter before the message is acknowledged."""
    payload = random_text(2 * settings.TASK_CLAIM_CHECK_BYTES)
    result = app.send_task(STUCK, kwargs={"payload": payload}, queue=payload_queue, soft_time_limit=1, time_limit=3)
    letter = wait_for_dead_letter(result.id, timeout=scaled(60))
    acknowledged(redis_client, payload_queue, result.id)
    [claim] = claims_of(result.id)
    assert (letter.reason, letter.exception, letter.payload_claim) == ("time_limit", "TimeLimitExceeded: "
                                                                       "TimeLimitExceeded(3,)", claim.id)
    assert deadletter.arguments(letter) == ([], {"payload": payload})


# --- a worker killed mid-task ---------------------------------------------------------------------------------


def kill_tree(pid: int) -> None:
    """SIGKILL a process and its children, children first (the OOM killer takes a pod's processes at once)."""
    process = psutil.Process(pid)
    for child in process.children(recursive=True):
        child.send_signal(signal.SIGKILL)
    process.send_signal(signal.SIGKILL)


def started(directory: Path, delivery: int) -> int:
    """The pid of the pool process that began the task's ``delivery``-th run (waits for it)."""
    path = directory / f"started-{delivery}"
    return int(wait_until(lambda: path.exists() and path.read_text(), timeout=scaled(90),
                          what=f"delivery {delivery} of the held task"))


@pytest.mark.live
@pytest.mark.parametrize("what", ["pool process", "whole worker"])
def test_a_worker_killed_mid_task_gets_the_message_again_with_its_claim(
    what: str, celery_worker_factory, tmp_path: Path,
) -> None:
    """kill -9 of the pool process: the main process requeues the message (reject_on_worker_lost). Of the whole
    worker: the message stays in Redis' unacked hash until the other worker's sweep restores it after the
    visibility timeout. Either way the redelivered message finds its claim, runs whole, and the claim then goes."""
    queue, payload = a_queue("killed"), random_text(2 * settings.TASK_CLAIM_CHECK_BYTES)
    # Short, to wait less for the sweep; longer than this test holds the message before the kill.
    extra = {**TASK_ENV, env_names.VISIBILITY_TIMEOUT: "15"}
    workers = 2 if what == "whole worker" else 1
    for _ in range(workers):
        celery_worker_factory([queue], concurrency=1, extra_env=extra)
    result = app.send_task(HELD, kwargs={"payload": payload, "directory": str(tmp_path)}, queue=queue)
    try:
        first = started(tmp_path, 1)
        assert len(claims_of(result.id)) == 1
        kill_tree(first if what == "pool process" else psutil.Process(first).ppid())
        second = started(tmp_path, 2)
        assert second != first
        assert len(claims_of(result.id)) == 1  # the redelivered message found its claim, which is still there
    finally:
        (tmp_path / "release").touch()
    assert result.get(timeout=scaled(60)) == {**measured(payload), "deliveries": 2}
    wait_no_claims(result.id)

