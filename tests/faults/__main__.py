"""``make faults``: every fault against real Valkey, PostgreSQL and workers; prints the table.

    uv run python -m tests.faults [--tasks 400] [--only kill-main,broker-restart]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.faults.harness import FaultStack, log
from tests.faults.scenarios import SCENARIOS, run, table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=400, help="tasks per burst")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenario names")
    parser.add_argument("--visibility-timeout", type=int, default=30)
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    if unknown := sorted(set(names) - set(SCENARIOS)):
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="celery-stack-faults-"))
    with FaultStack(tmp, visibility_timeout=args.visibility_timeout) as stack:
        log(f"stack up: Valkey {stack.valkey.port}, PostgreSQL {stack.postgres.port}; logs in {tmp}/logs")
        rows = run(stack, names, args.tasks)
    print()
    print(table(rows))
    print(f"\n{len(rows)} faults in {time.monotonic() - started:.0f} s")
    bad = [r.fault for r in rows if not r.ok]
    if bad:
        print(f"FAILED: lost or duplicated tasks in: {', '.join(bad)}; process logs kept in {tmp}/logs")
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
