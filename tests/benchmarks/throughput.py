"""Throughput, latency and memory of one worker pool at several concurrencies: prints figures.

    uv run python -m tests.benchmarks.throughput --tasks 1000 --concurrency 1,2,4 --plot bench.png

Real components only: an embedded Valkey and PostgreSQL, a real ``celery worker`` started with the
chart's command line, ``process_user_action`` tasks (a database write each) sent through the broker and
results stored by django-celery-results. Latency runs from the publish call to the stored result
(under a burst it is mostly time spent waiting in the queue).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "app"))

from embedded import EmbeddedPostgres, EmbeddedValkey  # noqa: E402
from embedded.network import wait_until  # noqa: E402
from embedded.supervisor import APP_DIR, Supervisor, python_env  # noqa: E402

QUEUE = "high_priority"


@dataclass
class Figures:
    concurrency: int
    tasks: int
    publish_per_s: float
    throughput_per_s: float
    p50_ms: float
    p95_ms: float
    peak_rss_mb: float


def peak_rss_sampler(pid: int, stop: threading.Event, out: list[float]) -> None:
    import psutil

    root = psutil.Process(pid)
    while not stop.wait(0.2):
        try:
            procs = [root, *root.children(recursive=True)]
            out.append(sum(p.memory_info().rss for p in procs) / 2**20)
        except psutil.NoSuchProcess:
            return


def run_one(concurrency: int, tasks: int, env: dict[str, str], logs: Path) -> Figures:
    from django_celery_results.models import TaskResult

    from apps.main.queues import task_name
    from portfolio_site.celery import app

    TaskResult.objects.all().delete()
    supervisor = Supervisor(log_dir=logs, env=env)
    try:
        supervisor.start_worker(f"bench{concurrency}", (QUEUE,), concurrency=concurrency, loglevel="WARNING")
        child = supervisor.children[-1]
        stop, rss = threading.Event(), []
        sampler = threading.Thread(target=peak_rss_sampler, args=(child.process.pid, stop, rss), daemon=True)
        sampler.start()
        run_id = uuid.uuid4().hex[:8]
        started = time.monotonic()
        sent_at: dict[str, float] = {}
        with app.producer_or_acquire() as producer:
            for i in range(tasks):
                result = app.send_task(task_name("process_user_action"), producer=producer, kwargs={
                    "action_id": f"{run_id}-{i}", "user_id": f"u{i % 50}", "action": "bench"})
                sent_at[result.id] = time.time()
        published = time.monotonic()
        last_report = [0.0]

        def done() -> bool:
            count = TaskResult.objects.filter(status="SUCCESS").count()
            if time.monotonic() - last_report[0] > 2:
                print(f"  concurrency {concurrency}: {count}/{tasks} done", flush=True)
                last_report[0] = time.monotonic()
            return count >= tasks

        wait_until(done, timeout=600, what=f"{tasks} tasks", interval=0.25)
        finished = time.monotonic()
        stop.set()
        sampler.join()
        # End to end: from the publish call returning to the result being stored.
        latencies = sorted(
            (r.date_done.timestamp() - sent_at[r.task_id]) * 1000
            for r in TaskResult.objects.only("task_id", "date_done")
        )
        return Figures(
            concurrency=concurrency, tasks=tasks,
            publish_per_s=tasks / (published - started),
            throughput_per_s=tasks / (finished - started),
            p50_ms=statistics.median(latencies),
            p95_ms=latencies[int(len(latencies) * 0.95) - 1],
            peak_rss_mb=max(rss) if rss else float("nan"),
        )
    finally:
        supervisor.stop_all()


def plot(figures: list[Figures], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [f.concurrency for f in figures]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(xs, [f.throughput_per_s for f in figures], marker="o")
    left.set(title="Throughput (process_user_action)", xlabel="--concurrency", ylabel="tasks / s")
    right.plot(xs, [f.peak_rss_mb for f in figures], marker="o", color="tab:red")
    right.set(title="Peak worker RSS (main + children)", xlabel="--concurrency", ylabel="MiB")
    for axis in (left, right):
        axis.set_xticks(xs)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="celery-stack-bench-") as tmp:
        data = Path(tmp)
        with EmbeddedValkey(data / "valkey") as valkey, EmbeddedPostgres(data / "pg", database="bench") as pg:
            env = python_env()
            env.update({"DJANGO_SETTINGS_MODULE": "portfolio_site.settings.test", "REDIS_URL": valkey.url,
                        "DATABASE_URL": pg.url, "APP_DATA_DIR": str(data / "app"), "LOG_LEVEL": "WARNING"})
            os.environ.update(env)
            subprocess.run(["python", "manage.py", "migrate", "--noinput"], cwd=APP_DIR, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            import django

            django.setup()
            figures = [run_one(int(c), args.tasks, env, data / "logs") for c in args.concurrency.split(",")]

    print(f"\n{'concurrency':>11} {'tasks':>6} {'publish/s':>10} {'done/s':>8} "
          f"{'p50 lat ms':>10} {'p95 lat ms':>10} {'peak RSS MiB':>13}")
    for f in figures:
        print(f"{f.concurrency:>11} {f.tasks:>6} {f.publish_per_s:>10.0f} {f.throughput_per_s:>8.1f} "
              f"{f.p50_ms:>10.0f} {f.p95_ms:>10.0f} {f.peak_rss_mb:>13.0f}")
    if args.plot:
        plot(figures, args.plot)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
