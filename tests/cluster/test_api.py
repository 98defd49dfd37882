"""The task API client against a real local HTTP server, and against the app's real serializers."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager

import pytest

from apps.main.queues import HIGH_PRIORITY, queue_for
from k8s_support.api import TaskApi, TaskApiError, TaskFailed, host_of_worker, pool_of_worker
from k8s_support.samples import (
    BURST_ENV,
    BURST_SIZE,
    BURST_TASK,
    arguments_for,
    burst_arguments,
    burst_size,
    drain_budget,
)
from tests.support.httpserver import Reply, Request, Server, serve

TOKEN = "s3cret"


def api_server(states: list[str], *, error: str | None = None):  # type: ignore[no-untyped-def]
    """POST enqueues; each GET answers the next state (the last one repeats)."""
    remaining = list(states)

    def route(request: Request) -> Reply:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return Reply(401, {"detail": "invalid token"})
        if request.method == "POST" and request.path == "/api/tasks/update_analytics/":
            return Reply(202, {"id": "6f1c", "task": "apps.main.tasks.update_analytics", "queue": "default",
                               "status_url": "http://x/api/tasks/6f1c/"})
        if request.method == "POST":
            return Reply(404, {"detail": "unknown task"})
        state = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        return Reply(200, {"id": "6f1c", "task": "apps.main.tasks.update_analytics", "state": state,
                           "ready": state in ("SUCCESS", "FAILURE"), "result": {"snapshot_id": 1} if state == "SUCCESS"
                           else None, "error": error if state == "FAILURE" else None,
                           "worker": "default@rel-worker-default-7d9-abc" if state != "PENDING" else None,
                           "queue": "default", "date_done": None})

    return serve(route)


def test_submit_posts_the_arguments_with_the_bearer_token() -> None:
    with api_server(["PENDING"]) as server:
        accepted = TaskApi(server.url, TOKEN).submit("update_analytics", {"window_minutes": 5})
    assert accepted["id"] == "6f1c" and accepted["queue"] == "default"
    (request,) = server.requests
    assert request.method == "POST" and request.path == "/api/tasks/update_analytics/"
    assert json.loads(request.body) == {"window_minutes": 5}
    assert request.headers["Content-Type"] == "application/json"


def test_waits_through_pending_and_started_to_success() -> None:
    with api_server(["PENDING", "STARTED", "STARTED", "SUCCESS"]) as server:
        done = TaskApi(server.url, TOKEN).wait_for_success("6f1c", timeout=10, interval=0.01)
    assert done["state"] == "SUCCESS" and done["result"] == {"snapshot_id": 1}
    assert pool_of_worker(done["worker"]) == "default"
    assert host_of_worker(done["worker"]) == "rel-worker-default-7d9-abc"
    assert len([r for r in server.requests if r.method == "GET"]) == 4


def test_failure_fails_at_once_with_the_error() -> None:
    with (
        api_server(["STARTED", "FAILURE"], error="PermanentError('bad')") as server,
        pytest.raises(TaskFailed, match=r"ended FAILURE: PermanentError\('bad'\)"),
    ):
        TaskApi(server.url, TOKEN).wait_for_success("6f1c", timeout=10, interval=0.01)


def test_refusals_carry_status_and_body() -> None:
    with api_server(["PENDING"]) as server:
        with pytest.raises(TaskApiError, match=r"answered 401: .*invalid token"):
            TaskApi(server.url, "wrong").submit("update_analytics")
        with pytest.raises(TaskApiError, match=r"answered 404: .*unknown task"):
            TaskApi(server.url, TOKEN).submit("no_such_task")


def test_non_json_answers_are_reported() -> None:
    with (
        serve(lambda request: Reply(200, "<html>proxy error</html>", "text/html")) as server,
        pytest.raises(TaskApiError, match="non-JSON: '<html>proxy error</html>'"),
    ):
        TaskApi(server.url, TOKEN).status("6f1c")


def test_a_timeout_names_the_task_and_the_state_wanted() -> None:
    with api_server(["PENDING"]) as server, pytest.raises(AssertionError, match="task 6f1c to reach SUCCESS"):
        TaskApi(server.url, TOKEN).wait_for_success("6f1c", timeout=0.2, interval=0.05)


def test_worker_names_must_have_a_pool() -> None:
    with pytest.raises(ValueError, match="not of the form <pool>@<host>"):
        pool_of_worker("celery-host")
    with pytest.raises(ValueError):
        pool_of_worker(None)


def test_client_reads_fields_the_apps_serializers_define() -> None:
    """The client's field names (id; state, worker, error, result) are the API's real ones."""
    from apps.main.api.serializers import TaskAccepted, TaskStatus

    assert {"id", "task", "queue"} <= set(TaskAccepted().fields)
    assert {"id", "task", "state", "worker", "error", "result"} <= set(TaskStatus().fields)


def test_sample_arguments_are_valid_for_the_apps_serializers() -> None:
    from apps.main.api.serializers import TASK_ARGUMENTS

    for name, serializer_class in TASK_ARGUMENTS.items():
        serializer = serializer_class(data=arguments_for(name))
        assert serializer.is_valid(), (name, serializer.errors)



def burst_server(
    states: dict[str, list[str]], *, drop_first: frozenset[str] = frozenset()
) -> tuple[AbstractContextManager[Server], list[str]]:
    """GET /api/tasks/<id>/ answers that task's next state (the last repeats); POSTs get fresh ids.

    A task in ``drop_first`` gets its first GET answered with a closed connection (a broken port-forward).
    """
    remaining = {task_id: list(sequence) for task_id, sequence in states.items()}
    dropped: set[str] = set()
    posted: list[str] = []

    def route(request: Request) -> Reply:
        if request.method == "POST":
            posted.append(json.loads(request.body)["action_id"])
            return Reply(202, {"id": f"t{len(posted)}", "task": "apps.main.tasks.process_user_action",
                               "queue": "high_priority", "status_url": "http://x/"})
        task_id = request.path.strip("/").rsplit("/", 1)[-1]
        if task_id in drop_first and task_id not in dropped:
            dropped.add(task_id)
            raise ConnectionAbortedError("port-forward dropped")
        sequence = remaining[task_id]
        state = sequence.pop(0) if len(sequence) > 1 else sequence[0]
        return Reply(200, {"id": task_id, "task": "apps.main.tasks.process_user_action", "state": state,
                           "ready": state in ("SUCCESS", "FAILURE"),
                           "result": {"action_id": task_id, "created": True} if state == "SUCCESS" else None,
                           "error": "PermanentError('bad')" if state == "FAILURE" else None,
                           "worker": "high-priority@pod-a" if state != "PENDING" else None,
                           "queue": "high_priority", "date_done": None})

    return serve(route), posted


def test_submit_many_sends_fresh_arguments_and_returns_ids_in_order() -> None:
    server_context, posted = burst_server({})
    with server_context as server:
        ids = TaskApi(server.url, TOKEN).submit_many(BURST_TASK, burst_arguments, 25, threads=4)
    assert sorted(ids, key=lambda i: int(i[1:])) == [f"t{n}" for n in range(1, 26)]
    assert len(set(posted)) == 25  # a fresh action_id per task: idempotent per id, so no two may share one
    assert {r.path for r in server.requests} == {f"/api/tasks/{BURST_TASK}/"}


def test_wait_all_success_polls_only_unfinished_tasks_until_all_succeed() -> None:
    states = {"a": ["SUCCESS"], "b": ["PENDING", "STARTED", "SUCCESS"], "c": ["PENDING", "PENDING", "SUCCESS"]}
    lines: list[str] = []
    server_context, _ = burst_server(states, drop_first=frozenset({"c"}))
    with server_context as server:
        done = TaskApi(server.url, TOKEN).wait_all_success(
            ["a", "b", "c"], timeout=10, interval=0.01, progress=lines.append, progress_every=0
        )
    assert set(done) == {"a", "b", "c"} and all(body["state"] == "SUCCESS" for body in done.values())
    gets = [r.path for r in server.requests]
    assert gets.count("/api/tasks/a/") == 1  # once SUCCESS, never read again
    assert gets.count("/api/tasks/c/") == 4  # the dropped answer is read again next round
    assert "not yet:" in lines[0] and "unreadable (ConnectionError)" in lines[0]
    assert lines[-1].endswith("3/3 tasks SUCCESS")


def test_wait_all_success_fails_naming_how_many_failed() -> None:
    states = {"a": ["SUCCESS"], "b": ["STARTED", "FAILURE"], "c": ["PENDING"]}
    server_context, _ = burst_server(states)
    with server_context as server, pytest.raises(TaskFailed) as info:
        TaskApi(server.url, TOKEN).wait_all_success(["a", "b", "c"], timeout=10, interval=0.01, progress=print)
    message = str(info.value)
    assert message.startswith("1 of 3 tasks failed (1 SUCCESS, not done: ")
    assert "PENDING 1" in message and "FAILURE 1" in message
    assert "b (apps.main.tasks.process_user_action) FAILURE: PermanentError('bad')" in message


def test_wait_all_success_timeout_says_how_many_are_missing_and_where() -> None:
    states = {"a": ["SUCCESS"], "b": ["STARTED"], "c": ["PENDING"], "d": ["PENDING"]}
    server_context, _ = burst_server(states)
    with server_context as server, pytest.raises(AssertionError) as info:
        TaskApi(server.url, TOKEN).wait_all_success(
            ["a", "b", "c", "d"], timeout=0.2, interval=0.05, progress=print, diagnostics=lambda: "POD DUMP"
        )
    message = str(info.value)
    assert message.startswith("3 of 4 tasks not SUCCESS after 0.2s (last seen: PENDING 2, STARTED 1; e.g. b, c, d)")
    assert "waiting for all 4 tasks to reach SUCCESS" in message and message.endswith("\nPOD DUMP")


def test_burst_is_a_real_high_priority_task_with_fresh_valid_arguments() -> None:
    from apps.main.api.serializers import TASK_ARGUMENTS

    assert queue_for(BURST_TASK) == HIGH_PRIORITY
    first, second = burst_arguments(), burst_arguments()
    assert first["action_id"] != second["action_id"]
    serializer = TASK_ARGUMENTS[BURST_TASK](data=first)
    assert serializer.is_valid(), serializer.errors


def test_burst_size_defaults_and_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BURST_ENV, raising=False)
    assert burst_size() == BURST_SIZE
    monkeypatch.setenv(BURST_ENV, " 3000 ")
    assert burst_size() == 3000
    for bad in ("0", "-5", "many", "1.5"):
        monkeypatch.setenv(BURST_ENV, bad)
        with pytest.raises(ValueError, match=f"{BURST_ENV}=.* is not a positive number of tasks"):
            burst_size()
    assert drain_budget(1000) > drain_budget(100) > 300
