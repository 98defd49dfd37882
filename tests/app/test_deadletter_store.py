"""The dead-letter store never loses a letter: content PostgreSQL cannot hold is sanitised, and a letter
the database cannot take (it is down) is spooled in Redis or a file and stored later, exactly once.
On real servers: the session's PostgreSQL and Valkey, a PostgreSQL of its own to stop, real workers."""

from __future__ import annotations

import decimal
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis as redis_lib

from apps.main import deadletter
from apps.main.deadletter_spool import FLUSH_INTERVAL_SECONDS, PROCESSING_KEY, SPOOL_KEY, UNSTORABLE_KEY
from apps.main.models import DeadLetter
from apps.main.queues import task_name
from embedded import EmbeddedPostgres
from embedded.network import free_port, wait_until
from portfolio_site.celery import app
from tests.app.procs import manage, redis_db_url
from tests.support.timeouts import scaled

pytestmark = pytest.mark.django_db(transaction=True)

NUL = "\x00"
SURROGATE = "\ud800"


@pytest.fixture
def spool(redis_client: redis_lib.Redis) -> Iterator[redis_lib.Redis]:
    """The session Redis with an empty spool, emptied again afterwards."""
    keys = (SPOOL_KEY, PROCESSING_KEY, UNSTORABLE_KEY)
    redis_client.delete(*keys)
    yield redis_client
    redis_client.delete(*keys)


#: A Redis database of the session server that no worker uses: the session's workers flush the spool
#: on database 0 every 30 s, and must not store a letter that a test means to flush itself.
ISOLATED_REDIS_DB = 9


@pytest.fixture
def isolated_spool(redis_url: str) -> Iterator[tuple[redis_lib.Redis, str]]:
    """An empty spool on a Redis database of its own, and its URL for the test's processes."""
    url = redis_db_url(redis_url, ISOLATED_REDIS_DB)
    client = redis_lib.Redis.from_url(url)
    keys = (SPOOL_KEY, PROCESSING_KEY, UNSTORABLE_KEY)
    client.delete(*keys)
    yield client, url
    client.delete(*keys)


@pytest.fixture
def announced() -> Iterator[list[DeadLetter]]:
    """Letters announced with ``dead_lettered`` (what the metrics count) during the test."""
    letters: list[DeadLetter] = []

    def receive(letter: DeadLetter, **_: Any) -> None:
        letters.append(letter)

    deadletter.dead_lettered.connect(receive, dispatch_uid="test_deadletter_store")
    yield letters
    deadletter.dead_lettered.disconnect(dispatch_uid="test_deadletter_store")


def record(**overrides: Any) -> DeadLetter:
    """``deadletter.record`` with plain defaults; the letter must have been stored."""
    fields = {"task_id": f"t-{uuid.uuid4().hex}", "task_name": task_name("process_user_action"), "args": [],
              "kwargs": {}, "queue": "default", "reason": "permanent_error", "exception": "ValueError: bad"}
    letter = deadletter.record(**{**fields, **overrides})
    assert letter is not None, "the database is up: the letter must be stored, not spooled"
    return DeadLetter.objects.get(pk=letter.pk)


def nested_list(levels: int) -> list:
    root: list = []
    inner = root
    for _ in range(levels - 1):
        inner.append([])
        inner = inner[0]
    return root


def nesting(value: Any) -> int:
    """How many levels of containers ``value`` has (iteratively: it may be deep)."""
    depth, level = 0, [value]
    while level := [v for v in level if isinstance(v, (list, dict))]:
        depth += 1
        level = [c for v in level for c in (v.values() if isinstance(v, dict) else v)]
    return depth


# --- (a) whatever a letter carries, it is stored --------------------------------------------------------


def test_a_clean_letter_is_stored_as_it_came(announced: list[DeadLetter]) -> None:
    letter = record(args=[1, "two", {"three": [3.0, None, True]}], kwargs={"k": "v"}, traceback="Traceback ...")
    assert (letter.args, letter.kwargs, letter.sanitised, letter.spool_id) == (
        [1, "two", {"three": [3.0, None, True]}], {"k": "v"}, False, None)
    assert [a.pk for a in announced] == [letter.pk]


