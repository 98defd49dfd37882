"""Command lines of every role. The local stack runs them; chart tests compare the chart's to these."""

from __future__ import annotations

from apps.main.queues import WorkerPool
from portfolio_site.ports import EXPORTER_PORT, FLOWER_PORT, WEB_PORT

CELERY = ["celery", "-A", "portfolio_site"]


def worker(pool_name: str, pool: WorkerPool, *, loglevel: str = "INFO") -> list[str]:
    return [
        *CELERY, "worker",
        "-Q", ",".join(pool.queues),
        "-n", f"{pool_name}@%h",
        "--concurrency", str(pool.concurrency),
        "--prefetch-multiplier", str(pool.prefetch_multiplier),
        *(["--task-events"] if pool.task_events else []),
        "--loglevel", loglevel,
    ]


def beat(*, loglevel: str = "INFO") -> list[str]:
    return [*CELERY, "beat", "--loglevel", loglevel]


def flower(port: int = FLOWER_PORT) -> list[str]:
    return ["python", "manage.py", "start_flower", f"--port={port}"]


def exporter(port: int = EXPORTER_PORT) -> list[str]:
    return ["python", "manage.py", "run_queue_exporter", "--port", str(port)]


def web(port: int = WEB_PORT, workers: int = 2) -> list[str]:
    # --no-control-socket (gunicorn >= 25.1): its control socket defaults to $HOME/.gunicorn/ (the image's
    # user has HOME /nonexistent) on a read-only root filesystem; nothing uses gunicornc in a pod.
    return [
        "gunicorn", "portfolio_site.wsgi:application",
        "--bind", f"0.0.0.0:{port}", "--workers", str(workers), "--access-logfile", "-",
        "--no-control-socket",
    ]


def wait_for_database(timeout: int = 300) -> list[str]:
    """The migration Job's first step: wait until the database accepts connections."""
    return ["python", "manage.py", "wait_for_database", "--timeout", str(timeout)]


MIGRATE = [["python", "manage.py", "migrate", "--noinput"], ["python", "manage.py", "setup_periodic_tasks"]]
