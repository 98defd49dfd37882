"""Start the cluster's host processes in the background and stop exactly those again, by PID.

Each process gets a log file (LOGS/<name>.log) and a PID file (RUN/<name>.pid) holding its PID and
start time, so `cluster-down` never signals a recycled PID that now belongs to something else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from localcluster.paths import LOGS, RUN


@dataclass(frozen=True)
class Tracked:
    name: str
    pid: int
    started: str  # field 22 of /proc/<pid>/stat: start time in clock ticks since boot


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces: split after its closing parenthesis
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # exited; a child of ours until reaped
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return None
    return fields[19]


def pid_file(name: str) -> Path:
    return RUN / f"{name}.pid"


def tracked(name: str) -> Tracked | None:
    """The live process recorded under ``name`` (None when absent, dead, or the PID was reused)."""
    try:
        pid_text, started = pid_file(name).read_text().split()
    except (OSError, ValueError):
        return None
    pid = int(pid_text)
    if _start_time(pid) != started:
        return None
    return Tracked(name, pid, started)


def all_tracked() -> list[Tracked]:
    if not RUN.is_dir():
        return []
    found = (tracked(path.stem) for path in sorted(RUN.glob("*.pid")))
    return [t for t in found if t is not None]


def start(name: str, argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Tracked:
    """Start ``argv`` unless it already runs under ``name`` (a second `cluster-up` is a no-op)."""
    running = tracked(name)
    if running is not None:
        return running
    LOGS.mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    log = open(LOGS / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    log.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
    log.flush()
    # own session: the cluster outlives `make cluster-up` and a Ctrl-C in its terminal
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
    log.close()
    started = None
    for _ in range(50):
        started = _start_time(process.pid)
        if started:
            break
        time.sleep(0.01)
    pid_file(name).write_text(f"{process.pid} {started}\n")
    return Tracked(name, process.pid, started or "")


def alive(process: Tracked) -> bool:
    return _start_time(process.pid) == process.started


def log_tail(name: str, lines: int = 30) -> str:
    try:
        return "\n".join((LOGS / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(process: Tracked, *, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; the PID file goes either way."""
    if alive(process):
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(process) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(process):
            os.kill(process.pid, signal.SIGKILL)
            while alive(process):
                time.sleep(0.05)
    pid_file(process.name).unlink(missing_ok=True)


def stop_named(name: str, *, timeout: float = 20.0) -> bool:
    process = tracked(name)
    pid_file(name).unlink(missing_ok=True)
    if process is None:
        return False
    stop(process, timeout=timeout)
    return True
