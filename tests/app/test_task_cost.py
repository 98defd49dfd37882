"""What a task costs the database: one statement per write, connections kept across tasks, a dropped
connection replaced before a task instead of failing it (issue 11; figures in docs/benchmarks.md)."""

from __future__ import annotations

import uuid

import pytest
from celery import states
from django.db import OperationalError, connection, connections
from django.test.utils import CaptureQueriesContext
from django_celery_results.models import TaskResult

from apps.main import task_timing
from apps.main.db_connections import recycle_connections
from apps.main.models import UserAction
from apps.main.queues import task_name
from apps.main.single_statement import insert_if_absent, upsert
from embedded.network import wait_until
from portfolio_site.celery import app
from tests.support.timeouts import scaled

pytestmark = pytest.mark.django_db(transaction=True)


def action(action_id: str) -> UserAction:
    from django.utils import timezone

    return UserAction(action_id=action_id, user_id="u", action="login", payload={"n": 1}, occurred_at=timezone.now())


def test_insert_if_absent_is_one_statement_and_says_whether_it_inserted() -> None:
    with CaptureQueriesContext(connection) as first:
        assert insert_if_absent(action("once")) is True
    with CaptureQueriesContext(connection) as second:
        assert insert_if_absent(action("once")) is False
    assert (len(first), len(second)) == (1, 1)
    assert "ON CONFLICT DO NOTHING" in first[0]["sql"]
    assert UserAction.objects.get(action_id="once").payload == {"n": 1}


def test_upsert_updates_the_listed_columns_and_keeps_the_others() -> None:
    upsert(TaskResult(task_id="t-1", status=states.STARTED), unique="task_id", update=["status", "date_done"])
    created = TaskResult.objects.get(task_id="t-1").date_created
    with CaptureQueriesContext(connection) as queries:
        upsert(TaskResult(task_id="t-1", status=states.SUCCESS, result="42"), unique="task_id",
               update=["status", "date_done"])
    assert len(queries) == 1
    row = TaskResult.objects.get(task_id="t-1")
    assert (row.status, row.result, row.date_created) == (states.SUCCESS, None, created)  # result not listed


def test_storing_a_state_is_one_statement_and_keeps_the_start_time() -> None:
    task_id = str(uuid.uuid4())
    backend = app.backend
    with CaptureQueriesContext(connection) as started:
        backend.store_result(task_id, {"pid": 1}, states.STARTED)
    began = TaskResult.objects.get(task_id=task_id).date_started
    assert began is not None and len(started) == 1
    with CaptureQueriesContext(connection) as done:
        backend.store_result(task_id, {"ok": True}, states.SUCCESS)  # stored outside a child: start unknown
    row = TaskResult.objects.get(task_id=task_id)
    assert len(done) == 1
    assert (row.status, row.date_started) == (states.SUCCESS, began)
    assert backend.get_task_meta(task_id)["result"] == {"ok": True}


def test_a_late_non_final_state_never_replaces_a_final_one() -> None:
    task_id = str(uuid.uuid4())
    app.backend.store_result(task_id, 42, states.SUCCESS)
    with CaptureQueriesContext(connection) as late:
        app.backend.store_result(task_id, None, states.RETRY)  # its store waited out an outage
    assert len(late) == 1
    assert TaskResult.objects.get(task_id=task_id).status == states.SUCCESS
    app.backend.store_result(task_id, None, states.FAILURE)  # a final state still replaces a final one
    assert TaskResult.objects.get(task_id=task_id).status == states.FAILURE
    other = str(uuid.uuid4())
    app.backend.store_result(other, None, states.RETRY)
    app.backend.store_result(other, None, states.STARTED)
    assert TaskResult.objects.get(task_id=other).status == states.STARTED


def test_a_final_state_carries_the_start_the_child_noted() -> None:
    task_id = str(uuid.uuid4())
    task_timing._start(task_id=task_id)  # what task_prerun does in the pool child
    try:
        app.backend.store_result(task_id, 1, states.SUCCESS)
        noted = task_timing.started_at(task_id)
    finally:
        task_timing._started.pop(task_id, None)
    assert TaskResult.objects.get(task_id=task_id).date_started == noted