def test_nul_characters_are_stored_as_visible_escapes() -> None:
    letter = record(
        task_name=f"apps.main.tasks.x{NUL}", queue=f"q{NUL}", args=[f"a{NUL}b", [NUL]],
        kwargs={f"key{NUL}": f"value{NUL}", "payload": {"k": f"a{NUL}b"}},
        exception=f"DataError: NUL {NUL} here", traceback=f"Traceback{NUL}", raw_body=f"raw{NUL}body",
    )
    assert letter.sanitised
    assert letter.args == ["a\\u0000b", ["\\u0000"]]
    assert letter.kwargs == {"key\\u0000": "value\\u0000", "payload": {"k": "a\\u0000b"}}
    assert (letter.task_name, letter.queue) == ("apps.main.tasks.x\\u0000", "q\\u0000")
    assert letter.exception == "DataError: NUL \\u0000 here"
    assert (letter.traceback, letter.raw_body) == ("Traceback\\u0000", "raw\\u0000body")


def test_lone_surrogates_are_stored_as_backslash_escapes() -> None:
    letter = record(args=[f"x{SURROGATE}y"], kwargs={"\udfff": f"{SURROGATE}"}, exception=f"E: {SURROGATE}",
                    traceback=f"tb {SURROGATE}", raw_body=SURROGATE)
    assert letter.sanitised
    assert letter.args == ["x\\ud800y"] and letter.kwargs == {"\\udfff": "\\ud800"}
    assert (letter.exception, letter.traceback, letter.raw_body) == ("E: \\ud800", "tb \\ud800", "\\ud800")


def test_values_that_are_not_json_are_stored_as_their_repr() -> None:
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    when = datetime(2024, 5, 1, tzinfo=UTC)
    letter = record(
        args=(decimal.Decimal("1.5"), when, {3}, b"\x00\xff", Unprintable(), float("nan"), float("-inf"), 10**2000),
        kwargs={(1, 2): "tuple key", 7: "int key", None: "none key"},
        exception=ValueError(f"not a str{NUL}"), attempts="3",
    )
    assert letter.sanitised and letter.attempts == 3
    assert letter.args[:4] == ["Decimal('1.5')", repr(when), [3], repr(b"\x00\xff")]
    assert letter.args[4].startswith("<unrepresentable") and letter.args[5:7] == ["NaN", "-Infinity"]
    assert letter.args[7] == "…[integer of 6644 bits]"
    assert letter.kwargs == {"(1, 2)": "tuple key", "7": "int key", "null": "none key"}
    assert letter.exception == "not a str\\u0000"


def test_a_ten_megabyte_string_is_cut_with_a_marker() -> None:
    huge = "x" * 10_000_000
    letter = record(args=[huge], kwargs={"huge": huge, "list": list(range(2_000_000))}, exception=huge,
                    traceback=huge, raw_body=huge)
    assert letter.sanitised
    cut = f"…[truncated {10_000_000 - deadletter.MAX_STRING_CHARS} chars]"
    assert letter.args == ["x" * deadletter.MAX_STRING_CHARS + cut]
    assert letter.kwargs["huge"].endswith(cut)
    assert letter.kwargs["list"][-1].startswith("…[") and letter.kwargs["list"][-1].endswith(" more items]")
    assert len(json.dumps(letter.kwargs)) < 1.1 * deadletter.MAX_ARGUMENTS_CHARS
    text_cut = f"…[truncated {10_000_000 - deadletter.MAX_TEXT_CHARS} chars]"
    for text in (letter.exception, letter.traceback, letter.raw_body):
        assert text == "x" * deadletter.MAX_TEXT_CHARS + text_cut


def test_escapes_never_push_a_column_over_its_length() -> None:
    letter = record(task_id=NUL * 300, task_name=SURROGATE * 300)
    assert len(letter.task_id) <= 255 and letter.task_id.startswith("\\u0000") and "…[truncated" in letter.task_id
    assert len(letter.task_name) <= 255 and letter.task_name.startswith("\\ud800")


def test_a_50000_deep_list_is_cut_at_the_depth_limit() -> None:
    deep = nested_list(50_000)
    letter = record(args=[deep], kwargs={"deep": {"d": deep}})
    assert letter.sanitised
    marker = deadletter.TOO_DEEP.format(limit=deadletter.MAX_ARGUMENT_DEPTH)
    for stored_value in (letter.args, letter.kwargs):
        assert nesting(stored_value) == deadletter.MAX_ARGUMENT_DEPTH
        assert marker in json.dumps(stored_value, ensure_ascii=False)


def test_the_health_check_task_flushes_the_spool(spool: redis_lib.Redis) -> None:
    from apps.main.tasks import health_check

    letter = spooled_letter()
    spool.rpush(SPOOL_KEY, json.dumps(letter))
    health_check.apply().get()
    assert DeadLetter.objects.filter(spool_id=letter["spool_id"]).count() == 1
    assert spool.llen(SPOOL_KEY) == 0


