from __future__ import annotations

import time
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.main.queues import queue_for, task_name
from portfolio_site.celery import app

try:
    from embedded import stack_env
except ImportError:  # the image ships no app/embedded (no local stack there; REDIS_URL is always set)
    stack_env = None


def sample_calls() -> dict[str, tuple[str, dict[str, Any]]]:
    """--task choice -> (task, kwargs): a real call of each task that succeeds on a healthy stack."""
    run = uuid.uuid4().hex[:12]
    return {
        "notification": ("send_notification", {
            "channel": "in_app", "recipient": "test-celery", "subject": "test_celery",
            "message": f"test_celery run {run}",
        }),
        "action": ("process_user_action", {
            "action_id": f"test-celery-{run}", "user_id": "test-celery", "action": "self_test",
        }),
        "analytics": ("update_analytics", {}),
        "cleanup": ("cleanup_temp_files", {}),
        "health": ("health_check", {}),
        "reports": ("generate_reports", {"report_type": "system"}),
        "backup": ("backup_data", {"models": ["main.AnalyticsSnapshot"], "keep": 7}),
    }


class Command(BaseCommand):
    help = "Enqueue real tasks against the running stack, wait for them and report per task."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--task", default="all", choices=[*sample_calls(), "all"])
        parser.add_argument("--timeout", type=float, default=60.0, help="Seconds to wait for all tasks.")

    def handle(self, *args: Any, **options: Any) -> None:
        if stack_env is not None and (reason := stack_env.no_stack_reason()):
            # One line instead of kombu's traceback (or tasks silently sent into a new SQLite file).
            self.stderr.write(reason)
            raise SystemExit(stack_env.NO_STACK_EXIT)
        calls = sample_calls()
        chosen = list(calls) if options["task"] == "all" else [options["task"]]
        pending = {}
        for choice in chosen:
            short, kwargs = calls[choice]
            result = app.send_task(task_name(short), kwargs=kwargs)
            pending[choice] = (short, result, time.monotonic())
            self.stdout.write(f"sent     {short:<20} -> {queue_for(short):<14} id={result.id}")

        deadline = time.monotonic() + options["timeout"]
        outcomes: dict[str, tuple[str, str, float]] = {}
        while pending and time.monotonic() < deadline:
            for choice, (_short, result, sent_at) in list(pending.items()):
                if result.ready():
                    detail = result.result if result.successful() else repr(result.result)
                    outcomes[choice] = (result.state, str(detail)[:120], time.monotonic() - sent_at)
                    del pending[choice]
            time.sleep(0.2)
        for choice, (_short, result, _sent) in pending.items():
            outcomes[choice] = (result.state, f"no result within {options['timeout']:.0f}s", options["timeout"])

        self.stdout.write("")
        self.stdout.write(f"{'task':<20} {'queue':<14} {'state':<8} {'seconds':>7}  detail")
        failures = 0
        for choice in chosen:
            short = calls[choice][0]
            state, detail, seconds = outcomes[choice]
            failures += state != "SUCCESS"
            self.stdout.write(f"{short:<20} {queue_for(short):<14} {state:<8} {seconds:7.2f}  {detail}")
        self.stdout.write("")
        if failures:
            raise CommandError(f"{failures} of {len(chosen)} task(s) did not succeed")
        self.stdout.write(self.style.SUCCESS(f"all {len(chosen)} task(s) succeeded"))
