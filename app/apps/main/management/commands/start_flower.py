from __future__ import annotations

import os
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from portfolio_site import environment as env
from portfolio_site.ports import FLOWER_PORT


class Command(BaseCommand):
    help = "Start Flower with basic auth from FLOWER_BASIC_AUTH (user:password); refuses to run without it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=FLOWER_PORT)
        parser.add_argument("--address", default="0.0.0.0")
        parser.add_argument("--url-prefix", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        credentials = env.get(env.FLOWER_BASIC_AUTH)
        if not credentials or any(":" not in pair or not pair.split(":", 1)[1] for pair in credentials.split(",")):
            raise CommandError(
                f"{env.FLOWER_BASIC_AUTH} must be set to user:password (comma-separate several); "
                "Flower shows task arguments and can revoke tasks, so it never runs without auth"
            )
        argv = [
            # Celery's command line, with Flower's /metrics behind the basic auth too (see the launcher).
            sys.executable, "-m", "apps.main.flower_launcher", "-A", "portfolio_site", "flower",
            f"--port={options['port']}", f"--address={options['address']}",
            f"--max_tasks={settings.FLOWER_MAX_TASKS}", "--persistent=False",
        ]
        if options["url_prefix"]:
            argv.append(f"--url_prefix={options['url_prefix']}")
        # Flower reads FLOWER_BASIC_AUTH from the environment itself: the password never shows in `ps`.
        self.stdout.write(f"starting Flower on {options['address']}:{options['port']}")
        self.stdout.flush()
        os.execv(sys.executable, argv)
