"""Whether this process is (or was forked from) a Celery worker: a flag set at ``worker_init``.

Django-free, so that ``portfolio_site.celery`` can connect it before Django is set up; the worker's
main process sets it before it forks its pool, so pool processes inherit it.
"""

from __future__ import annotations

from typing import Any

in_worker = False


def mark_worker(**_: Any) -> None:
    global in_worker
    in_worker = True
