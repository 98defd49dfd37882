"""Run the stack's processes as children: each logs to its own file, all stop in reverse order."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from embedded.network import Abort, wait_until
from embedded.process import detach_from_terminal, stop_process, tail

if TYPE_CHECKING:
    from apps.main.queues import WorkerPool

APP_DIR = Path(__file__).resolve().parent.parent


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen
    log_path: Path


@dataclass
class Supervisor:
    log_dir: Path
    env: dict[str, str]
    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], *, extra_env: dict[str, str] | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                argv, cwd=APP_DIR, env={**self.env, **(extra_env or {})},
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=detach_from_terminal,
            )
        child = Child(name, argv, process, log_path)
        self.children.append(child)
        return child

    def exited(self) -> list[Child]:
        return [child for child in self.children if child.process.poll() is not None]

    def stop(self, child: Child, timeout: float = 30) -> None:
        # SIGTERM is Celery's warm shutdown: running tasks finish, unacked ones go back to the queue.
        stop_process(child.process, sig=signal.SIGTERM, timeout=timeout)
        if child in self.children:
            self.children.remove(child)

    def stop_all(self, timeout: float = 30) -> None:
        for child in reversed(list(self.children)):
            self.stop(child, timeout)

    def start_worker(self, name: str, pool: WorkerPool, *, timeout: float = 60,
                     extra_args: tuple[str, ...] = (), extra_env: dict[str, str] | None = None,
                     loglevel: str = "INFO") -> str:
        """Start ``celery worker`` with the chart's command line for ``pool`` and wait until it answers a ping.

        Returns the node name (``<name>@<host>``); a worker that exits while starting fails at once.
        Needs Django set up in this process (the ping goes through the app's broker).
        """
        from portfolio_site import commands
        from portfolio_site.celery import app

        argv = [*commands.worker(name, pool, loglevel=loglevel), *extra_args]
        child = self.spawn(f"worker-{name}", argv, extra_env=extra_env)
        node = f"{name}@{socket.gethostname()}"

        def answered() -> bool:
            if child.process.poll() is not None:
                raise Abort(self.describe_failure(child))
            return any(node in reply for reply in app.control.ping(destination=[node], timeout=0.5))

        wait_until(answered, timeout=timeout, what=f"worker {node}", interval=0.2)
        return node

    def describe_failure(self, child: Child) -> str:
        code = child.process.returncode
        return f"{child.name} exited with {code}; last lines of {child.log_path}:\n{tail(child.log_path)}"


def python_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: ours, plus the venv's bin first on PATH so `celery` resolves."""
    import sys

    env = dict(base if base is not None else os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env
