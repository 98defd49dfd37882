"""django-celery-results' database backend: one statement per stored state, and riding out a restart.

**One statement.** Upstream stores a state with ``get_or_create`` then a full ``save()``: a SELECT,
BEGIN, INSERT, COMMIT and an UPDATE — two commits per state. Here it is one
``INSERT … ON CONFLICT (task_id) DO UPDATE`` in autocommit: one round trip, one commit. The row is
the same: every column upstream writes, ``date_created`` kept from the first write, and
``date_started`` taken from the pool child's own clock (``task_timing``) when the final state is
stored — so a runtime is known without a separate STARTED write for every task.

**Restarts.** Upstream retries only ``InterfaceError`` ("connection already closed"). A restart or
failover of PostgreSQL raises ``OperationalError`` (connection refused, server closed the connection,
the database system is shutting down) — without a retry, storing a result or a RETRY state fails
"outside the task body", and when that happens in the worker's main process the message is never
acknowledged nor rejected: its prefetch slot leaks and the worker stops taking work.

**Encrypted tasks.** The row of a task with encrypted payloads (``apps.main.queues.ENCRYPTED_TASKS``) holds its
result, meta, traceback and (extended) arguments sealed with the payload keys, and the content type
``payload_encryption.CONTENT_TYPE``; reading it through the backend (``AsyncResult``, the API) opens them.
"""

from __future__ import annotations

from typing import Any

from celery import states
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend
from kombu.exceptions import DecodeError

from apps.main import payload_encryption, task_timing, worker_context
from apps.main.queues import is_encrypted
from apps.main.single_statement import upsert

#: Columns a later state overwrites (all but the key, the creation date and the start date).
_STATE_COLUMNS = ("status", "result", "traceback", "meta", "content_encoding", "content_type",
                  "periodic_task_name", "task_name", "task_args", "task_kwargs", "worker", "date_done")


class ResilientDatabaseBackend(DatabaseBackend):
    def exception_safe_to_retry(self, exc: Exception) -> bool:
        # Only workers wait out an outage; the web app answers 503 at once instead of hanging a request.
        if worker_context.in_worker and isinstance(exc, (InterfaceError, OperationalError)):
            # The broken connection must go: the retry opens a new one.
            connection.close()
            close_old_connections()
            return True
        return super().exception_safe_to_retry(exc)

    def _store_result(self, task_id: str, result: Any, status: str, traceback: Any = None,
                      request: Any = None, using: str | None = None) -> Any:
        sealed = is_encrypted(getattr(request, "task", None))
        encode = self._encode_sealed if sealed else self.encode_content
        content_type, content_encoding, encoded = encode(result)
        meta = {**self._get_meta_from_request(request), "children": self.current_task_children(request)}
        _, _, encoded_meta = encode(meta)
        if sealed and traceback:
            traceback = payload_encryption.dumps(traceback)
        # As upstream: the extended properties (name, args, worker…) include the traceback again.
        columns = {"task_id": task_id, "status": status, "result": encoded, "traceback": traceback,
                   "meta": encoded_meta, "content_type": content_type, "content_encoding": content_encoding,
                   **self._get_extended_properties(request, traceback)}
        if sealed:  # the argsrepr (hidden already when sent right), encoded as JSON by upstream: sealed too
            for column in ("task_args", "task_kwargs"):
                if columns[column] is not None:
                    columns[column] = payload_encryption.dumps_json(columns[column])
        row = self.TaskModel(**columns)
        update = list(_STATE_COLUMNS)
        # STARTED stamps its own time; a final state stored by the child that ran the task carries the
        # start it noted. Stored elsewhere (the main process after a hard time limit, a poison message),
        # the start is unknown and the stored one is kept.
        started = timezone.now() if status == states.STARTED else task_timing.started_at(task_id)
        if started is not None:
            row.date_started = started
            update.append("date_started")
        # A state that is not final never replaces a final one: a RETRY whose store waited out a database
        # outage can land after the retried run already stored SUCCESS (seen in the fault suite).
        unless = None if status in states.READY_STATES else ("status", sorted(states.READY_STATES))
        upsert(row, unique="task_id", update=update, using=using, unless=unless)
        return encoded

    @staticmethod
    def _encode_sealed(data: Any) -> tuple[str, str, str]:
        return payload_encryption.CONTENT_TYPE, payload_encryption.CONTENT_ENCODING, payload_encryption.dumps(data)

    def decode_content(self, obj: Any, content: Any) -> Any:
        if content and obj.content_type == payload_encryption.CONTENT_TYPE:
            try:
                return payload_encryption.loads(content)
            except payload_encryption.PayloadDecryptionError as exc:
                raise DecodeError(f"result of task {obj.task_id}: {exc}") from None
        return super().decode_content(obj, content)

    def _get_task_meta_for(self, task_id: str) -> dict[str, Any]:
        meta = super()._get_task_meta_for(task_id)
        if payload_encryption.is_token(meta.get("traceback")):
            try:
                meta["traceback"] = payload_encryption.loads(meta["traceback"])
            except payload_encryption.PayloadDecryptionError as exc:
                meta["traceback"] = f"(sealed traceback: {exc})"
        return meta
