"""The local stack's own lines: on stdout while something reads it, always in the stack's log file.

``make up 2>&1 | tee log`` and Ctrl-C: the terminal's SIGINT reaches tee as well, and tee usually dies
first. A print to the dead pipe raises BrokenPipeError; in the middle of the orderly stop that would
leave the children to PR_SET_PDEATHSIG and .local/stack.env behind. So a line that stdout refuses is
dropped there, stdout is pointed at /dev/null for good, and the log file still gets every line.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


class Console:
    def __init__(self, log_path: Path | None = None, prefix: str = "[stack] ") -> None:
        self.log_path = log_path
        self.prefix = prefix
        self.stdout_gone = False

    def say(self, message: str, *, recorded: str | None = None) -> None:
        """Print and record one line; never raises, whatever stdout or the disk does. ``recorded``: what the
        log file gets instead (a line showing a password on the terminal names where it is kept instead)."""
        line = f"{self.prefix}{message}"
        self._print(line)
        self._record(line if recorded is None else f"{self.prefix}{recorded}")

    def _print(self, line: str) -> None:
        if self.stdout_gone:
            return
        try:
            print(line, flush=True)
        except (OSError, ValueError):  # EPIPE / EIO once the reader or the terminal is gone; ValueError: closed
            self.stdout_gone = True
            _point_stdout_at_devnull()

    def _record(self, line: str) -> None:
        if self.log_path is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a", encoding="utf-8") as log:
                log.write(f"{stamp} {line}\n")
        except OSError:
            pass  # a full disk must not stop the stop either


def _point_stdout_at_devnull() -> None:
    """Later prints, and the interpreter's flush at exit, then go nowhere instead of raising again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
