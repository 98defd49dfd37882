"""A webhook target on loopback that answers with a scripted sequence of status codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.support.httpserver import Reply, Request, serve


@dataclass
class WebhookServer:
    statuses: list[int]
    #: (monotonic arrival time, JSON body) of each call, in order.
    calls: list[tuple[float, dict]] = field(default_factory=list)
    url: str = ""

    def status_for(self, index: int) -> int:
        return self.statuses[min(index, len(self.statuses) - 1)]


@contextmanager
def webhook_server(statuses: list[int]) -> Iterator[WebhookServer]:
    state = WebhookServer(statuses=list(statuses))

    def route(request: Request) -> Reply:
        status = state.status_for(len(state.calls))
        state.calls.append((request.at, json.loads(request.body or b"{}")))
        return Reply(status=status, body=b"")

    with serve(route) as server:
        state.url = f"{server.url}/hook"
        yield state