# --- (b) a real worker, a task PostgreSQL refuses the arguments of ------------------------------------


@pytest.mark.live
def test_a_worker_dead_letters_a_task_whose_payload_postgres_refuses(celery_worker_factory) -> None:
    queue = f"dlq-nul-{uuid.uuid4().hex[:6]}"
    celery_worker_factory([queue], concurrency=1)
    # The result backend cannot store this task's kwargs either: wait for the letter, not the result.
    task_id = app.send_task(
        task_name("process_user_action"), queue=queue,
        kwargs={"action_id": uuid.uuid4().hex, "user_id": "u-1", "action": "login", "payload": {"k": f"a{NUL}b"}},
    ).id
    letter = wait_until(lambda: DeadLetter.objects.filter(task_id=task_id).first(), timeout=scaled(60),
                        what=f"a dead letter for {task_id}", interval=0.2)
    assert (letter.reason, letter.queue, letter.sanitised) == ("permanent_error", queue, True)
    assert letter.kwargs["payload"] == {"k": "a\\u0000b"} and "DataError" in letter.exception
    assert "Traceback" in letter.traceback


# --- (c) the database is down: spooled in Redis, stored exactly once when it is back ------------------

RECORD = """
from apps.main import deadletter
letter = deadletter.record(task_id={task_id!r}, task_name="apps.main.tasks.process_user_action",
                           args=["a\\x00b"], kwargs={{"payload": {{"k": "a\\x00b"}}}}, queue="default",
                           reason="permanent_error", exception="DataError: NUL", traceback="Traceback ...")
print("RECORDED", letter)
"""


@pytest.fixture
def own_postgres(tmp_path: Path, live_env: dict[str, str], isolated_spool: tuple[redis_lib.Redis, str],
                 ) -> Iterator[tuple[EmbeddedPostgres, dict[str, str]]]:
    """A PostgreSQL server of this test's own (to stop), migrated; and the environment of its processes,
    whose spool is the isolated one."""
    server = EmbeddedPostgres(tmp_path / "postgres").start()
    try:
        env = {**live_env, "DATABASE_URL": server.url, "APP_DATA_DIR": str(tmp_path / "data"),
               "REDIS_URL": isolated_spool[1]}
        migrated = manage("migrate", "--noinput", env=env)
        assert migrated.returncode == 0, migrated.stderr
        yield server, env
    finally:
        server.stop()


def rows_of(server: EmbeddedPostgres, task_id: str) -> list[tuple]:
    with psycopg.connect(server.url) as conn:
        return conn.execute("SELECT args, kwargs, sanitised, spool_id FROM main_deadletter WHERE task_id = %s",
                            (task_id,)).fetchall()


def test_a_letter_recorded_while_the_database_is_down_is_spooled_then_stored_once(
    own_postgres: tuple[EmbeddedPostgres, dict[str, str]], isolated_spool: tuple[redis_lib.Redis, str],
) -> None:
    server, env = own_postgres
    spool = isolated_spool[0]
    task_id = f"down-{uuid.uuid4().hex}"
    server.stop()
    recorded = manage("shell", "-c", RECORD.format(task_id=task_id), env=env)
    assert "RECORDED None" in recorded.stdout, recorded.stdout + recorded.stderr
    assert spool.llen(SPOOL_KEY) == 1
    spooled = spool.lindex(SPOOL_KEY, 0)
    assert json.loads(spooled)["task_id"] == task_id

    server.start()
    flushed = manage("flush_dead_letters", env=env)
    assert flushed.returncode == 0, flushed.stdout + flushed.stderr
    assert "stored 1," in flushed.stdout
    [(args, kwargs, sanitised, spool_id)] = rows_of(server, task_id)
    assert (args, kwargs, sanitised) == (["a\\u0000b"], {"payload": {"k": "a\\u0000b"}}, True)
    assert str(spool_id).replace("-", "") == json.loads(spooled)["spool_id"]
    assert spool.llen(SPOOL_KEY) == spool.llen(PROCESSING_KEY) == 0

    # A flush that crashed after storing, before taking the letter off the list, left it there: the next
    # flush finds it stored already.
    spool.rpush(PROCESSING_KEY, spooled)
    again = manage("flush_dead_letters", env=env)
    assert "stored 0, already stored 1" in again.stdout, again.stdout + again.stderr
    assert len(rows_of(server, task_id)) == 1
    assert spool.llen(SPOOL_KEY) == spool.llen(PROCESSING_KEY) == 0
    assert "stored 0, already stored 0" in manage("flush_dead_letters", env=env).stdout


