from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from django.db.migrations.executor import MigrationExecutor


def unapplied_migrations(database: str = "default") -> list[str]:
    connection = connections[database]
    executor = MigrationExecutor(connection)
    targets = executor.loader.graph.leaf_nodes()
    return [f"{migration.app_label}.{migration.name}" for migration, _ in executor.migration_plan(targets)]


class Command(BaseCommand):
    help = "Wait until the database is reachable and every migration is applied (init containers use it)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--timeout", type=float, default=600.0)
        parser.add_argument("--interval", type=float, default=3.0)

    def handle(self, *args: Any, **options: Any) -> None:
        deadline = time.monotonic() + options["timeout"]
        last = ""
        while True:
            try:
                pending = unapplied_migrations()
                if not pending:
                    self.stdout.write("all migrations are applied")
                    return
                state = f"{len(pending)} migration(s) not applied yet, first {pending[0]}"
            except Exception as exc:  # database not up yet
                state = f"database not reachable: {type(exc).__name__}: {exc}".splitlines()[0]
            finally:
                connections.close_all()
            if state != last:
                self.stdout.write(f"waiting: {state}")
                last = state
            if time.monotonic() >= deadline:
                raise CommandError(f"gave up after {options['timeout']:.0f}s: {state}")
            time.sleep(options["interval"])
