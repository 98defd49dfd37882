"""Claim-check of large task payloads: a message body above TASK_CLAIM_CHECK_BYTES (after compression) is stored
in the database (``models.PayloadClaim``) and the message in the broker carries only a reference to it.

The reference is a small JSON body of content type ``CONTENT_TYPE``, registered as the kombu serializer
``SERIALIZER`` (decode only): its ``loads`` fetches the stored body and decodes it with the content type it was
serialized with, so any consumer reads a claim-checked message like any other. The project's worker does it
before anything else looks at the message (worker_steps.DeadLetteringConsumer): in its main process
``open_message`` puts the stored body, content type and encoding in place of the reference, so the guards of
apps.main.delivery and the pool process see the message as it was published, and the body is fetched once.

Lifecycle of a claim:

* written by the publisher (apps.main.large_payloads) before the message is sent — never inside a database
  transaction, where no worker could read it before the commit (``ClaimInTransaction``);
* kept while its message is in the broker: after a crash ``reject_on_worker_lost`` and the visibility timeout
  deliver the same message again, and it must find its body;
* deleted once its message is acknowledged or rejected without requeue (``release_after_ack``): the task
  succeeded, failed for good, was revoked, or was retried — a retry is a new message with a claim of its own;
* kept while a pending dead letter refers to it (``DeadLetter.payload_claim``): a requeue sends its body again,
  then deletes it, as a discard does;
* an orphan — its publish failed after the row was written, its queue was purged, its dead letter deleted — is
  deleted by ``prune`` (cleanup_temp_files, hourly) once older than TASK_CLAIM_RETENTION_HOURS.

A reference whose claim is missing, belongs to another task or does not decompress is refused with
``ClaimError`` (the worker dead-letters the message with that reason); a database that does not answer is
``ClaimUnavailable``, which the worker waits out. Importing this module registers the serializer (the settings do
it before Celery reads ``accept_content``); it touches no model until used.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connection
from kombu.asynchronous import get_event_loop
from kombu.compression import decompress
from kombu.serialization import loads as kombu_loads
from kombu.serialization import prepare_accept_content, register

SERIALIZER = "payload-claim"
CONTENT_TYPE = "application/x-payload-claim"
CONTENT_ENCODING = "utf-8"
#: The message header the worker sets to the claim's id once it opened a claim-checked message: the pool process
#: (``task.request.payload_claim``), the dead letters and the release after the ack read it there.
HEADER = "payload_claim"
#: Seconds between the worker's attempts to fetch a claim while the database does not answer, and how long it
#: keeps trying before it dead-letters the message (the claim is kept: a requeue runs it); as long as the result
#: backend waits out a database restart (settings: about 2 minutes).
FETCH_RETRY_SECONDS = 2.0
FETCH_PATIENCE_SECONDS = 120.0
#: Event-loop turns the release waits for the acknowledgement it follows (Celery sends acks on the next turn).
_RELEASE_TURNS = 3

logger = logging.getLogger(__name__)

#: A database that did not answer: worth another attempt, unlike a missing row.
_UNAVAILABLE = (OperationalError, InterfaceError)
#: The claim of the request whose failure is being recorded in the worker's main process (hard time limit).
_in_hand: contextvars.ContextVar[str | None] = contextvars.ContextVar("payload_claim_in_hand", default=None)


class ClaimError(ValueError):
    """A claim reference that cannot be honoured (missing, foreign, unreadable); its message says why."""


class ClaimUnavailable(ClaimError):
    """The database did not answer while fetching a claim: try again later."""


class ClaimInTransaction(RuntimeError):
    """A claim written inside a transaction would be invisible to workers until the commit."""


@dataclass(frozen=True)
class Stored:
    """A claimed body as it was serialized (decompressed), with its content type and encoding."""

    body: bytes
    content_type: str
    content_encoding: str


# --- the reference --------------------------------------------------------------------------------------


def reference(claim_id: uuid.UUID | str) -> bytes:
    """The body a claim-checked message carries instead of its own."""
    return json.dumps({HEADER: str(claim_id)}).encode(CONTENT_ENCODING)


def claim_id_of(body: bytes | str | None) -> uuid.UUID:
    """The claim id in a reference body; ClaimError when it is none."""
    try:
        return uuid.UUID(str(json.loads(body or b"")[HEADER]))
    except (ValueError, TypeError, KeyError):
        raise ClaimError("the message's body is not a payload claim reference") from None


def claim_of(message: Any) -> str | None:
    """The claim id of a kombu message: opened (its header) or not (its reference body); None for any other."""
    headers = getattr(message, "headers", None) or {}
    if headers.get(HEADER):
        return str(headers[HEADER])
    if getattr(message, "content_type", None) == CONTENT_TYPE:
        with contextlib.suppress(ClaimError):
            return str(claim_id_of(message.body))
    return None


# --- publisher side ---------------------------------------------------------------------------------------


def store(*, task_id: str, task_name: str, body: bytes, content_type: str, content_encoding: str,
          compression: str, size: int) -> uuid.UUID:
    """Write a claim and return its id; the caller then publishes ``reference(id)``."""
    from apps.main.models import PayloadClaim

    if connection.in_atomic_block:
        raise ClaimInTransaction(
            f"the message of {task_name} is claim-checked (its body is stored in the database) and cannot be sent "
            "from inside a database transaction: no worker could read the body before the commit — publish it "
            "after the commit (transaction.on_commit)"
        )
    claim = PayloadClaim.objects.create(task_id=task_id, task_name=task_name, body=body, content_type=content_type,
                                        content_encoding=content_encoding, compression=compression, size=size)
    return claim.id


# --- consumer side ------------------------------------------------------------------------------------------


# The worker's main process runs these two statements for every claimed message, in its event loop: as SQL they
# cost about a quarter of the ORM's query building and model instances (0.37 ms against 1.3 ms, both on 2 cores).
@functools.cache
def _statements() -> tuple[str, str]:
    """(fetch, release), on the models' tables."""
    from apps.main.models import DeadLetter, PayloadClaim

    claims, letters = PayloadClaim._meta.db_table, DeadLetter._meta.db_table
    return (f"SELECT task_id, task_name, body, content_type, content_encoding, compression FROM {claims} "
            "WHERE id = %s",
            f"DELETE FROM {claims} WHERE id = %s AND NOT EXISTS (SELECT 1 FROM {letters} WHERE payload_claim = %s "
            "AND status = %s)")