def test_a_flush_while_the_database_is_still_down_keeps_the_letters(
    own_postgres: tuple[EmbeddedPostgres, dict[str, str]], isolated_spool: tuple[redis_lib.Redis, str],
) -> None:
    server, env = own_postgres
    spool = isolated_spool[0]
    server.stop()
    for _ in range(2):
        spool.rpush(SPOOL_KEY, json.dumps(spooled_letter()))
    flushed = manage("flush_dead_letters", env=env)
    assert flushed.returncode == 1 and "database did not answer" in flushed.stderr, flushed.stdout + flushed.stderr
    assert (spool.llen(SPOOL_KEY), spool.llen(PROCESSING_KEY)) == (2, 0)


# --- (d) database and Redis down: the fallback file, and the log -------------------------------------


@pytest.mark.parametrize("redis", ["down", "not configured"])
def test_with_the_database_down_and_no_redis_the_letter_goes_to_the_file_and_the_log(
    redis: str, tmp_path: Path, live_env: dict[str, str], spool: redis_lib.Redis, settings,
    announced: list[DeadLetter],
) -> None:
    data_dir = tmp_path / "data"
    env = {**live_env, "APP_DATA_DIR": str(data_dir),
           "DATABASE_URL": f"postgres://postgres:nothing@127.0.0.1:{free_port()}/gone",
           "REDIS_URL": f"redis://:nothing@127.0.0.1:{free_port()}/0"}
    if redis == "not configured":
        del env["REDIS_URL"]  # the development fallback: broker and cache without Redis
    task_id = f"all-down-{uuid.uuid4().hex}"
    recorded = manage("shell", "-c", RECORD.format(task_id=task_id), env=env)
    assert "RECORDED None" in recorded.stdout, recorded.stdout + recorded.stderr
    [spooled] = [json.loads(line) for line in (data_dir / "deadletter-spool.jsonl").read_text().splitlines()]
    assert spooled["task_id"] == task_id and spooled["args"] == ["a\\u0000b"]
    logged = [json.loads(line) for line in recorded.stdout.splitlines() if line.startswith("{")]
    assert any(entry.get("dead_letter", {}).get("task_id") == task_id for entry in logged), recorded.stdout

    # Once the database answers, a flush on that host stores it (here: into the session's database).
    settings.DATA_DIR = data_dir
    result = deadletter.flush_spool()
    assert (result.stored, result.interrupted) == (1, [])
    letter = DeadLetter.objects.get(task_id=task_id)
    assert letter.kwargs == {"payload": {"k": "a\\u0000b"}} and [a.pk for a in announced] == [letter.pk]
    assert not list(data_dir.glob("deadletter-spool*.jsonl"))
    assert deadletter.flush_spool().handled == 0


# --- (e) a worker flushes the spool by itself -----------------------------------------------------------


def spooled_letter() -> dict[str, Any]:
    """A letter as the spool holds it, with a NUL a flush must escape."""
    return {"spool_id": uuid.uuid4().hex, "task_id": f"spooled-{uuid.uuid4().hex}",
            "task_name": task_name("send_notification"), "args": [], "kwargs": {"message": f"hi{NUL}"},
            "queue": "high_priority", "reason": "retries_exhausted", "exception": "OperationalError: db gone",
            "traceback": "", "attempts": 4, "raw_body": "", "first_attempt_at": None,
            "failed_at": datetime.now(UTC).isoformat(), "sanitised": False}


def stored(letter: dict[str, Any]) -> DeadLetter | None:
    return DeadLetter.objects.filter(spool_id=letter["spool_id"]).first()


@pytest.mark.live
def test_a_worker_stores_spooled_letters_at_start_and_then_periodically(
    celery_worker_factory, spool: redis_lib.Redis,
) -> None:
    at_start = spooled_letter()
    spool.rpush(SPOOL_KEY, json.dumps(at_start))
    celery_worker_factory([f"dlq-flush-{uuid.uuid4().hex[:6]}"], concurrency=1)
    first = wait_until(lambda: stored(at_start), timeout=scaled(60), what="the spooled letter stored at start",
                       interval=0.2)
    assert first.kwargs == {"message": "hi\\u0000"} and first.sanitised

    later = spooled_letter()
    spool.rpush(SPOOL_KEY, json.dumps(later))
    wait_until(lambda: stored(later), timeout=FLUSH_INTERVAL_SECONDS + 30, what="the periodic flush", interval=0.5)
    assert spool.llen(SPOOL_KEY) == spool.llen(PROCESSING_KEY) == 0
    assert DeadLetter.objects.filter(task_id__in=[at_start["task_id"], later["task_id"]]).count() == 2
