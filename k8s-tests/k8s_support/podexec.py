"""Run a command in a container (`kubectl exec` through the Python client) and keep its exit code.

Exec'd processes get the container's environment from its spec, so e.g. `redis-cli` in the Redis
container finds REDISCLI_AUTH and `manage.py` in an app container finds DATABASE_URL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ExecResult:
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return f"exit {self.returncode}; stdout: {self.stdout[-2000:]!r}; stderr: {self.stderr[-2000:]!r}"


def run_in_pod(
    core: Any, namespace: str, pod: str, container: str, command: Sequence[str], *, timeout: float = 120.0
) -> ExecResult:
    """Run ``command`` in the container and wait (up to ``timeout`` seconds) for it to end."""
    from kubernetes.stream import stream

    response = stream(
        core.connect_get_namespaced_pod_exec, pod, namespace, container=container, command=list(command),
        stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False,
    )
    stdout: list[str] = []
    stderr: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while response.is_open():
            if time.monotonic() > deadline:
                raise TimeoutError(f"`{' '.join(command)}` in {pod}/{container} still running after {timeout:g}s; "
                                   f"stdout so far: {''.join(stdout)[-2000:]!r}")
            response.update(timeout=1)
            if response.peek_stdout():
                stdout.append(response.read_stdout())
            if response.peek_stderr():
                stderr.append(response.read_stderr())
        # what arrived with the closing frames
        stdout.append(response.read_stdout(timeout=0) if response.peek_stdout(timeout=0) else "")
        stderr.append(response.read_stderr(timeout=0) if response.peek_stderr(timeout=0) else "")
        code = response.returncode
    finally:
        response.close()
    return ExecResult(code if code is not None else -1, "".join(stdout), "".join(stderr))


def marked_json(output: str, marker: str) -> Any:
    """The JSON value printed after ``marker`` on a line of its own (log lines around it are ignored)."""
    for line in reversed(output.splitlines()):
        if line.startswith(marker):
            return json.loads(line[len(marker):])
    raise ValueError(f"no line starting with {marker!r} in the output: {output[-2000:]!r}")
