from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.main.worker_steps import heartbeat_path


class Command(BaseCommand):
    help = "Exit 0 if this pod's worker touched its heartbeat file recently (a liveness probe that sends nothing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--max-age", type=float, default=120.0, help="Seconds since the last heartbeat.")

    def handle(self, *args: Any, **options: Any) -> None:
        path = heartbeat_path()
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            raise CommandError(f"no worker heartbeat at {path}: the worker has not connected yet") from None
        if age > options["max_age"]:
            raise CommandError(f"worker heartbeat is {age:.0f}s old (limit {options['max_age']:.0f}s)")
        self.stdout.write(f"worker alive: heartbeat {age:.1f}s old")
