"""Scan the logs of every container of a release for lines that must never appear."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

#: Lines no container of the release may log: a write to the read-only root filesystem (a library that
#: puts a file under $HOME or the working directory) and gunicorn's control server (its socket under
#: $HOME=/nonexistent; the chart runs gunicorn with --no-control-socket). Issue 10, observation 7.
FORBIDDEN = ("Read-only file system", "Control server error")

#: Bytes read of one log: the lines looked for are written at start-up, far inside this.
LOG_LIMIT = 8 * 1024 * 1024


def offending_lines(text: str, patterns: Iterable[str] = FORBIDDEN) -> list[str]:
    """The lines of ``text`` containing any of ``patterns`` (case-sensitive, as the libraries write them)."""
    wanted = tuple(patterns)
    return [line.strip() for line in text.splitlines() if any(p in line for p in wanted)]


def container_logs(core: Any, namespace: str, selector: str) -> Iterator[tuple[str, str]]:
    """(``pod/container[ previous]``, log text) of every init and app container of the matching pods,
    the previous run too where a container restarted. A log that cannot be read (container not started
    yet) is skipped: there is nothing in it to find."""
    from kubernetes.client.exceptions import ApiException

    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        statuses = [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]
        for status in statuses:
            runs = [False, True] if status.restart_count else [False]
            for previous in runs:
                try:
                    text = core.read_namespaced_pod_log(
                        pod.metadata.name, namespace, container=status.name, previous=previous,
                        limit_bytes=LOG_LIMIT, _request_timeout=30,
                    )
                except ApiException as exc:
                    if exc.status in (400, 404):
                        continue
                    raise
                yield f"{pod.metadata.name}/{status.name}{' (previous run)' if previous else ''}", text or ""
