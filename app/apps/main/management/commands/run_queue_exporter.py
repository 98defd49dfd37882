"""``python manage.py run_queue_exporter --port 9809``: the queue exporter (see apps.main.metrics.exporter)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.main import redis_connection
from apps.main.metrics.exporter import BrokerLayout, QueueExporter, broker_client
from apps.main.queues import QUEUES
from portfolio_site.ports import EXPORTER_PORT


class Command(BaseCommand):
    help = "Serve Prometheus metrics about the broker's queues, beat, dead letters and workers online."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=EXPORTER_PORT)
        parser.add_argument("--bind", default="0.0.0.0")
        parser.add_argument("--queues", default=",".join(QUEUES), help="comma-separated queue names")
        parser.add_argument("--interval", type=float, default=5.0,
                            help="seconds between broker and database reads")
        parser.add_argument("--timeout", type=float, default=2.0, help="broker socket timeout, seconds")
        parser.add_argument("--inspect-interval", type=float, default=15.0,
                            help="seconds between worker census broadcasts (inspect active_queues)")
        parser.add_argument("--inspect-timeout", type=float, default=2.0,
                            help="seconds a census waits for worker replies")
        parser.add_argument("--worker-down-after", type=float, default=60.0,
                            help="seconds without a census answer before a worker that did not stop cleanly is "
                                 "served as celery_worker_up 0")
        parser.add_argument("--worker-down-retention", type=float, default=3600.0,
                            help="seconds after its last answer that a lost worker stays served as down (keep it "
                                 "above the celery-mixin's 15m `for` of CeleryWorkerDown)")

    def handle(self, *args: Any, **options: Any) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        from portfolio_site.celery import app

        url = redis_connection.broker_redis_url(settings.CELERY_BROKER_URL)
        if url is None:
            scheme = settings.CELERY_BROKER_URL.split(":")[0]
            raise CommandError(f"the queue exporter reads a Redis broker; CELERY_BROKER_URL is {scheme}:…")
        queues = [q.strip() for q in options["queues"].split(",") if q.strip()]
        timeout = options["timeout"]
        if options["worker_down_retention"] <= options["worker_down_after"]:
            raise CommandError("--worker-down-retention must be longer than --worker-down-after")
        client = broker_client(url, timeout)
        exporter = QueueExporter(
            client=client, layout=BrokerLayout.from_settings(queues), app=app, interval=options["interval"],
            inspect_interval=options["inspect_interval"], inspect_timeout=options["inspect_timeout"],
            worker_down_after=options["worker_down_after"], worker_down_retention=options["worker_down_retention"],
        )
        registry = CollectorRegistry(auto_describe=False)
        registry.register(exporter)

        stopping = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopping.set())
        exporter.start()
        server, _thread = start_http_server(options["port"], addr=options["bind"], registry=registry)
        self.stdout.write(f"queue exporter on {options['bind']}:{options['port']}/metrics, queues {queues}")
        self.stdout.flush()
        stopping.wait()
        server.shutdown()
        exporter.stop()
