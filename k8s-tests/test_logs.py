"""No container of the release writes to its read-only root filesystem (nor tries to)."""

from __future__ import annotations

from typing import Any

from k8s_support.logs import FORBIDDEN, container_logs, offending_lines
from k8s_support.release import Release


def test_no_container_logs_read_only_filesystem_or_control_server_errors(core: Any, release: Release) -> None:
    """Issue 10, observation 7: gunicorn logged `Control server error: [Errno 30] Read-only file system:
    '/nonexistent'` on every web start (its control socket under $HOME on a read-only root). Every
    container of the release (init containers and earlier runs included) is read in full for that and
    for any other `Read-only file system` error."""
    read: list[str] = []
    found: dict[str, list[str]] = {}
    for where, text in container_logs(core, release.namespace, release.selector()):
        read.append(where)
        if lines := offending_lines(text):
            found[where] = lines[:5]
    assert any("/web" in where for where in read), f"no web container log was read (read: {read})"
    assert not found, f"containers logged {' or '.join(map(repr, FORBIDDEN))}: {found}"
