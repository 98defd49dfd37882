from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from embedded.network import wait_until


def read_or_create_secret(path: Path) -> str:
    """A password kept beside the data so that a restarted server accepts the old clients."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")
    path.write_text(value)
    path.chmod(0o600)
    return value


def stop_process(process: subprocess.Popen | None, *, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Ask a server to stop, then kill it if it does not; never leaves a zombie."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def exit_status(returncode: int | None) -> str:
    """How a process ended, as a person reads it: ``signal 9`` or ``code 1``."""
    if returncode is None:
        return "still running"
    return f"signal {-returncode}" if returncode < 0 else f"code {returncode}"


def start_again(start: Callable[[], object], *, timeout: float, what: str) -> None:
    """Start a server that exited, retrying while what it left behind clears: its port in TIME_WAIT, or
    PostgreSQL's orphaned backends still attached to the old shared memory for a moment."""

    def started() -> bool:
        start()
        return True

    wait_until(started, timeout=timeout, what=what, interval=0.5)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def detach_from_terminal() -> None:
    """preexec_fn: the child ignores the terminal's Ctrl-C (its owner stops it in order) and gets
    SIGTERM if its owner dies anyway, so no server or worker outlives the stack that started it."""
    os.setpgrp()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1
