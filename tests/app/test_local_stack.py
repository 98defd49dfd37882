"""``start_celery_services.py`` (``make up``) as a developer runs it: the whole stack comes up, the
verification checklist and ``manage.py test_celery`` pass against it, each worker serves metrics on a
port of its own, the landing page links every page and the banner's admin login logs in, a killed
embedded server is started again, and SIGTERM or SIGINT stops it with no process left behind, even when
the reader of its stdout is gone. State and logs go to temporary directories (LOCAL_STACK_DIR, LOG_DIR),
never to a developer's .local/ or logs/."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import psutil
import pytest
import redis
import start_celery_services

from apps.main.management.commands.ensure_local_admin import LOCAL_ADMIN_USER
from apps.main.management.commands.test_celery import sample_calls
from apps.main.queues import WORKER_POOLS
from embedded import EmbeddedPostgres, EmbeddedValkey, stack_env
from embedded.network import free_port, wait_until
from embedded.supervisor import python_env
from embedded.watchdog import ServerLost, Watchdog
from portfolio_site import environment as env_names
from tests.app.procs import APP_DIR, LineReader, manage, redis_db_url, scratch_database
from tests.support.timeouts import scaled

#: The stack's own wait for its workers, web and Flower; the test waits longer, so the stack's own
#: report of what is still starting is what a slow machine shows.
READY_TIMEOUT = scaled(300)
#: Plus the embedded servers' start (initdb on the first run) and the migrations.
UP_TIMEOUT = READY_TIMEOUT + scaled(120)
STOP_TIMEOUT = scaled(120)
TASK_TIMEOUT = scaled(60)
#: An embedded server is restarted within a second of its death; this is the wait for the line.
RESTART_TIMEOUT = scaled(60)

pytestmark = [pytest.mark.live, pytest.mark.timeout(UP_TIMEOUT + 6 * STOP_TIMEOUT)]

#: The stack's own Redis database on the session server: the test workers listen on database 0.
STACK_REDIS_DB = 6
STOPPED_LINE = "[stack] stopped; no process left running"


@dataclass
class Stack:
    process: subprocess.Popen
    output: LineReader
    env: dict[str, str]
    web_port: int
    flower_port: int
    children: list[psutil.Process]


def stack_env_for(tmp_path: Path, **backends: str) -> dict[str, str]:
    env = python_env()
    for name in (env_names.REDIS_URL, env_names.DATABASE_URL, env_names.BROKER_URL, env_names.BROKER_KEY_PREFIX):
        env.pop(name, None)
    env.update({
        env_names.SETTINGS_MODULE: "portfolio_site.settings.dev",
        env_names.DATA_DIR: str(tmp_path / "data"),
        env_names.LOCAL_STACK_DIR: str(tmp_path / "local"),
        env_names.LOG_DIR: str(tmp_path / "logs"),
        env_names.API_TOKEN: "stack-token",
        env_names.FLOWER_BASIC_AUTH: "admin:stack-pass",
        **backends,
    })
    env.pop(env_names.METRICS_PORT, None)  # the default: the stack gives each worker a port of its own
    return env


def stack_argv(web_port: int, flower_port: int) -> list[str]:
    return [sys.executable, "start_celery_services.py", "--web-port", str(web_port), "--flower-port",
            str(flower_port), "--ready-timeout", str(READY_TIMEOUT)]


def start_stack(env: dict[str, str]) -> Stack:
    web_port, flower_port = free_port(), free_port()
    # A process group of its own, as a shell gives a pipeline: a terminal's Ctrl-C is os.killpg on it.
    process = subprocess.Popen(stack_argv(web_port, flower_port), cwd=APP_DIR, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, process_group=0)
    output = LineReader(process.stdout)
    stack = Stack(process, output, env, web_port, flower_port, [])
    try:
        output.wait_for_line("[stack] the stack is up:", timeout=UP_TIMEOUT)
        output.wait_for_line("Ctrl-C stops everything.", timeout=scaled(10))
    except BaseException:
        stop_stack(stack, signal.SIGTERM)
        raise
    stack.children = descendants(process.pid)
    return stack


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def survivors(processes: list[psutil.Process]) -> list[str]:
    alive = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            continue
    return alive


def stop_stack(stack: Stack, sig: int) -> int | None:
    """Send ``sig``; returns the exit code, or None if the stack did not stop in time (then it is killed)."""
    if stack.process.poll() is None:
        stack.process.send_signal(sig)
    try:
        code = stack.process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        code = None
    if code is None:  # clean up what this test started before failing
        stack.process.kill()
        stack.process.wait(scaled(10))
    kill_survivors(stack.children)
    stack.output.join(scaled(10))
    return code


def kill_survivors(processes: list[psutil.Process]) -> None:
    """Clean up what this test started before failing."""
    for proc in processes:
        if survivors([proc]):
            proc.kill()


@pytest.fixture
def stack_redis(redis_url: str) -> Iterator[str]:
    url = redis_db_url(redis_url, STACK_REDIS_DB)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


def assert_stopped_cleanly(stack: Stack, code: int | None) -> None:
    assert code == 0, f"stack exit code {code}; output:\n{stack.output.text()[-3000:]}"
    assert stack.output.lines[-1] == STOPPED_LINE
    assert survivors(stack.children) == []
    assert not (Path(stack.env[env_names.LOCAL_STACK_DIR]) / "stack.env").exists()


def banner_metrics_urls(output: str) -> dict[str, str]:
    """node -> metrics URL, from the banner's worker lines."""
    found = re.findall(r"^\[stack\]\s+worker\s+(\S+)\s.*\smetrics (http://\S+)$", output, re.MULTILINE)
    return dict(found)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain"), response.headers["Content-Type"]
        return response.read().decode()


