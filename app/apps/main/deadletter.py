"""The dead-letter store: tasks that failed for good, kept with everything needed to run them again.

No letter is lost: ``record`` sanitises what PostgreSQL cannot hold (NUL characters, lone surrogates,
values that are not JSON, absurd sizes and depths; the letter is then flagged ``sanitised``), and
when the database does not take the letter it is spooled (``apps.main.deadletter_spool``) until
``flush_spool`` stores it.

A letter of a task with encrypted payloads (``apps.main.queues.ENCRYPTED_TASKS``) keeps its arguments sealed:
``args`` and ``kwargs`` are empty and ``raw_body`` holds the encrypted body (the message's own when it came
encrypted); ``arguments`` opens it, and ``requeue`` sends it again encrypted.

A letter of a claim-checked message (apps.main.payload_claims) keeps the claim — the whole body, which ``args``
and ``kwargs`` hold only up to the sanitising limits — while it is pending: ``arguments`` reads the claim, a
requeue sends it again and then deletes it, as a discard does. An encrypted task's letter then stores no sealed
copy of its own.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import close_old_connections, connection, transaction
from django.dispatch import Signal
from django.utils import timezone

from apps.main import deadletter_spool, payload_claims, payload_encryption
from apps.main.models import DeadLetter
from apps.main.queues import is_encrypted

logger = logging.getLogger(__name__)

#: Sent after a dead letter is stored (kwargs: letter); metrics count it.
dead_lettered = Signal()

# Limits of what a letter keeps; beyond them a value is cut and marked (``sanitised``).
#: exception, traceback and raw_body: characters kept of each.
MAX_TEXT_CHARS = 100_000
#: One string inside args or kwargs.
MAX_STRING_CHARS = 100_000
#: args, and kwargs, each: about this many characters of JSON.
MAX_ARGUMENTS_CHARS = 1_000_000
#: Containers nested deeper are replaced by a marker (the worker refuses deeper ones anyway).
MAX_ARGUMENT_DEPTH = 100
#: Integers longer than this are replaced by a marker (PostgreSQL and json both have digit limits).
MAX_INTEGER_BITS = 3000
#: Letters one flush stores when called with its default limit (health_check: a bounded job).
FLUSH_BATCH = 500

TRUNCATED = "…[truncated {count} chars]"
#: Room kept for TRUNCATED in fields with a hard maximum length.
_MARKER_ROOM = 40
TOO_DEEP = "…[nested deeper than {limit} levels]"
MORE_ITEMS = "…[{count} more items]"
MORE_KEYS_KEY = "…"
MORE_KEYS = "[{count} more keys]"


# --- sanitising ------------------------------------------------------------------------------------


def escape_text(text: str) -> tuple[str, bool]:
    """``text`` as PostgreSQL text and jsonb can hold it: NUL as the visible escape ``\\u0000``, lone
    surrogates as backslash escapes. Returns (text, changed)."""
    changed = False
    if "\x00" in text:
        text, changed = text.replace("\x00", "\\u0000"), True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text, changed = text.encode("utf-8", "backslashreplace").decode("utf-8"), True
    return text, changed


def clean_text(value: Any, limit: int) -> tuple[str, bool]:
    """Escaped text of at most ``limit`` characters, then a TRUNCATED marker if any were cut.
    Returns (text, changed)."""
    text, changed = _as_text(value)
    kept = text[:limit]
    escaped, escaped_changed = escape_text(kept)
    while len(escaped) > limit:  # escapes made it longer: keep proportionally less of the original
        kept = kept[: min(len(kept) - 1, len(kept) * limit // len(escaped))]
        escaped, _ = escape_text(kept)
    if len(kept) < len(text):
        return escaped + TRUNCATED.format(count=len(text) - len(kept)), True
    return escaped, changed or escaped_changed


def clean_char(value: Any, max_length: int) -> tuple[str, bool]:
    """Like ``clean_text``, for a column of ``max_length``: the marker counts too."""
    text, changed = clean_text(value, max_length)
    if len(text) > max_length:
        text, changed = clean_text(value, max_length - _MARKER_ROOM)
    return text, changed


def _as_text(value: Any) -> tuple[str, bool]:
    """A str (never raising); changed when ``value`` was not one."""
    if type(value) is str:
        return value, False
    if isinstance(value, str):
        return str.__str__(value), False
    return _safe_repr(value), True


def _safe_repr(value: Any) -> str:
    try:
        return str(value) if isinstance(value, BaseException) else repr(value)
    except Exception as exc:  # a broken __repr__, or one that recurses without end
        return f"<unrepresentable {type(value).__qualname__}: {type(exc).__name__}>"


@dataclass(slots=True)
class _Frame:
    """A container being copied: its items still to visit, and the copy being built."""

    items: Iterator[tuple[Any, Any]]
    copy: list[Any] | dict[str, Any]
    depth: int
    left: int


class _JsonSanitiser:
    """Copies a value into JSON that PostgreSQL's jsonb takes, walking it without recursion.

    Strings are escaped and cut at MAX_STRING_CHARS; dict keys become strings; values that are not
    JSON become their repr; NaN and infinities become strings; containers deeper than
    MAX_ARGUMENT_DEPTH become a marker; once about MAX_ARGUMENTS_CHARS of JSON are produced the
    remaining items of every open container are replaced by a count.
    """

    def __init__(self) -> None:
        self.room = MAX_ARGUMENTS_CHARS
        self.changed = False

    def sanitise(self, value: Any) -> Any:
        root, frame = self._copy(value, depth=0)
        stack = [frame] if frame else []
        while stack:
            frame = stack[-1]
            if self.room <= 0 and frame.left:
                self._note_cut(frame)
                stack.pop()
                continue
            entry = next(frame.items, None)
            if entry is None:
                stack.pop()
                continue
            frame.left -= 1
            key, item = entry
            copied, child = self._copy(item, depth=frame.depth + 1)
            self._put(frame, key, copied)
            if child:
                stack.append(child)
        return root

    def _copy(self, value: Any, depth: int) -> tuple[Any, _Frame | None]:
        """The sanitised scalar, or an empty copy of a container and the frame that fills it."""
        if value is None or isinstance(value, bool):
            self.room -= 6
            return value, None
        if isinstance(value, int):
            return self._integer(value), None
        if isinstance(value, float):
            return self._float(value), None
        if isinstance(value, str):
            return self._string(value), None
        if isinstance(value, (dict, list, tuple, set, frozenset)):
            if depth >= MAX_ARGUMENT_DEPTH:
                self.changed = True
                return TOO_DEEP.format(limit=MAX_ARGUMENT_DEPTH), None
            self.room -= 2
            if isinstance(value, dict):
                return self._container(value.items(), len(value), {}, depth)
            if isinstance(value, (set, frozenset)):
                self.changed = True  # JSON has no sets: stored as a list
            return self._container(enumerate(value), len(value), [], depth)
        self.changed = True
        return self._string(_safe_repr(value)), None

    @staticmethod
    def _container(items: Any, size: int, copy: Any, depth: int) -> tuple[Any, _Frame]:
        return copy, _Frame(iter(items), copy, depth, size)

    def _put(self, frame: _Frame, key: Any, value: Any) -> None:
        if isinstance(frame.copy, list):
            frame.copy.append(value)
            return
        name = self._key(key)
        while name in frame.copy:  # two keys that became the same string: keep both values
            self.changed = True
            name += "…[duplicate key]"
        frame.copy[name] = value

    def _key(self, key: Any) -> str:
        if isinstance(key, str):
            return self._string(key)
        if key is None or isinstance(key, bool):
            self.room -= 6
            return json.dumps(key)  # what json does to these keys: "null", "true", "false"
        if isinstance(key, (int, float)):
            text = self._integer(key) if isinstance(key, int) else self._float(key)
            return text if isinstance(text, str) else json.dumps(text)
        self.changed = True
        return self._string(_safe_repr(key))

    def _integer(self, value: int) -> int | str:
        if value.bit_length() > MAX_INTEGER_BITS:
            self.changed = True
            self.room -= 40
            return f"…[integer of {value.bit_length()} bits]"
        self.room -= value.bit_length() * 3 // 10 + 3  # its digits, about
        return int(value)  # a bool-free plain int, whatever subclass it was

    def _float(self, value: float) -> float | str:
        self.room -= 25
        if math.isfinite(value):
            return float(value)
        self.changed = True  # jsonb has no NaN or infinity
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")

    def _string(self, value: str) -> str:
        text, changed = clean_text(value, max(0, min(MAX_STRING_CHARS, self.room)))
        self.changed |= changed
        self.room -= len(text) + 3
        return text

    def _note_cut(self, frame: _Frame) -> None:
        """Out of room: the rest of this container becomes a count."""
        self.changed = True
        if isinstance(frame.copy, list):
            frame.copy.append(MORE_ITEMS.format(count=frame.left))
        else:
            frame.copy[MORE_KEYS_KEY] = MORE_KEYS.format(count=frame.left)
        frame.left = 0


def sanitise_json(value: Any) -> tuple[Any, bool]:
    """``value`` as jsonb can store it (see ``_JsonSanitiser``). Returns (value, changed)."""
    sanitiser = _JsonSanitiser()
    return sanitiser.sanitise(value), sanitiser.changed


def _arguments(value: Any, kind: type[list] | type[dict]) -> tuple[Any, bool]:
    """args as a list, kwargs as a dict, sanitised; anything else is kept sanitised as it is."""
    if value is None:
        return kind(), False
    if kind is list and isinstance(value, tuple):
        value = list(value)
    return sanitise_json(value)


def _attempts(value: Any) -> tuple[int, bool]:
    """A count a PositiveIntegerField holds (0 … 2^31-1)."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return 1, True
    clamped = min(max(number, 0), 2**31 - 1)
    return clamped, clamped != number or not isinstance(value, int)


