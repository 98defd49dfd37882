"""Dependency checks shared by /readyz and the health_check task."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from django.core.cache import cache
from django.db import connection


def database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def broker(timeout: float = 3.0) -> None:  # within the 5 s readiness probe timeout
    from portfolio_site.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)


def cache_roundtrip() -> None:
    probe = uuid.uuid4().hex
    cache.set("celery-stack:health-probe", probe, 60)
    if cache.get("celery-stack:health-probe") != probe:
        raise RuntimeError("cache read back a different value")


CHECKS: dict[str, Callable[[], None]] = {"database": database, "broker": broker, "cache": cache_roundtrip}


def run(names: tuple[str, ...], *, with_messages: bool = True) -> dict[str, str]:
    """name -> "ok" or "error: …"; ``with_messages=False`` gives the exception type only (public probes)."""
    results: dict[str, str] = {}
    for name in names:
        try:
            CHECKS[name]()
            results[name] = "ok"
        except Exception as exc:
            results[name] = f"error: {type(exc).__name__}" + (f": {exc}" if with_messages else "")
    return results


def failed(results: dict[str, str]) -> dict[str, str]:
    return {name: state for name, state in results.items() if state != "ok"}
