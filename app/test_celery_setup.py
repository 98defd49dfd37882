#!/usr/bin/env python
"""Check a running stack and print the verification checklist; exits non-zero on any failure.

    python test_celery_setup.py [--flower-url http://127.0.0.1:5555] [--timeout 60]

Checks: broker reachable, a worker answering on every queue, periodic tasks present, Flower
reachable and behind auth, every task routed to and consumed by its queue's pool, retry with backoff.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portfolio_site.settings.dev")


class Checklist:
    def __init__(self) -> None:
        self.rows: list[tuple[str, bool, str]] = []

    def check(self, title: str, probe: Callable[[], str]) -> bool:
        try:
            detail, ok = probe(), True
        except Exception as exc:
            detail, ok = f"{type(exc).__name__}: {exc}", False
        self.rows.append((title, ok, detail))
        print(f"  [{'PASS' if ok else 'FAIL'}] {title}: {detail}", flush=True)
        return ok

    @property
    def failed(self) -> int:
        return sum(not ok for _, ok, _ in self.rows)


def wait_for(results: dict, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(r.ready() for r in results.values()):
        time.sleep(0.2)


class FlakyWebhook(BaseHTTPRequestHandler):
    """Answers 503 to the first ``failures`` POSTs, then 200: a transient outage."""

    failures = 2
    calls: list[float] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        FlakyWebhook.calls.append(time.monotonic())
        self.send_response(503 if len(FlakyWebhook.calls) <= self.failures else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def parse_args() -> argparse.Namespace:
    from portfolio_site.ports import FLOWER_PORT

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flower-url", default=None,
                        help=f"Default: FLOWER_URL of the running stack (.local/stack.env), else port {FLOWER_PORT}.")
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--wait-retry", action="store_true", help="Also wait for the retried attempt to succeed.")
    return parser.parse_args()


def exit_code_without_stack() -> int | None:
    """Checked before Django's settings load: without a stack they would quietly fall back to SQLite."""
    try:
        from embedded import stack_env
    except ImportError:  # the image ships no app/embedded (no local stack there; REDIS_URL is always set)
        return None
    if reason := stack_env.no_stack_reason():
        print(reason, file=sys.stderr)
        return stack_env.NO_STACK_EXIT
    return None


