"""``make bench``: (a) to (i) on one embedded Valkey and PostgreSQL; prints the table and the targets.

    uv run --frozen python -m tests.benchmarks [--smoke] [--out DIR] [--no-docs] [--only SECTIONS]

A full run writes bench/results/<date>.json and two PNG plots there, and rewrites the results section of
docs/benchmarks.md. --smoke (tiny sizes) and --out write only to their own directory, never there.
The default is (a)-(g); --only (e.g. ``--only h``, the cost of encrypted payloads, ``--only i``, large payloads) runs
those sections: without every one of (a)-(g) only their table and JSON (into --out or a temporary directory), no
targets, plots nor docs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.benchmarks import report, scenarios
from tests.benchmarks.progress import elapsed, log
from tests.benchmarks.servers import ROOT, BenchServers

RESULTS_DIR = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"
PACKAGES = {"celery": "celery", "kombu": "kombu", "redis-py": "redis", "django": "django", "psycopg": "psycopg",
            "gunicorn": "gunicorn", "django-celery-results": "django-celery-results"}


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    total_kib = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), 0)
    return {"cores": os.cpu_count(), "cpu_model": model, "memory_gib": total_kib / 2**20,
            "kernel": f"{platform.system()} {platform.release()}"}


def versions(servers: BenchServers) -> dict[str, str]:
    found = {"python": platform.python_version()}
    found.update({name: importlib.metadata.version(dist) for name, dist in PACKAGES.items()})
    found.update(servers.versions())
    return found


def _bare_settings() -> dict[str, Any]:
    from tests.benchmarks.bare_app import app as bare

    return {"worker_prefetch_multiplier": bare.conf.worker_prefetch_multiplier,
            "task_acks_late": bare.conf.task_acks_late,
            "worker_send_task_events": bare.conf.worker_send_task_events,
            "result_backend": bare.conf.result_backend,
            "visibility_timeout": (bare.conf.broker_transport_options or {}).get("visibility_timeout",
                                                                                 "kombu default 3600")}


def settings_that_matter(with_bare: bool = True) -> dict[str, Any]:
    from django.conf import settings

    from apps.main.queues import WORKER_POOLS

    transport = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {}
    found = {"bare (b)": _bare_settings()} if with_bare else {}  # the bare app exists only once (b) set it up
    return found | {
        "project (production settings)": {
            name: getattr(settings, name, None) for name in (
                "CELERY_WORKER_PREFETCH_MULTIPLIER", "CELERY_TASK_ACKS_LATE", "CELERY_TASK_REJECT_ON_WORKER_LOST",
                "CELERY_WORKER_SEND_TASK_EVENTS", "CELERY_TASK_SEND_SENT_EVENT", "CELERY_TASK_TRACK_STARTED",
                "CELERY_WORKER_MAX_TASKS_PER_CHILD", "CELERY_RESULT_BACKEND", "CELERY_RESULT_EXTENDED",
                "CONN_MAX_AGE", "CELERY_DB_REUSE_MAX")
        } | {"visibility_timeout": transport.get("visibility_timeout")},
        "pools": {name: {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(pool).items()}
                  for name, pool in WORKER_POOLS.items()},
    }


#: The sections run after Django is set up, in their order.
PROJECT_SECTIONS = {"c": scenarios.project_noop, "d": scenarios.user_actions, "e": scenarios.api_enqueue,
                    "f": scenarios.queue_isolation, "g": scenarios.worker_memory, "h": scenarios.encrypted_payloads,
                    "i": scenarios.large_payloads}
SECTIONS = "ab" + "".join(PROJECT_SECTIONS)
#: What `make bench` runs: issue 11's one run of (a)-(g), kept within ~10 minutes on 2 cores. (h), the cost of
#: encrypted payloads (docs/security.md), and (i), large payloads (docs/payloads.md, under a minute), run on
#: asking: `--only h`, `--only i`, or `--only abcdefghi` for everything.
DEFAULT_SECTIONS = "abcdefg"


def run(bench: scenarios.Bench, only: str = SECTIONS) -> dict[str, Any]:
    servers = bench.servers
    results: dict[str, Any] = {}
    # (a) and (b) first: this process is a plain Celery client until Django is set up for (c).
    if "a" in only or "b" in only:
        servers.use_bare_client()
        if "a" in only:
            payload = scenarios.bare_message_bytes(bench)
            log(f"a task message of (b) is {payload} bytes in Valkey")
            results["a"] = scenarios.raw_redis(bench, payload)
        if "b" in only:
            results["b"] = scenarios.bare_celery(bench)
    servers.use_project_settings()
    for section, scenario in PROJECT_SECTIONS.items():
        if section in only:
            results[section] = scenario(bench)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (a minute or two); writes no docs")
    parser.add_argument("--out", type=Path, help="write the JSON and plots here (default: bench/results/)")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument("--only", default=DEFAULT_SECTIONS,
                        help=f"run these sections (default {DEFAULT_SECTIONS}; h: encrypted payloads, i: large "
                             "payloads); without every "
                             f"one of {DEFAULT_SECTIONS}: their table and JSON, no targets, plots nor docs")
    args = parser.parse_args(argv)
    if not args.only or set(args.only) - set(SECTIONS):
        parser.error(f"--only takes letters of {SECTIONS}")
    partial = not set(DEFAULT_SECTIONS) <= set(args.only)
    # A SIGTERM (a test's timeout, a CI cancel) unwinds like Ctrl-C: every child and temp dir goes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    sizes = scenarios.SMOKE if args.smoke else scenarios.FULL
    own_out = args.out is None and (args.smoke or partial)
    write_docs = not (args.smoke or args.out or args.no_docs or partial)
    now = dt.datetime.now(dt.UTC)
    load_at_start = os.getloadavg()
    date = now.date().isoformat()
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="celery-stack-bench-"))
    log(f"{'smoke' if args.smoke else 'full'} run; servers, logs and data in {tmp}")
    try:
        with BenchServers(tmp) as servers:
            log(f"Valkey on {servers.valkey.port}, PostgreSQL on {servers.postgres.port}, migrated")
            bench = scenarios.Bench(servers, sizes)
            try:
                results = run(bench, args.only)
            except Exception:
                print(f"\n--- process logs ---\n{servers.log_tails()}", file=sys.stderr)
                raise
            found_versions = versions(servers)
            found_settings = settings_that_matter(with_bare="b" in args.only)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    checked = [] if partial else report.targets(results)
    payload = {
        "date": date, "started_at": now.isoformat(timespec="seconds"),
        "mode": ("smoke" if args.smoke else "full") + (f", only {args.only}" if partial else ""),
        "wall_seconds": time.monotonic() - started,
        "sizes": vars(sizes) | {"action_concurrency": list(sizes.action_concurrency)},
        "machine": machine() | {"load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg()},
        "versions": found_versions, "settings": found_settings, "targets": checked,
        "errors": bench.errors, "notes": bench.notes, "table": report.text_table(results).splitlines(),
        "sections": results,
    }
    # Made only now: an interrupted run leaves no empty result directory behind.
    out = args.out or (Path(tempfile.mkdtemp(prefix="celery-stack-bench-out-")) if own_out else RESULTS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{date}.json"
    report.write_json(json_path, payload)
    if not partial:
        report.plot_throughput(results, out / f"{date}-throughput.png")
        report.plot_latency(results, out / f"{date}-latency.png")
    if write_docs:
        report.update_docs(DOCS, report.docs_section(payload, os.path.relpath(out, DOCS.parent)))

    print()
    print(report.text_table(results))
    print()
    for line in report.target_lines(checked):
        print(line)
    for note in bench.notes:
        print(f"note: {note}")
    for error in bench.errors:
        print(f"ERROR: {error}")
    print(f"\nwall time {elapsed():.0f} s; figures in {json_path}"
          + ("; docs/benchmarks.md updated" if write_docs else "")
          + (" (a temporary directory)" if own_out else ""))
    return 1 if bench.errors else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the finally blocks have stopped every process by now
        print("\ninterrupted: every process stopped, temporary data removed", file=sys.stderr)
        sys.exit(130)
