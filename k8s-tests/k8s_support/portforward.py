"""`kubectl port-forward` as a context manager: a free local port, readiness, clean shutdown.

kubectl rather than the Python client's websocket portforward: it speaks plain TCP on a local port,
so requests (and a person copying the command) use it like any server.
"""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time
from types import TracebackType

#: kubectl prints this once the listener is up (IPv4; `--address 127.0.0.1` makes it the only one).
READY_LINE = re.compile(r"Forwarding from 127\.0\.0\.1:(?P<local>\d+) -> (?P<remote>\d+)")


class PortForwardError(RuntimeError):
    """kubectl port-forward did not come up (or died); the message carries its output."""


class PortForward:
    """Forward ``127.0.0.1:<free port>`` to ``target`` (``svc/name``, ``pod/name``, ``deploy/name``)."""

    def __init__(
        self,
        target: str,
        remote_port: int,
        *,
        namespace: str,
        context: str | None = None,
        kubectl: str = "kubectl",
        local_port: int = 0,
        ready_timeout: float = 30.0,
    ) -> None:
        self.target = target
        self.remote_port = remote_port
        self.namespace = namespace
        self.context = context
        self.kubectl = kubectl
        self.requested_local_port = local_port
        self.ready_timeout = ready_timeout
        self.local_port: int | None = None
        self._process: subprocess.Popen[str] | None = None
        self._stdout: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._threads: list[threading.Thread] = []

    def command(self) -> list[str]:
        argv = [self.kubectl]
        if self.context:
            argv += ["--context", self.context]
        local = str(self.requested_local_port) if self.requested_local_port else ""
        return [
            *argv, "--namespace", self.namespace, "port-forward", self.target,
            f"{local}:{self.remote_port}", "--address", "127.0.0.1",
        ]

    @property
    def url(self) -> str:
        if self.local_port is None:
            raise PortForwardError(f"port-forward to {self.target} is not running")
        return f"http://127.0.0.1:{self.local_port}"

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _pump(self, stream: object, sink: queue.Queue[str | None] | list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            if isinstance(sink, list):
                sink.append(line.rstrip("\n"))
            else:
                sink.put(line.rstrip("\n"))
        if not isinstance(sink, list):
            sink.put(None)

    def output(self) -> str:
        """What kubectl wrote on stderr so far (its error messages)."""
        return "\n".join(self._stderr).strip()

    def start(self) -> PortForward:
        argv = self.command()
        try:
            self._process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        except FileNotFoundError as exc:
            raise PortForwardError(f"{self.kubectl!r} not found: install kubectl to reach the cluster") from exc
        assert self._process.stdout is not None and self._process.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=(self._process.stdout, self._stdout), daemon=True),
            threading.Thread(target=self._pump, args=(self._process.stderr, self._stderr), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

        deadline = time.monotonic() + self.ready_timeout
        seen: list[str] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise PortForwardError(
                    f"`{' '.join(argv)}` printed no 'Forwarding from 127.0.0.1:…' within "
                    f"{self.ready_timeout:g}s; stdout: {seen!r}; stderr: {self.output()!r}"
                )
            try:
                line = self._stdout.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:  # stdout closed: kubectl exited
                code = self._process.wait(timeout=10)
                for thread in self._threads:
                    thread.join(timeout=5)
                raise PortForwardError(
                    f"`{' '.join(argv)}` exited with {code} before forwarding: {self.output() or repr(seen)}"
                )
            seen.append(line)
            match = READY_LINE.search(line)
            if match:
                self.local_port = int(match["local"])
                return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> PortForward:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