def assert_each_worker_serves_its_own_metrics(stack: Stack) -> None:
    urls = banner_metrics_urls(stack.output.text())
    host = socket.gethostname()
    assert set(urls) == {f"{name}@{host}" for name in WORKER_POOLS}, stack.output.text()
    assert len({urlsplit(url).port for url in urls.values()}) == len(WORKER_POOLS), urls
    for name, pool in WORKER_POOLS.items():
        text = wait_until(lambda url=urls[f"{name}@{host}"]: scrape(url), timeout=scaled(30),
                          what=f"the metrics of worker {name}")
        assert "celery_worker_up" in text, text[:2000]
        # The counters are created for the queues the worker consumes: this port is this worker's.
        served = set(re.findall(r'^celery_task_received_total\{.*queue_name="([^"]+)"', text, re.MULTILINE))
        assert served == set(pool.queues), (name, served)


def banner_admin_login(output: str) -> tuple[str, str, str]:
    """(admin URL, user, password) from the banner's admin line."""
    found = re.search(r"^\[stack\]\s+admin\s+(http://\S+)\s+user (\S+)\s+password (\S+)$", output, re.MULTILINE)
    assert found, output
    return found.group(1), found.group(2), found.group(3)


def admin_logs_in(admin_url: str, user: str, password: str) -> bool:
    """Django's admin login form, as a browser submits it: True if it lands on the admin index."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    login_url = f"{admin_url}login/?next=/admin/"
    with opener.open(login_url, timeout=10) as response:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.read().decode())
    assert token, "no CSRF token on the admin login page"
    form = urlencode({"csrfmiddlewaretoken": token.group(1), "username": user, "password": password,
                      "next": "/admin/"})
    with opener.open(urllib.request.Request(login_url, data=form.encode()), timeout=10) as response:
        page = response.read().decode()
        return urlsplit(response.url).path == "/admin/" and "Site administration" in page


def assert_first_hour_pages(stack: Stack) -> None:
    """The landing page links the admin, the API docs, Flower, every metrics endpoint and the readiness
    probe; the admin login the banner prints logs in, and a wrong password does not."""
    web = f"http://127.0.0.1:{stack.web_port}/"
    with urllib.request.urlopen(web, timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/html")
        links = set(re.findall(r'href="([^"]+)"', response.read().decode()))
    expected = {"/admin/", "/api/docs/", "/api/schema/", f"http://127.0.0.1:{stack.flower_port}/", "/metrics",
                "/readyz", *banner_metrics_urls(stack.output.text()).values()}
    assert expected <= links, links
    admin_url, user, password = banner_admin_login(stack.output.text())
    assert (admin_url, user) == (f"{web}admin/", LOCAL_ADMIN_USER)
    assert admin_logs_in(admin_url, user, password)
    assert not admin_logs_in(admin_url, user, password + "x")


def assert_no_port_clash_logged(log_root: Path) -> None:
    clashes = [f"{path}: {line}" for path in sorted(log_root.rglob("*.log"))
               for line in path.read_text(errors="replace").splitlines() if "Address already in use" in line]
    assert clashes == []


def assert_developer_files_untouched(tmp_path: Path) -> None:
    """A developer's own stack may be running: its .local/stack.env must not describe ours."""
    saved = os.environ.pop(env_names.LOCAL_STACK_DIR, None)
    try:
        path = stack_env.stack_env_path()
    finally:
        if saved is not None:
            os.environ[env_names.LOCAL_STACK_DIR] = saved
    assert path.parent != tmp_path / "local"
    assert not path.exists() or str(tmp_path) not in path.read_text()


