"""Serve Kubernetes API JSON from a real local HTTP server to the real `kubernetes` client (tests only)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlparse

from kubernetes import client

from tests.support.httpserver import Reply, Request, serve


@contextmanager
def fake_api(objects: dict[str, Any], logs: dict[str, str] | None = None) -> Iterator[client.ApiClient]:
    """``objects``: API path -> JSON body; ``logs``: "pod/container[/previous]" -> text (else 400)."""

    def route(request: Request) -> Reply:
        url = urlparse(request.path)
        query = parse_qs(url.query)
        if url.path.endswith("/log"):
            pod = url.path.split("/")[-2]
            key = f"{pod}/{query['container'][0]}" + ("/previous" if query.get("previous") == ["true"] else "")
            if logs and key in logs:
                return Reply(200, logs[key], "text/plain")
            return Reply(400, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 400,
                               "reason": "BadRequest", "message": f"previous terminated container not found ({key})"})
        if url.path in objects:
            body = objects[url.path]
            return Reply(body.get("code", 200) if isinstance(body, dict) and body.get("kind") == "Status" else 200,
                         body)
        return Reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                           "reason": "NotFound", "message": f"{url.path} not found"})

    with serve(route) as server:
        configuration = client.Configuration()
        configuration.host = server.url
        api = client.ApiClient(configuration)
        try:
            yield api
        finally:
            api.close()


def deserialize(api: client.ApiClient, obj: dict[str, Any], kind: str) -> Any:
    """A manifest dict as the client's model object (what list/read calls return)."""
    return api.deserialize(json.dumps(obj), kind, "application/json")