def _when(value: Any) -> tuple[datetime | None, bool]:
    return (value, False) if value is None or isinstance(value, datetime) else (None, True)


def _claim(value: Any) -> tuple[uuid.UUID | None, bool]:
    if value is None or value == "":
        return None, False
    try:
        return uuid.UUID(str(value)), False
    except ValueError:
        return None, True


def sanitise_letter(
    *, task_id: Any, task_name: Any, args: Any, kwargs: Any, queue: Any, reason: Any, exception: Any,
    traceback: Any = "", attempts: Any = 1, raw_body: Any = "", first_attempt_at: Any = None,
    failed_at: datetime | None = None, sanitised: bool = False, payload_claim: Any = None,
) -> dict[str, Any]:
    """The model fields of a letter, each made storable; ``sanitised`` says whether any had to change."""
    char = {name: DeadLetter._meta.get_field(name).max_length for name in ("task_id", "task_name", "queue", "reason")}
    cleaned: dict[str, tuple[Any, bool]] = {
        "task_id": clean_char(task_id, char["task_id"]),
        "task_name": clean_char(task_name, char["task_name"]),
        "args": _arguments(args, list),
        "kwargs": _arguments(kwargs, dict),
        "queue": clean_char(queue, char["queue"]),
        "reason": clean_char(reason, char["reason"]),
        "exception": clean_text(exception, MAX_TEXT_CHARS),
        "traceback": clean_text(traceback, MAX_TEXT_CHARS),
        "attempts": _attempts(attempts),
        "raw_body": clean_text(raw_body, MAX_TEXT_CHARS),
        "first_attempt_at": _when(first_attempt_at),
        "payload_claim": _claim(payload_claim),
    }
    fields = {name: value for name, (value, _) in cleaned.items()}
    fields["failed_at"] = failed_at or timezone.now()
    fields["sanitised"] = bool(sanitised) or any(changed for _, changed in cleaned.values())
    return fields