def terminate_backend_of(alias: str = "default") -> None:
    """Kill the server side of the connection, as a PostgreSQL restart or an idle timeout would."""
    pid = connections[alias].connection.info.backend_pid
    with connections.create_connection(alias).cursor() as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
        other.connection.close()


def test_a_connection_dropped_between_tasks_is_replaced_before_the_next_task() -> None:
    connection.ensure_connection()
    terminate_backend_of()
    recycle_connections(task=None)  # task_prerun of the next task
    assert UserAction.objects.count() == 0  # no error: the health check found it dead and reconnected


def test_without_the_check_the_dropped_connection_would_fail_the_task() -> None:
    # The control for the test above: the hook, not luck, keeps the task alive.
    connection.ensure_connection()
    connection.health_check_done = True  # what a connection looks like after its first use in a task
    terminate_backend_of()
    with pytest.raises(OperationalError):
        UserAction.objects.count()
    connection.close()


class DatabaseStats:
    """``pg_stat_database`` of the test database, read on one connection of its own (so reading it opens no
    session; each read is one commit of its own, subtracted)."""

    def __init__(self) -> None:
        self.connection = connections.create_connection("default")
        self.reads = 0

    def _one(self, sql: str, params: list | None = None) -> tuple:
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            self.reads += 1
            return cursor.fetchone()

    def read(self) -> tuple[int, int]:
        sessions, commits = self._one(
            "SELECT sessions, xact_commit FROM pg_stat_database WHERE datname = current_database()")
        return int(sessions), int(commits) - self.reads

    def succeeded(self, ids: list[str]) -> int:
        return self._one("SELECT count(*) FROM django_celery_results_taskresult WHERE task_id = ANY(%s) "
                         "AND status = 'SUCCESS'", [ids])[0]

    def settled(self) -> tuple[int, int]:
        """The counters once they stopped moving: backends flush theirs when they exit, go idle (within
        about 10 s) or are asked to; ours are flushed on each read."""
        seen: list[tuple[int, int]] = []

        def still() -> bool:
            seen.append(self.read())
            return len(seen) >= 3 and seen[-1] == seen[-3]

        wait_until(still, timeout=scaled(60), what="pg_stat_database to settle", interval=1.0)
        return seen[-1]

    def close(self) -> None:
        self.connection.close()


@pytest.mark.live
def test_a_worker_keeps_its_connections_and_commits_twice_per_task(celery_worker_factory) -> None:
    tasks = 200
    queue = f"cost-{uuid.uuid4().hex[:6]}"
    celery_worker_factory([queue], concurrency=2)
    stats = DatabaseStats()
    try:
        with connection.cursor() as cursor:  # what this test process did before (the test database's set-up)
            cursor.execute("SELECT pg_stat_force_next_flush()")
        sessions_before, commits_before = stats.settled()
        run = uuid.uuid4().hex[:8]
        results = [app.send_task(task_name("process_user_action"), queue=queue,
                                 kwargs={"action_id": f"{run}-{i}", "user_id": "u", "action": "cost"})
                   for i in range(tasks)]
        ids = [r.id for r in results]
        wait_until(lambda: stats.succeeded(ids) == tasks, timeout=scaled(120), what=f"{tasks} tasks")
        celery_worker_factory.supervisor.stop_all()  # its backends exit and flush their counters
        sessions, commits = stats.settled()
    finally:
        stats.close()
    assert UserAction.objects.filter(action_id__startswith=run).count() == tasks
    # Was: a new session per task (Celery's fixup closed it) and about 8 commits per task.
    assert sessions - sessions_before <= 12, f"{sessions - sessions_before} sessions for {tasks} tasks"
    # Per task: the reused connection's health check (SELECT 1), the action INSERT, the result upsert;
    # plus what the worker does once (start-up, shutdown) and this test's own queries.
    per_task = (commits - commits_before) / tasks
    assert per_task <= 3.2, f"{per_task:.2f} commits per task"