def test_stack_on_given_servers_passes_the_checklist_and_stops_on_sigterm(
    tmp_path: Path, stack_redis: str, test_database_url: str,
) -> None:
    with scratch_database(test_database_url, prefix="stack_e2e") as database_url:
        env = stack_env_for(tmp_path, REDIS_URL=stack_redis, DATABASE_URL=database_url)
        stack = start_stack(env)
        try:
            written = (tmp_path / "local" / "stack.env").read_text().splitlines()
            assert f"REDIS_URL={stack_redis}" in written and f"DATABASE_URL={database_url}" in written
            assert_developer_files_untouched(tmp_path)
            expected_children = {"celery worker", "celery beat", "flower_launcher flower", "manage.py runserver"}
            cmdlines = [" ".join(p.cmdline()) for p in stack.children]
            for what in expected_children:
                assert any(what.split()[0] in c and what.split()[1] in c for c in cmdlines), (what, cmdlines)

            checklist = subprocess.run(
                [sys.executable, "test_celery_setup.py", "--flower-url", f"http://127.0.0.1:{stack.flower_port}",
                 "--timeout", str(scaled(30))],
                cwd=APP_DIR, env=env, capture_output=True, text=True, timeout=scaled(120),
            )
            assert checklist.returncode == 0, checklist.stdout + checklist.stderr
            assert checklist.stdout.rstrip().endswith("6 passed, 0 failed"), checklist.stdout
            assert "401 without credentials, 200 with them" in checklist.stdout

            assert_test_celery_passes(env, "--task=all")
            assert_each_worker_serves_its_own_metrics(stack)
            assert_first_hour_pages(stack)
        finally:
            code = stop_stack(stack, signal.SIGTERM)
        assert_stopped_cleanly(stack, code)
    logs = {path.name for path in (tmp_path / "logs" / "processes").iterdir()}
    expected = {f"worker-{name}.log" for name in WORKER_POOLS} | {"beat.log", "flower.log", "web.log", "stack.log"}
    assert logs == expected
    assert_no_port_clash_logged(tmp_path / "logs")
    assert (tmp_path / "logs" / "processes" / "stack.log").read_text().rstrip().endswith(STOPPED_LINE)


def assert_test_celery_passes(env: dict[str, str], task: str) -> None:
    tasks = manage("test_celery", task, "--timeout", str(TASK_TIMEOUT), env=env, timeout=TASK_TIMEOUT + scaled(60))
    assert tasks.returncode == 0, tasks.stdout + tasks.stderr
    count = len(sample_calls()) if task == "--task=all" else 1
    assert f"all {count} task(s) succeeded" in tasks.stdout


def embedded_server(stack: Stack, name: str) -> psutil.Process:
    """The stack's own valkey-server or postmaster (a direct child; PostgreSQL's backends are its children)."""
    found = [child for child in psutil.Process(stack.process.pid).children() if child.name() == name]
    assert len(found) == 1, found
    return found[0]


def count_lines(stack: Stack, needle: str) -> int:
    return sum(needle in line for line in list(stack.output.lines))


def kill_and_wait_for_restart(stack: Stack, name: str, label: str, port: int) -> None:
    before = count_lines(stack, f"embedded {label} exited")
    victim = embedded_server(stack, name)
    victim.kill()  # kill -9: no shutdown of its own, as the OOM killer does it
    wait_until(lambda: count_lines(stack, f"embedded {label} exited") > before, timeout=RESTART_TIMEOUT,
               what=f"the stack to notice that {label} died", interval=0.2)
    line = [line for line in stack.output.lines if f"embedded {label} exited" in line][-1]
    assert line == f"[stack] embedded {label} exited (signal 9); restarted on port {port}, data kept", line
    assert embedded_server(stack, name).pid != victim.pid


def kill_until_the_stack_gives_up(stack: Stack, name: str, label: str) -> str:
    """kill -9 the server again each time it is back; returns the line with which the stack gives up."""
    for _ in range(Watchdog.max_restarts + 2):
        before = count_lines(stack, f"embedded {label} exited")
        victim = embedded_server(stack, name)
        stack.children.append(victim)
        victim.kill()
        wait_until(lambda before=before: count_lines(stack, f"embedded {label} exited") > before,
                   timeout=RESTART_TIMEOUT, what=f"the stack to notice that {label} died", interval=0.2)
        last = [line for line in stack.output.lines if f"embedded {label} exited" in line][-1]
        if "restarted on port" not in last:
            return last
    raise AssertionError("the stack kept restarting a server that dies every second")