def _db_id(claim_id: uuid.UUID | str) -> Any:
    """The claim id as the database column holds it (a uuid in PostgreSQL, 32 hex characters in SQLite)."""
    from apps.main.models import PayloadClaim

    return PayloadClaim._meta.pk.get_db_prep_value(uuid.UUID(str(claim_id)), connection)


def fetch(claim_id: uuid.UUID | str, *, task_id: str | None = None, task_name: str | None = None) -> Stored:
    """The body of a claim, decompressed. ``task_id``/``task_name``: the message's, which the claim must be of."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(_statements()[0], [_db_id(claim_id)])
            row = cursor.fetchone()
    except _UNAVAILABLE as exc:
        _drop_connection()
        raise ClaimUnavailable(f"payload claim {claim_id}: the database did not answer ({type(exc).__name__}: "
                               f"{exc})") from None
    if row is None:
        raise ClaimError(f"payload claim {claim_id} does not exist: deleted, or pruned after "
                         "TASK_CLAIM_RETENTION_HOURS — the task's arguments are lost")
    owner_id, owner_name, body, content_type, content_encoding, compression = row
    if (task_id and owner_id != task_id) or (task_name and owner_name != task_name):
        raise ClaimError(f"payload claim {claim_id} belongs to {owner_name}[{owner_id}], not to "
                         f"{task_name}[{task_id}]: a forged or copied message — not run")
    body = bytes(body)
    if compression:
        try:
            body = decompress(body, compression)
        except Exception as exc:
            raise ClaimError(f"payload claim {claim_id}: its body does not decompress as {compression} "
                             f"({type(exc).__name__}: {exc})") from None
    return Stored(body, content_type, content_encoding)


def open_message(message: Any) -> str | None:
    """Put the claimed body, content type and encoding of a claim-checked kombu ``message`` in place of its
    reference and name the claim in its ``HEADER``; returns the claim id (None for any other message, whose
    ``HEADER`` is removed: only a reference names a claim). Raises ClaimError or ClaimUnavailable."""
    headers = message.headers
    if message.content_type != CONTENT_TYPE:
        headers.pop(HEADER, None)
        return None
    claim_id = claim_id_of(message.body)
    stored = fetch(claim_id, task_id=headers.get("id"), task_name=headers.get("task"))
    if stored.content_type == CONTENT_TYPE:
        raise ClaimError(f"payload claim {claim_id} holds another claim reference: not run")
    message.body, message.content_type, message.content_encoding = (stored.body, stored.content_type,
                                                                    stored.content_encoding)
    headers[HEADER] = str(claim_id)
    return str(claim_id)


def loads(data: bytes | str) -> Any:
    """The registered decoder: the claimed body decoded with its own content type (any consumer)."""
    stored = fetch(claim_id_of(data))
    accepted = _accepted_content() - {CONTENT_TYPE}  # a claim never refers to another one
    return kombu_loads(stored.body, stored.content_type, stored.content_encoding, accept=accepted)


def _accepted_content() -> set[str]:
    from django.conf import settings

    return set(prepare_accept_content(settings.CELERY_ACCEPT_CONTENT))


# --- after the ack, dead letters, pruning -----------------------------------------------------------------------


def release_after_ack(message: Any, claim_id: str, *, turns: int = _RELEASE_TURNS) -> None:
    """Delete the claim once ``message`` is acknowledged (or rejected without requeue) — never before: until then a
    crash delivers the message again. Celery sends the ack on the event loop's next turn; this waits for it a few
    turns, and an ack that failed (connection lost: the message comes back) keeps the claim."""
    if getattr(message, "acknowledged", True):
        release(claim_id)
        return
    hub = get_event_loop()
    if hub is None or turns <= 0:
        logger.info("payload claim %s kept: its message is not acknowledged (the broker will deliver it again)",
                    claim_id)
        return
    hub.call_soon(functools.partial(release_after_ack, message, claim_id, turns=turns - 1))


def release(claim_id: str | uuid.UUID) -> bool:
    """Delete a claim unless a pending dead letter refers to it; never raises (a claim left over is pruned)."""
    from apps.main.models import DeadLetter

    try:
        with connection.cursor() as cursor:
            db_id = _db_id(claim_id)
            cursor.execute(_statements()[1], [db_id, db_id, DeadLetter.Status.PENDING.value])
            deleted = cursor.rowcount
    except DatabaseError as exc:
        if isinstance(exc, _UNAVAILABLE):
            _drop_connection()
        logger.warning("payload claim %s not deleted, cleanup_temp_files will: %s: %s", claim_id,
                       type(exc).__name__, exc)
        return False
    return bool(deleted)


def discard(claim_id: str | uuid.UUID | None) -> None:
    """Delete a claim whatever refers to it (its dead letter was requeued or discarded)."""
    from apps.main.models import PayloadClaim

    if claim_id:
        PayloadClaim.objects.filter(pk=claim_id).delete()


def prune(now: Any = None) -> int:
    """Delete claims older than TASK_CLAIM_RETENTION_HOURS that no pending dead letter refers to; returns how many."""
    from django.conf import settings
    from django.utils import timezone

    from apps.main.models import PayloadClaim

    horizon = (now or timezone.now()) - timedelta(hours=settings.TASK_CLAIM_RETENTION_HOURS)
    deleted, _ = PayloadClaim.objects.filter(created__lt=horizon).exclude(pk__in=_held()).delete()
    if deleted:
        logger.warning("deleted %d payload claim(s) older than %d h that no message or dead letter took "
                       "(failed publishes, purged queues)", deleted, settings.TASK_CLAIM_RETENTION_HOURS)
    return deleted


def _held() -> Any:
    """The claims pending dead letters refer to (a subquery)."""
    from apps.main.models import DeadLetter

    return DeadLetter.objects.filter(status=DeadLetter.Status.PENDING, payload_claim__isnull=False).values(
        "payload_claim")


def arguments(claim_id: str | uuid.UUID) -> tuple[list[Any], dict[str, Any]]:
    """The args and kwargs of a claimed task body (decrypted if it is sealed); ClaimError if it cannot be read."""
    stored = fetch(claim_id)
    try:
        body = kombu_loads(stored.body, stored.content_type, stored.content_encoding,
                           accept=_accepted_content() - {CONTENT_TYPE})
    except Exception as exc:
        raise ClaimError(f"payload claim {claim_id} does not decode: {exc}") from None
    if not (isinstance(body, (list, tuple)) and len(body) >= 2 and isinstance(body[1], dict)):
        raise ClaimError(f"payload claim {claim_id} holds no task arguments")
    return list(body[0]), dict(body[1])


@contextlib.contextmanager
def in_hand(claim_id: str | None) -> Iterator[None]:
    """Within: ``claim_in_hand()`` is ``claim_id`` (a request's failure handled in the worker's main process)."""
    token = _in_hand.set(claim_id)
    try:
        yield
    finally:
        _in_hand.reset(token)


def claim_in_hand() -> str | None:
    return _in_hand.get()


def _drop_connection() -> None:
    # The worker's main process keeps one connection: after a failure it must not be reused as it is.
    if not connection.in_atomic_block:
        with contextlib.suppress(Exception):
            connection.close()


register(SERIALIZER, None, loads, content_type=CONTENT_TYPE, content_encoding=CONTENT_ENCODING)