def _unsanitisable(task_id: Any, task_name: Any, queue: Any, reason: Any, error: Exception) -> dict[str, Any]:
    """Last resort when sanitising itself failed: who failed, and why the rest is missing."""
    return sanitise_letter(
        task_id=_safe_repr(task_id) if not isinstance(task_id, str) else task_id,
        task_name=_safe_repr(task_name) if not isinstance(task_name, str) else task_name,
        args=[], kwargs={}, queue=queue if isinstance(queue, str) else "", reason=_safe_repr(reason),
        exception=f"the dead letter could not be sanitised ({type(error).__name__}: {_safe_repr(error)}); "
                  "its arguments, exception and traceback are lost",
        sanitised=True,
    )


# --- recording ----------------------------------------------------------------------------------------


def record(
    *,
    task_id: str,
    task_name: str,
    args: Any,
    kwargs: Any,
    queue: str,
    reason: str,
    exception: str,
    traceback: str = "",
    attempts: int = 1,
    raw_body: str = "",
    first_attempt_at: datetime | None = None,
    payload_claim: str | None = None,
) -> DeadLetter | None:
    """Store a dead letter, sanitised; if the database does not take it, spool it (see the module doc).
    ``payload_claim``: the claim the task's body came from, kept with the letter.

    Returns the stored letter, or None when it was spooled. Never raises.
    """
    try:
        if is_encrypted(task_name) and payload_claim:
            args, kwargs = [], {}  # the claim holds the sealed body; raw_body is its reference at most
        elif is_encrypted(task_name):
            args, kwargs, raw_body = sealed_arguments(args, kwargs, raw_body)
        fields = sanitise_letter(
            task_id=task_id, task_name=task_name, args=args, kwargs=kwargs, queue=queue, reason=reason,
            exception=exception, traceback=traceback, attempts=attempts, raw_body=raw_body,
            first_attempt_at=first_attempt_at, payload_claim=payload_claim,
        )
    except Exception as exc:
        logger.exception("dead letter of %s could not be sanitised; storing what identifies it",
                         _safe_repr(task_id)[:300])
        fields = _unsanitisable(task_id, task_name, queue, reason, exc)
    try:
        letter = _insert(fields)
    except Exception as exc:
        _spool(fields, exc)
        return None
    _announce(letter, "task dead-lettered")
    return letter


