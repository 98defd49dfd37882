"""Client of the app's task API (apps.main.api): enqueue a task, read its state, wait for the outcome.

Field names follow the API's serializers (TaskAccepted: id, task, queue, status_url; TaskStatus: id,
task, state, ready, result, error, worker, queue, date_done); tests/cluster checks they still exist.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from k8s_support.waiting import WaitTimeout, wait_for

#: Celery states after which a task never changes again without a new delivery.
FAILED_STATES = frozenset({"FAILURE", "REVOKED"})


class TaskApiError(RuntimeError):
    """The API refused a request or answered something that is not the documented JSON."""


class ServiceUnavailable(TaskApiError):
    """503 with Retry-After: the API's broker, database or Redis was unreachable for that request ("try again
    later"). Polling retries it, as a client should: a Service whose pod just came back is reachable a moment
    after the pod is Ready (kube-proxy programs the new endpoint)."""


#: What polling for a task's state retries: the connection, and the API's own "try again later".
POLL_RETRY_ON: tuple[type[BaseException], ...] = (requests.ConnectionError, requests.Timeout, ServiceUnavailable)


class TaskFailed(AssertionError):
    """A task reached FAILURE/REVOKED while we waited for SUCCESS."""


class TaskApi:
    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def _json(self, response: requests.Response, expected: tuple[int, ...]) -> dict[str, Any]:
        what = f"{response.request.method} {response.url}"
        if response.status_code not in expected:
            if response.status_code == 503:
                raise ServiceUnavailable(f"{what} answered 503: {response.text[:500]}")
            raise TaskApiError(f"{what} answered {response.status_code}: {response.text[:500]}")
        try:
            body = response.json()
        except ValueError as exc:
            raise TaskApiError(f"{what} answered non-JSON: {response.text[:200]!r}") from exc
        if not isinstance(body, dict):
            raise TaskApiError(f"{what} answered {type(body).__name__}, expected an object: {body!r}")
        return body

    def submit(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST /api/tasks/<name>/ with the task's keyword arguments; returns the 202 body (id, queue…)."""
        response = self.session.post(
            f"{self.base_url}/api/tasks/{name}/", json=arguments or {}, timeout=self.timeout
        )
        body = self._json(response, (202,))
        if not body.get("id"):
            raise TaskApiError(f"POST /api/tasks/{name}/ answered without an id: {body!r}")
        return body

    def submit_many(
        self, name: str, arguments: Callable[[], dict[str, Any]], count: int, *, threads: int = 8
    ) -> list[str]:
        """Submit ``count`` tasks ``name`` concurrently, ``arguments()`` fresh for each; ids in submission order."""
        with ThreadPoolExecutor(max_workers=threads) as executor:
            return list(executor.map(lambda _: self.submit(name, arguments())["id"], range(count)))

    def status(self, task_id: str) -> dict[str, Any]:
        response = self.session.get(f"{self.base_url}/api/tasks/{task_id}/", timeout=self.timeout)
        body = self._json(response, (200,))
        if "state" not in body:
            raise TaskApiError(f"GET /api/tasks/{task_id}/ answered without a state: {body!r}")
        return body

    def wait_for_state(
        self,
        task_id: str,
        states: frozenset[str] | set[str],
        *,
        timeout: float,
        interval: float = 0.5,
        retry_on: tuple[type[BaseException], ...] = POLL_RETRY_ON,
    ) -> dict[str, Any]:
        """Poll until the task is in one of ``states``; FAILURE/REVOKED (when not wanted) fail at once."""

        def check() -> dict[str, Any] | None:
            body = self.status(task_id)
            if body["state"] in states:
                return body
            if body["state"] in FAILED_STATES:
                raise TaskFailed(f"task {task_id} ({body.get('task')}) ended {body['state']}: {body.get('error')}")
            return None

        return wait_for(
            check, timeout=timeout, interval=interval, retry_on=retry_on,
            description=f"task {task_id} to reach {'/'.join(sorted(states))}",
        )

    def wait_for_success(self, task_id: str, *, timeout: float, **kwargs: Any) -> dict[str, Any]:
        return self.wait_for_state(task_id, {"SUCCESS"}, timeout=timeout, **kwargs)

    def wait_all_success(
        self,
        ids: Sequence[str],
        *,
        timeout: float,
        interval: float = 2.0,
        threads: int = 8,
        retry_on: tuple[type[BaseException], ...] = POLL_RETRY_ON,
        diagnostics: Callable[[], str] | None = None,
        progress: Callable[[str], None] = print,
        progress_every: float = 10.0,
    ) -> dict[str, dict[str, Any]]:
        """Wait, with one deadline for all, until every task of ``ids`` is SUCCESS; their status bodies.

        Each round reads the tasks not yet SUCCESS (concurrently); progress is reported when it changed,
        at most every ``progress_every`` seconds (and once when all are done).
        A FAILURE/REVOKED fails at the end of the round that saw it, naming how many and which; the
        timeout names how many are still missing and in which state they were last seen.
        """
        wanted = list(dict.fromkeys(ids))
        done: dict[str, dict[str, Any]] = {}
        last_state: dict[str, str] = dict.fromkeys(wanted, "unread")
        reported: dict[str, Any] = {"line": "", "at": float("-inf")}
        began = time.monotonic()

        def read(task_id: str) -> dict[str, Any]:
            try:
                return self.status(task_id)
            except retry_on as exc:  # one unreadable answer: try this task again next round
                return {"state": f"unreadable ({type(exc).__name__})"}

        def missing() -> str:
            states = Counter(state for task_id, state in last_state.items() if task_id not in done)
            return ", ".join(f"{state} {n}" for state, n in states.most_common())

        def check(executor: ThreadPoolExecutor) -> bool:
            pending = [task_id for task_id in wanted if task_id not in done]
            failed: list[tuple[str, dict[str, Any]]] = []
            for task_id, body in zip(pending, executor.map(read, pending), strict=True):
                last_state[task_id] = body["state"]
                if body["state"] == "SUCCESS":
                    done[task_id] = body
                elif body["state"] in FAILED_STATES:
                    failed.append((task_id, body))
            if failed:
                examples = "; ".join(
                    f"{task_id} ({b.get('task')}) {b['state']}: {b.get('error')}" for task_id, b in failed[:5]
                )
                raise TaskFailed(
                    f"{len(failed)} of {len(wanted)} tasks failed ({len(done)} SUCCESS, not done: {missing()}); "
                    f"e.g. {examples}"
                )
            not_yet = missing()
            line = f"{len(done)}/{len(wanted)} tasks SUCCESS" + (f"; not yet: {not_yet}" if not_yet else "")
            finished = len(done) == len(wanted)
            now = time.monotonic()
            if line != reported["line"] and (finished or now - reported["at"] >= progress_every):
                reported.update(line=line, at=now)
                progress(f"[{now - began:5.0f}s] {line}")
            return finished

        with ThreadPoolExecutor(max_workers=threads) as executor:
            try:
                wait_for(lambda: check(executor), timeout=timeout, interval=interval, diagnostics=diagnostics,
                         description=f"all {len(wanted)} tasks to reach SUCCESS")
            except WaitTimeout as exc:
                not_done = [task_id for task_id in wanted if task_id not in done]
                raise WaitTimeout(
                    f"{len(not_done)} of {len(wanted)} tasks not SUCCESS after {timeout:g}s "
                    f"(last seen: {missing()}; e.g. {', '.join(not_done[:5])})\n{exc}"
                ) from None
        return done


def pool_of_worker(hostname: str | None) -> str:
    """The pool a worker belongs to: workers run with ``-n <pool>@%h`` (hostname = pod name)."""
    if not hostname or "@" not in hostname:
        raise ValueError(f"worker hostname {hostname!r} is not of the form <pool>@<host>")
    return hostname.split("@", 1)[0]


def host_of_worker(hostname: str) -> str:
    """The host part of ``<pool>@<host>``: in the chart it is the pod's name."""
    pool_of_worker(hostname)
    return hostname.split("@", 1)[1]