def main() -> int:
    args = parse_args()
    if (code := exit_code_without_stack()) is not None:
        return code

    import django

    django.setup()
    from django_celery_beat.models import PeriodicTask
    from django_celery_results.models import TaskResult

    from apps.main.management.commands.test_celery import sample_calls
    from apps.main.queues import QUEUES, WORKER_POOLS, queue_for, task_name
    from apps.main.retry import policy_for as retry_policy
    from apps.main.schedule import DEFAULT_SCHEDULE
    from portfolio_site import environment as env
    from portfolio_site.celery import app
    from portfolio_site.ports import FLOWER_PORT

    flower_url = (args.flower_url or env.get(env.FLOWER_URL) or f"http://127.0.0.1:{FLOWER_PORT}").rstrip("/")
    checks = Checklist()
    print("Celery Stack verification checklist")

    def broker() -> str:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
            return f"{conn.transport_cls} at {conn.as_uri()}"

    def workers() -> str:
        replies = app.control.inspect(timeout=2).active_queues() or {}
        consumed = {q["name"]: worker for worker, queues in replies.items() for q in queues}
        missing = [q for q in QUEUES if q not in consumed]
        if missing:
            raise RuntimeError(f"no worker consumes {', '.join(missing)} (workers: {sorted(replies) or 'none'})")
        return ", ".join(f"{q}<-{consumed[q]}" for q in QUEUES)

    def periodic() -> str:
        names = set(PeriodicTask.objects.filter(enabled=True).values_list("name", flat=True))
        missing = [d.name for d in DEFAULT_SCHEDULE if d.name not in names]
        if missing:
            raise RuntimeError(f"missing periodic tasks: {missing}; run manage.py setup_periodic_tasks")
        return f"{len(DEFAULT_SCHEDULE)} default entries enabled"

    def flower() -> str:
        try:
            urllib.request.urlopen(f"{flower_url}/api/workers", timeout=5)
            raise RuntimeError("Flower answered without credentials")
        except urllib.error.HTTPError as exc:
            if exc.code != 401:
                raise
        credentials = (env.get(env.FLOWER_BASIC_AUTH) or "").split(",")[0]
        if not credentials:
            return "refuses anonymous requests (set FLOWER_BASIC_AUTH to check the login too)"
        request = urllib.request.Request(
            f"{flower_url}/api/workers",
            headers={"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return f"401 without credentials, {response.status} with them"

    def routing() -> str:
        calls = sample_calls()
        results = {short: app.send_task(task_name(short), kwargs=kwargs) for short, kwargs in calls.values()}
        wait_for(results, args.timeout)
        wrong = []
        for short, result in results.items():
            if not result.successful():
                wrong.append(f"{short}: {result.state}")
                continue
            worker = TaskResult.objects.get(task_id=result.id).worker or ""
            pool = WORKER_POOLS.get(worker.split("@")[0])
            if pool is None or queue_for(short) not in pool.queues:
                wrong.append(f"{short} ran on {worker!r}, not on a worker of {queue_for(short)}")
        if wrong:
            raise RuntimeError("; ".join(wrong))
        return f"{len(results)} tasks each consumed by the pool of its queue"

    def retry() -> str:
        """A webhook answering 503 puts the task in RETRY with a countdown inside the backoff bounds.

        With --wait-retry the check also waits for the second attempt, which then succeeds.
        """
        FlakyWebhook.calls = []
        FlakyWebhook.failures = 1
        server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyWebhook)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        policy = retry_policy("send_notification")
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        result = app.send_task(task_name("send_notification"),
                               kwargs={"channel": "webhook", "recipient": url, "message": "retry check"})
        try:
            deadline = time.monotonic() + args.timeout
            while result.state != "RETRY" and time.monotonic() < deadline:
                time.sleep(0.1)
            if result.state != "RETRY":
                raise RuntimeError(f"task state {result.state}, expected RETRY after a 503")
            failed_at = FlakyWebhook.calls[0]
            eta = scheduled_eta(result.id, deadline)
            wait = eta - (time.time() - (time.monotonic() - failed_at))
            low, high = policy.delay_bounds(0)
            if not low - 1 <= wait <= high + 1:
                raise RuntimeError(f"retry scheduled {wait:.1f}s after the failure, outside [{low:.1f}, {high:.1f}]s")
            if not args.wait_retry:
                app.control.revoke(result.id)  # do not leave an attempt aimed at this closing server
                return f"503 -> RETRY, next attempt in {wait:.1f}s (backoff bounds {low:.0f}-{high:.0f}s)"
            result.get(timeout=high + args.timeout)
            return f"503 -> RETRY after {wait:.1f}s -> SUCCESS on attempt {len(FlakyWebhook.calls)}"
        finally:
            server.shutdown()

    def scheduled_eta(task_id: str, deadline: float) -> float:
        """Unix time at which the worker holding the retried message will run it."""
        from datetime import datetime

        while time.monotonic() < deadline:
            for entries in (app.control.inspect(timeout=1).scheduled() or {}).values():
                for entry in entries:
                    if entry["request"]["id"] == task_id:
                        return datetime.fromisoformat(entry["eta"]).timestamp()
        raise RuntimeError("the retried task is not scheduled on any worker")

    checks.check("broker reachable", broker)
    checks.check("a worker answers on every queue", workers)
    checks.check("periodic tasks present", periodic)
    checks.check("Flower reachable, behind auth", flower)
    checks.check("tasks routed to their queues", routing)
    checks.check("transient errors retried with backoff", retry)
    print(f"\n{len(checks.rows) - checks.failed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
