"""Keep the local stack's embedded servers running, as the supervisor keeps its children in view.

A server that exits (OOM killer, a stray ``kill -9``) is started again on its port with its data
directory, so the workers' and the web app's URLs stay valid and they reconnect by themselves. One
that cannot be started again, or keeps dying, ends the stack: its clients could only log errors.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from embedded.process import exit_status


class EmbeddedServer(Protocol):
    label: str
    port: int

    def is_running(self) -> bool: ...

    @property
    def returncode(self) -> int | None: ...

    def restart(self, timeout: float) -> object: ...


class ServerLost(Exception):
    """An embedded server is down for good; the message is the one line that says why."""


@dataclass
class Watchdog:
    #: Watched as they are: the stack appends to its list as it starts each server.
    servers: Sequence[EmbeddedServer]
    #: More exits than this within ``window`` seconds: something kills the server, restarting is futile.
    max_restarts: int = 3
    window: float = 60.0
    #: How long a restart may take, retries included (the port in TIME_WAIT, PostgreSQL's crash recovery).
    restart_timeout: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _exits: dict[int, deque[float]] = field(default_factory=dict)

    def check(self) -> list[str]:
        """Restart every server that has exited; returns one line per restart.

        Raises ServerLost if a server cannot be restarted or has exited too often.
        """
        return [self._restart(server) for server in self.servers if not server.is_running()]

    def _restart(self, server: EmbeddedServer) -> str:
        what = f"embedded {server.label} exited ({exit_status(server.returncode)})"
        if self._count_exit(server) > self.max_restarts:
            raise ServerLost(f"{what}, {self.max_restarts + 1} times within {self.window:.0f}s; stopping the stack")
        try:
            server.restart(timeout=self.restart_timeout)
        except Exception as exc:  # any failure to start gets the same verdict
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ServerLost(f"{what} and could not be restarted ({first_line}); stopping the stack") from exc
        return f"{what}; restarted on port {server.port}, data kept"

    def _count_exit(self, server: EmbeddedServer) -> int:
        now = self.clock()
        exits = self._exits.setdefault(id(server), deque())
        exits.append(now)
        while exits and exits[0] < now - self.window:
            exits.popleft()
        return len(exits)