def test_stack_with_embedded_servers_restarts_them_when_killed_and_gives_up_in_order(tmp_path: Path) -> None:
    env = stack_env_for(tmp_path)
    stack = start_stack(env)
    code: int | None = None
    try:
        text = stack.output.text()
        assert "REDIS_URL not set: starting embedded Valkey" in text
        # A first run (empty LOCAL_STACK_DIR): says initdb runs, and creates the admin with the saved password.
        assert "DATABASE_URL not set: starting embedded PostgreSQL" in text
        assert "; first run: initdb creates it)" in text
        assert f"[stack] created the admin user {LOCAL_ADMIN_USER!r}" in text
        saved = json.loads((tmp_path / "local" / "credentials.json").read_text())
        assert banner_admin_login(text)[2] == saved[env_names.LOCAL_ADMIN_PASSWORD]
        # The terminal shows the passwords; the stack's log file names where they are kept instead.
        stack_log = (tmp_path / "logs" / "processes" / "stack.log").read_text()
        # (the environment's login wins over the saved one, as for a developer who sets it)
        flower_password = (env.get(env_names.FLOWER_BASIC_AUTH) or saved[env_names.FLOWER_BASIC_AUTH]).partition(":")[2]
        assert flower_password in text
        for secret in (saved[env_names.LOCAL_ADMIN_PASSWORD], flower_password):
            assert secret not in stack_log
        assert "password <in " in stack_log, stack_log[-2000:]
        names = {p.name() for p in stack.children}
        assert {"valkey-server", "postgres"} <= names, names
        assert (tmp_path / "local" / "postgres" / "pgdata" / "PG_VERSION").exists()
        assert_developer_files_untouched(tmp_path)
        shared = stack_env.read(tmp_path / "local" / "stack.env")

        # A command in "another terminal" with no URLs finds the stack through its stack.env.
        other = {k: v for k, v in env.items() if k not in (env_names.API_TOKEN, env_names.FLOWER_BASIC_AUTH)}
        assert_test_celery_passes(other, "--task=health")

        # kill -9 of each server: restarted on its port with its data, and every pool reconnects by itself.
        kill_and_wait_for_restart(stack, "valkey-server", "Valkey", urlsplit(shared["REDIS_URL"]).port)
        assert_test_celery_passes(other, "--task=all")
        kill_and_wait_for_restart(stack, "postgres", "PostgreSQL", urlsplit(shared["DATABASE_URL"]).port)
        assert_test_celery_passes(other, "--task=all")
        stack.children = descendants(stack.process.pid)

        # A server that keeps dying is not restarted forever: the stack stops, in order, saying why.
        reason = kill_until_the_stack_gives_up(stack, "valkey-server", "Valkey")
        code = stack.process.wait(STOP_TIMEOUT)
    finally:
        if code is None:
            stop_stack(stack, signal.SIGTERM)
        kill_survivors(stack.children)
        stack.output.join(scaled(10))
    assert reason == "[stack] embedded Valkey exited (signal 9), 4 times within 60s; stopping the stack"
    assert code == 1, stack.output.text()[-3000:]
    assert stack.output.lines[-1] == STOPPED_LINE
    assert survivors(stack.children) == []
    assert not (tmp_path / "local" / "stack.env").exists()
    assert_no_port_clash_logged(tmp_path / "logs")