def sealed_arguments(args: Any, kwargs: Any, raw_body: Any) -> tuple[list[Any], dict[str, Any], str]:
    """What a letter of an encrypted task keeps of its arguments: none in clear, the task body sealed in raw_body.

    A message that came encrypted keeps its own body (even one no key opens: it is the evidence); otherwise
    the body ``[args, kwargs, {}]`` is encrypted now — a plain message's text is not kept."""
    if payload_encryption.is_token(raw_body):
        return [], {}, raw_body
    if raw_body and not args and not kwargs:  # a plain body nobody could decode: sealed as it came
        return [], {}, payload_encryption.dumps(raw_body)
    return [], {}, payload_encryption.dumps([list(args or ()), dict(kwargs or {}), {}])


def _insert(fields: dict[str, Any]) -> DeadLetter:
    # A savepoint: a failed insert must not break a transaction the caller may be in.
    with transaction.atomic():
        return DeadLetter.objects.create(**fields)


def _announce(letter: DeadLetter, what: str) -> None:
    logger.error(
        "%s: %s[%s] after %d attempt(s): %s",
        what, letter.task_name, letter.task_id, letter.attempts, letter.exception[:1000],
        extra={"dead_letter_id": letter.pk, "reason": letter.reason, "sanitised": letter.sanitised},
    )
    # Robust: a failing receiver (metrics) must not make record() raise inside on_failure.
    for receiver, response in dead_lettered.send_robust(sender=DeadLetter, letter=letter):
        if isinstance(response, Exception):
            logger.warning("dead_lettered receiver %r failed: %s", receiver, response)


def _spool(fields: dict[str, Any], error: Exception) -> None:
    """Keep a letter the database did not take: Redis, else the fallback file, else (at least) the log."""
    content = _spooled_form(fields, spool_id=uuid.uuid4().hex)
    cause = f"{type(error).__name__}: {_safe_repr(error)[:1000]}"
    try:
        payload = json.dumps(content)
        where = deadletter_spool.push(payload)
    except Exception:
        logger.critical("dead letter could neither be stored (%s) nor spooled; its content follows", cause,
                        exc_info=True, extra={"dead_letter": content})
        return
    if where == "redis":
        logger.warning("dead letter %s[%s] spooled in Redis (%s), the database did not take it: %s",
                       content["task_name"], content["task_id"], deadletter_spool.SPOOL_KEY, cause)
    else:
        logger.error("dead letter spooled to %s (no Redis took it), the database did not take it: %s; "
                     "its content follows", deadletter_spool.spool_file(), cause, extra={"dead_letter": content})


