from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.main import deadletter, deadletter_spool


class Command(BaseCommand):
    help = (
        "Store the dead letters spooled while the database was down (Redis list "
        f"{deadletter_spool.SPOOL_KEY}, else the JSON-lines file under APP_DATA_DIR). Safe to run any time: "
        "no letter is stored twice. Exits 1 if some could not be stored now."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--limit", type=int, default=None, help="Store at most this many (default: all).")
        parser.add_argument("--status", action="store_true", help="Only show how many letters are spooled.")

    def handle(self, *args: Any, **options: Any) -> None:
        interrupted: list[str] = []
        if not options["status"]:
            result = deadletter.flush_spool(limit=options["limit"])
            interrupted = result.interrupted
            self.stdout.write(
                f"stored {result.stored}, already stored {result.already_stored}, set aside {result.unstorable}"
            )
        spooled = deadletter_spool.pending()
        self.stdout.write("spooled: " + ", ".join(f"{place} {count}" for place, count in spooled.items()))
        if interrupted:
            raise CommandError(f"flush interrupted: {', '.join(interrupted)} did not answer")
