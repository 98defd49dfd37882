from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

#: Seconds one connection attempt to PostgreSQL may take (an address that drops packets instead of
#: refusing them would otherwise hang for the kernel's TCP timeout, far past --timeout).
CONNECT_TIMEOUT = 5


def database_problem(database: str = "default") -> str | None:
    """Why the database does not accept connections yet, on one line; None once it runs a query."""
    connection = connections[database]
    if connection.vendor == "postgresql":
        connection.settings_dict.setdefault("OPTIONS", {}).setdefault("connect_timeout", CONNECT_TIMEOUT)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # refused, DNS not there yet, starting up, auth not set up yet, ...
        return f"database not reachable: {type(exc).__name__}: {exc}".splitlines()[0].strip()
    finally:
        connections.close_all()
    return None


class Command(BaseCommand):
    help = ("Wait until the database accepts connections (the migration Job runs it before `migrate`); "
            "fail with the last error after --timeout seconds.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--timeout", type=float, default=300.0)
        parser.add_argument("--interval", type=float, default=2.0)

    def handle(self, *args: Any, **options: Any) -> None:
        deadline = time.monotonic() + options["timeout"]
        last = ""
        while True:
            problem = database_problem()
            if problem is None:
                self.stdout.write("the database accepts connections")
                return
            if problem != last:
                self.stdout.write(f"waiting: {problem}")
                last = problem
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommandError(f"gave up after {options['timeout']:.0f}s: {problem}")
            time.sleep(min(options["interval"], remaining))
