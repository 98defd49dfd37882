"""django-celery-results' database backend, made to ride out a database restart.

Upstream retries only ``InterfaceError`` ("connection already closed"). A restart or failover of
PostgreSQL raises ``OperationalError`` (connection refused, server closed the connection, the
database system is shutting down) — without a retry, storing a result or a RETRY state fails
"outside the task body", and when that happens in the worker's main process the message is never
acknowledged nor rejected: its prefetch slot leaks and the worker stops taking work.
"""

from __future__ import annotations

from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django_celery_results.backends.database import DatabaseBackend

from apps.main import worker_context


class ResilientDatabaseBackend(DatabaseBackend):
    def exception_safe_to_retry(self, exc: Exception) -> bool:
        # Only workers wait out an outage; the web app answers 503 at once instead of hanging a request.
        if worker_context.in_worker and isinstance(exc, (InterfaceError, OperationalError)):
            # The broken connection must go: the retry opens a new one.
            connection.close()
            close_old_connections()
            return True
        return super().exception_safe_to_retry(exc)