def _spooled_form(fields: dict[str, Any], *, spool_id: str) -> dict[str, Any]:
    """The letter as one JSON object: its fields (dates in ISO 8601) and the spool id that makes
    storing it idempotent."""
    content = {name: (value.isoformat() if isinstance(value, datetime) else str(value) if isinstance(value, uuid.UUID)
                      else value) for name, value in fields.items()}
    content["spool_id"] = spool_id
    return content


# --- flushing the spool -----------------------------------------------------------------------------------


class _Outcome(enum.Enum):
    STORED = "stored"
    ALREADY_STORED = "already_stored"
    DATABASE_DOWN = "database_down"
    UNSTORABLE = "unstorable"


@dataclass
class SpoolFlush:
    """What one ``flush_spool`` did."""

    stored: int = 0
    already_stored: int = 0
    unstorable: int = 0
    #: Sources it could not finish: "database" (did not answer), "redis" (did not answer).
    interrupted: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return self.stored + self.already_stored + self.unstorable


def flush_spool(*, limit: int | None = FLUSH_BATCH) -> SpoolFlush:
    """Store spooled letters (Redis list, then the fallback file) while the database answers.

    Each stored letter is announced (``dead_lettered``, so metrics count it). At most ``limit`` letters
    (None: all). Never raises: what cannot be stored now stays spooled for the next flush.
    """
    result = SpoolFlush()
    if not connection.in_atomic_block:
        close_old_connections()  # a long-lived caller (the worker) may hold a connection the database dropped
    for source in deadletter_spool.sources():
        try:
            with source:
                _drain(source, result, limit)
        except Exception as exc:
            result.interrupted.append(source.name)
            logger.warning("dead-letter spool (%s) could not be flushed: %s: %s", source.name, type(exc).__name__, exc)
        if "database" in result.interrupted:
            break
    if result.handled or result.interrupted:
        logger.info("dead-letter spool flushed: %s", result)
    return result


def _drain(source: deadletter_spool.Source, result: SpoolFlush, limit: int | None) -> None:
    while limit is None or result.handled < limit:
        item = source.claim()
        if item is None:
            return
        outcome = _store_spooled(item)
        if outcome is _Outcome.DATABASE_DOWN:
            source.give_back(item)
            result.interrupted.append("database")
            return
        if outcome is _Outcome.UNSTORABLE:
            source.set_aside(item)
            result.unstorable += 1
            continue
        source.done(item)
        if outcome is _Outcome.STORED:
            result.stored += 1
        else:
            result.already_stored += 1


def _store_spooled(item: str | bytes) -> _Outcome:
    try:
        spool_id, fields = _fields_from_spool(item)
    except Exception:
        logger.exception("dead-letter spool: a spooled item is not a letter; set aside",
                         extra={"item": str(item)[:2000]})
        return _Outcome.UNSTORABLE
    try:
        with transaction.atomic():
            letter, created = DeadLetter.objects.get_or_create(spool_id=spool_id, defaults=fields)
    except Exception as exc:
        if not _database_answers():
            return _Outcome.DATABASE_DOWN
        logger.error("dead-letter spool: the database refused letter %s (%s: %s); set aside", spool_id,
                     type(exc).__name__, exc, extra={"dead_letter": _spooled_form(fields, spool_id=str(spool_id))})
        return _Outcome.UNSTORABLE
    if not created:
        return _Outcome.ALREADY_STORED
    _announce(letter, "spooled dead letter stored")
    return _Outcome.STORED