def test_stack_stops_in_order_on_a_terminals_ctrl_c_after_its_stdout_reader_died(
    tmp_path: Path, stack_redis: str, test_database_url: str,
) -> None:
    """`make up 2>&1 | tee log`, then Ctrl-C: SIGINT reaches the whole process group and tee dies first."""
    with scratch_database(test_database_url, prefix="stack_pipe") as database_url:
        env = stack_env_for(tmp_path, REDIS_URL=stack_redis, DATABASE_URL=database_url)
        stack_log = tmp_path / "logs" / "processes" / "stack.log"
        shared = tmp_path / "local" / "stack.env"
        process = subprocess.Popen(stack_argv(free_port(), free_port()), cwd=APP_DIR, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, process_group=0)
        children: list[psutil.Process] = []
        try:
            def up() -> bool:
                if process.poll() is not None:
                    raise AssertionError(f"the stack exited with {process.returncode}")
                return shared.exists() and "Ctrl-C stops everything." in stack_log.read_text()

            wait_until(up, timeout=UP_TIMEOUT, what="the stack to come up", interval=0.5)
            children = descendants(process.pid)
            process.stdout.close()  # tee is gone: the stack's next write to the pipe fails with EPIPE
            os.killpg(process.pid, signal.SIGINT)
            code = process.wait(STOP_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(scaled(10))
            kill_survivors(children)
    log = stack_log.read_text().splitlines()
    assert code == 0, "\n".join(log[-30:])
    assert survivors(children) == [], "\n".join(log[-30:])
    assert not shared.exists()
    assert any(line.endswith("[stack] stopping …") for line in log), log
    assert log[-1].endswith(STOPPED_LINE), log[-30:]


# --- the embedded servers on their own -------------------------------------------------------------


def kill_hard(server: EmbeddedValkey | EmbeddedPostgres) -> None:
    assert server.process is not None
    server.process.kill()
    server.process.wait(scaled(10))


def test_embedded_valkey_restart_keeps_port_password_and_data(tmp_path: Path) -> None:
    with EmbeddedValkey(tmp_path / "valkey") as valkey:
        url = valkey.url
        client = redis.Redis.from_url(url)
        client.set("kept", "yes")
        client.execute_command("WAITAOF", 1, 0, 5000)  # on disk before the kill
        kill_hard(valkey)
        assert not valkey.is_running() and valkey.returncode == -signal.SIGKILL

        valkey.restart()
        assert valkey.is_running() and valkey.url == url
        assert redis.Redis.from_url(url).get("kept") == b"yes"


def test_embedded_postgres_restart_after_kill_keeps_data(tmp_path: Path) -> None:
    import psycopg

    with EmbeddedPostgres(tmp_path / "postgres") as postgres:
        url = postgres.url.replace("postgres://", "postgresql://", 1)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (value text)")
            conn.execute("INSERT INTO kept VALUES ('yes')")
        kill_hard(postgres)  # leaves postmaster.pid behind
        assert not postgres.is_running() and (postgres.pgdata / "postmaster.pid").exists()

        postgres.restart()
        assert postgres.is_running() and postgres.url.replace("postgres://", "postgresql://", 1) == url
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT value FROM kept").fetchall() == [("yes",)]


def test_watchdog_restarts_a_dead_server_and_gives_up_when_it_keeps_dying(tmp_path: Path) -> None:
    now = [0.0]
    with EmbeddedValkey(tmp_path / "valkey") as valkey:
        watchdog = Watchdog([valkey], max_restarts=3, window=60, clock=lambda: now[0])
        restarted = f"embedded Valkey exited (signal 9); restarted on port {valkey.port}, data kept"
        assert watchdog.check() == []
        for _ in range(3):  # deaths at t = 10, 20, 30
            now[0] += 10
            kill_hard(valkey)
            assert watchdog.check() == [restarted]
        now[0] += 41  # t = 71: the death at t = 10 has left the 60 s window, this is the third within it
        kill_hard(valkey)
        assert watchdog.check() == [restarted]
        kill_hard(valkey)  # the fourth within 60 s
        with pytest.raises(ServerLost, match=r"^embedded Valkey exited \(signal 9\), 4 times within 60s; stopping"):
            watchdog.check()
        assert not valkey.is_running()


def test_watchdog_gives_up_on_a_server_that_cannot_start_again(tmp_path: Path) -> None:
    with EmbeddedValkey(tmp_path / "valkey") as valkey:
        kill_hard(valkey)
        with socket.socket() as squatter:  # something else took the port meanwhile
            squatter.bind(("127.0.0.1", valkey.port))
            squatter.listen()
            with pytest.raises(ServerLost, match=r"^embedded Valkey exited \(signal 9\) and could not be restarted "
                                                 r"\(timed out after 2s waiting for Valkey to start again on port"):
                Watchdog([valkey], restart_timeout=2).check()


# --- no silent start ----------------------------------------------------------------------------


def test_a_long_start_up_step_says_every_few_seconds_that_it_is_still_running(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """initdb and the migrations of a first run take a while: the step's line, then a heartbeat."""
    said: list[str] = []

    def heartbeats() -> int:
        said.extend(capsys.readouterr().out.splitlines())
        return sum(line.startswith("[stack] still migrating after ") for line in said)

    with start_celery_services.step("running manage.py migrate --noinput", "migrating", every=0.05):
        wait_until(lambda: heartbeats() >= 2, timeout=scaled(10), what="two heartbeat lines")
    assert said[0] == "[stack] running manage.py migrate --noinput"
    count = heartbeats()
    assert heartbeats() == count  # the heartbeat ends with the step
