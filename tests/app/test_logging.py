"""Structured logs of real workers: JSON lines on stdout carrying the task's id, name, queue and attempt,
and, with development settings, the seed's log files (django.log, performance.log, errors.log)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from apps.main.queues import queue_for, task_name
from embedded.network import wait_until
from portfolio_site import environment as env_names
from portfolio_site.celery import app
from tests.app.procs import read_json_lines
from tests.support.timeouts import scaled
from tests.support.webhook import webhook_server

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def entries_of(path: Path, task_id: str) -> list[dict]:
    """The log entries that carry ``task_id`` as their task context."""
    return [entry for entry in read_json_lines(path) if entry.get("task_id") == task_id]


def test_worker_stdout_is_json_with_task_context_and_attempts(stack_workers: dict[str, str],
                                                              process_logs: Path) -> None:
    short = "send_notification"
    log = process_logs / "worker-high-priority.log"  # stdout of the pool consuming send_notification's queue
    with webhook_server([503, 503, 200]) as hook:
        result = app.send_task(task_name(short), kwargs={"channel": "webhook", "recipient": hook.url,
                                                         "message": "log me"})
        result.get(timeout=scaled(30))

    def finished() -> list[dict]:
        entries = entries_of(log, result.id)
        return entries if any("succeeded" in e["message"] for e in entries) else []

    entries = wait_until(finished, timeout=scaled(10), what="the task's success line in the worker log")
    # Every line of the log that mentions the task is a JSON object (read_json_lines parsed them all).
    mentions = [line for line in log.read_text().splitlines() if result.id in line]
    assert mentions and all(line.startswith("{") and json.loads(line) for line in mentions)

    for entry in entries:
        assert (entry["task_name"], entry["queue"]) == (task_name(short), queue_for(short)), entry
        assert {"time", "level", "logger", "message", "process"} <= set(entry)
    warnings = [e for e in entries if e["logger"] == "apps.main.base_task" and e["level"] == "WARNING"]
    assert [e["attempt"] for e in warnings] == [1, 2]
    assert [e["message"].split(" in ")[0] for e in warnings] == [f"transient error, retry {n}/3" for n in (1, 2)]
    retries = [e for e in entries if e["logger"] == "celery.app.trace" and " retry: Retry in " in e["message"]]
    assert [e["attempt"] for e in retries] == [1, 2]
    succeeded = [e for e in entries if e["logger"] == "celery.app.trace" and "succeeded" in e["message"]]
    assert len(succeeded) == 1 and succeeded[0]["attempt"] == 3 and succeeded[0]["level"] == "INFO"
    assert succeeded[0]["message"].startswith(f"Task {task_name(short)}[{result.id}] succeeded in ")
    durations = [e for e in entries if "duration_seconds" in e]
    assert [(e["attempt"], e["state"]) for e in durations] == [(1, "RETRY"), (2, "RETRY"), (3, "SUCCESS")]


def test_dev_settings_write_the_log_files(celery_worker_factory, tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    queue = f"logfiles-{uuid.uuid4().hex[:6]}"  # only this worker consumes it
    celery_worker_factory([queue], concurrency=1, extra_env={
        env_names.SETTINGS_MODULE: "portfolio_site.settings.dev",
        env_names.LOG_DIR: str(log_dir),
        env_names.LOCAL_STACK_DIR: str(tmp_path / "local"),
        env_names.METRICS_PORT: "0",
    })
    ok = app.send_task(task_name("health_check"), queue=queue)
    bad = app.send_task(task_name("backup_data"), kwargs={"keep": 0}, queue=queue)
    assert ok.get(timeout=scaled(30))["status"] == "healthy"
    with pytest.raises(Exception, match="keep must be at least 1"):
        bad.get(timeout=scaled(30))

    performance = log_dir / "performance.log"
    wait_until(lambda: len(read_json_lines(performance)) >= 2 if performance.exists() else False,
             timeout=scaled(10), what="both task durations in performance.log")
    timed = read_json_lines(performance)
    assert [(e["task_id"], e["state"]) for e in timed] == [(ok.id, "SUCCESS"), (bad.id, "FAILURE")]
    for entry in timed:
        assert isinstance(entry["duration_seconds"], float) and 0 <= entry["duration_seconds"] < 30
        assert entry["logger"] == "apps.main.performance" and entry["queue"] == queue

    django_log = read_json_lines(log_dir / "django.log")
    assert any(e.get("task_id") == ok.id and "succeeded" in e["message"] for e in django_log)
    assert any(e["message"].endswith(" ready.") for e in django_log)  # the worker's own lines too

    errors = read_json_lines(log_dir / "errors.log")
    assert errors and {e["level"] for e in errors} <= {"ERROR", "CRITICAL"}
    failed = [e for e in errors if e.get("task_id") == bad.id]
    assert any(e["logger"] == "celery.app.trace" and "PermanentError" in e["message"] for e in failed), errors
    assert any(e["message"].startswith("task dead-lettered: ") for e in failed), errors
    assert not any(e.get("task_id") == ok.id for e in errors)