def _fields_from_spool(item: str | bytes) -> tuple[uuid.UUID, dict[str, Any]]:
    """The spool id and model fields of a spooled letter, sanitised again (a spool may be written by hand)."""
    content = json.loads(item)
    if not isinstance(content, dict):
        raise ValueError("a spooled letter is a JSON object")
    spool_id = uuid.UUID(str(content["spool_id"]))
    fields = sanitise_letter(
        task_id=content["task_id"],
        task_name=content["task_name"],
        args=content.get("args"),
        kwargs=content.get("kwargs"),
        queue=content.get("queue", ""),
        reason=content.get("reason", ""),
        exception=content.get("exception", ""),
        traceback=content.get("traceback", ""),
        attempts=content.get("attempts", 1),
        raw_body=content.get("raw_body", ""),
        first_attempt_at=_parse_when(content.get("first_attempt_at")),
        failed_at=_parse_when(content.get("failed_at")),
        sanitised=bool(content.get("sanitised")),
        payload_claim=content.get("payload_claim"),
    )
    return spool_id, fields


def _parse_when(value: Any) -> datetime | None:
    if not value:
        return None
    when = datetime.fromisoformat(str(value))
    return when if timezone.is_aware(when) else timezone.make_aware(when, UTC)


def _database_answers() -> bool:
    """After a failed insert: is it the database (down) or the letter?"""
    try:
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        return False
    return True


# --- operator actions -----------------------------------------------------------------------------------


def arguments(letter: DeadLetter) -> tuple[list[Any], dict[str, Any]]:
    """The task's args and kwargs: from its payload claim, as stored, or opened from the sealed body of an
    encrypted task's letter.

    Raises ValueError when a sealed body does not open (no configured key does: put the old key back) or
    holds no task arguments, or when the claim is gone and the letter's own copy is incomplete."""
    if letter.payload_claim:
        try:
            return payload_claims.arguments(letter.payload_claim)
        except payload_claims.ClaimError as exc:
            if letter.sanitised or is_encrypted(letter.task_name) or not (letter.args or letter.kwargs):
                raise ValueError(f"dead letter {letter.pk}: {exc}") from None
            # the letter's own copy is whole: use it
    if not payload_encryption.is_token(letter.raw_body):
        if letter.raw_body.startswith(payload_encryption.TOKEN_PREFIX) and not (letter.args or letter.kwargs):
            raise ValueError(f"dead letter {letter.pk}: its sealed body was cut to {MAX_TEXT_CHARS} characters "
                             "when stored; its arguments are lost")
        return letter.args, letter.kwargs
    try:
        body = payload_encryption.loads(letter.raw_body)
    except payload_encryption.PayloadDecryptionError as exc:
        raise ValueError(f"dead letter {letter.pk}: {exc}") from None
    if not (isinstance(body, list) and len(body) >= 2 and isinstance(body[0], list) and isinstance(body[1], dict)):
        raise ValueError(f"dead letter {letter.pk}: its sealed body holds no task arguments")
    return body[0], body[1]


def requeue(letter: DeadLetter) -> str:
    """Send the task again, with its arguments, to the queue it failed on; returns the new task id.

    A ``sanitised`` letter is sent with its stored (escaped or cut) arguments, not the original ones — unless it
    keeps a payload claim, whose whole body is sent (and the claim deleted). An encrypted task is sent encrypted
    again (its route and task options).
    """
    from portfolio_site.celery import app

    if letter.status != DeadLetter.Status.PENDING:
        raise ValueError(f"dead letter {letter.pk} is {letter.status}, only pending ones can be requeued")
    if letter.task_name not in app.tasks:
        raise ValueError(f"dead letter {letter.pk}: task {letter.task_name!r} is not registered")
    args, kwargs = arguments(letter)
    result = app.send_task(letter.task_name, args=args, kwargs=kwargs, queue=letter.queue)
    letter.status = DeadLetter.Status.REQUEUED
    letter.requeued_task_id = result.id
    letter.resolved_at = timezone.now()
    letter.save(update_fields=["status", "requeued_task_id", "resolved_at"])
    payload_claims.discard(letter.payload_claim)  # the new message carries the body (or a claim of its own)
    return result.id


def discard(letter: DeadLetter) -> None:
    letter.status = DeadLetter.Status.DISCARDED
    letter.resolved_at = timezone.now()
    letter.save(update_fields=["status", "resolved_at"])
    payload_claims.discard(letter.payload_claim)
