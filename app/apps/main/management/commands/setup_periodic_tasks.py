from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.main.schedule import ensure_periodic_tasks


class Command(BaseCommand):
    help = "Create the default periodic tasks in the database (idempotent; edits made in the admin are kept)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reset", action="store_true", help="Overwrite existing entries with the defaults.")

    def handle(self, *args: Any, **options: Any) -> None:
        for name, outcome in ensure_periodic_tasks(reset=options["reset"]).items():
            self.stdout.write(f"{outcome:>7}  {name}")
