#!/usr/bin/env python
"""Start the whole local stack: Redis (embedded Valkey) and PostgreSQL unless configured, one worker
per queue, beat, Flower and the web app. Prints the URLs; Ctrl-C or SIGTERM stops everything.

    python start_celery_services.py [--web-port 8000] [--flower-port 5555] [--metrics-port 9808]
                                    [--ready-timeout 300]

REDIS_URL / DATABASE_URL from the environment are used as they are; without them the embedded
servers keep their data under .local/ (git-ignored; $LOCAL_STACK_DIR if set) between runs, and are
started again on the same port if they die. The processes log to logs/processes/ ($LOG_DIR/processes),
the stack's own lines go to stack.log there as well. Each worker serves its metrics on a port of its
own (--metrics-port or $METRICS_PORT, default 9808, and the next ones; any free port where those are taken).
On its first start the stack creates the admin user ``admin``; its password, the API token and the
Flower login are generated once and kept in .local/credentials.json, and printed in the ready banner.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from embedded import EmbeddedPostgres, EmbeddedValkey, stack_env
from embedded.console import Console
from embedded.network import Abort, free_port, wait_until
from embedded.supervisor import APP_DIR, Supervisor, python_env
from embedded.watchdog import ServerLost, Watchdog

REPO_DIR = APP_DIR.parent
# State and logs go elsewhere when LOCAL_STACK_DIR / LOG_DIR say so (the tests never touch a developer's).
LOCAL_DIR = stack_env.local_dir()
#: While the stack starts, a line every this many seconds names what has not answered yet.
PROGRESS_EVERY = 10.0

console = Console()


def say(message: str, *, recorded: str | None = None) -> None:
    console.say(message, recorded=recorded)


def credentials_path() -> Path:
    return LOCAL_DIR / "credentials.json"


def new_credentials() -> dict[str, str]:
    """What the local stack generates once: the API token, the Flower login, the admin's password and the
    payload encryption key."""
    from apps.main import payload_encryption
    from portfolio_site import environment as env_names

    return {
        env_names.API_TOKEN: secrets.token_urlsafe(24),
        env_names.FLOWER_BASIC_AUTH: f"admin:{secrets.token_urlsafe(12)}",
        env_names.LOCAL_ADMIN_PASSWORD: secrets.token_urlsafe(12),
        # Shared by every process of the stack and by commands run in another terminal (stack.env).
        env_names.PAYLOAD_ENCRYPTION_KEYS: payload_encryption.generate_key(),
    }


def local_credentials() -> dict[str, str]:
    """The local stack's credentials, generated once and kept in .local/credentials.json; one that a file
    written by an older version lacks is added, the others are never changed."""
    path = credentials_path()
    creds = json.loads(path.read_text()) if path.exists() else {}
    missing = {key: value for key, value in new_credentials().items() if key not in creds}
    if missing:
        creds.update(missing)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(creds, indent=2))
        path.chmod(0o600)
    return creds


def shown(path: Path) -> str:
    """A path as the README names it: relative to the repository when inside it."""
    return str(path.relative_to(REPO_DIR)) if path.is_relative_to(REPO_DIR) else str(path)


@contextmanager
def step(line: str, doing: str, every: float = PROGRESS_EVERY) -> Iterator[None]:
    """Say ``line`` now, then every ``every`` seconds until the block ends that it is still ``doing``:
    a long step of a first run (initdb, the migrations) is never a silent one."""
    say(line)
    started = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(every):
            say(f"still {doing} after {time.monotonic() - started:.0f}s")

    thread = threading.Thread(target=heartbeat, name=f"heartbeat: {doing}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def port_bindable(port: int) -> bool:
    """Whether a server could listen on ``port`` on all interfaces, as prometheus_client's does."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # like the server: TIME_WAIT is no clash
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def metrics_ports(names: list[str], base: int) -> dict[str, int]:
    """One metrics port per local worker: they share a host, so one port each, ``base``, ``base + 1`` …
    where free (stable for a local Prometheus), else any free port; ``base`` 0 means any free port."""
    chosen: dict[str, int] = {}
    for index, name in enumerate(names):
        port = base + index if base else 0
        if not port or port in chosen.values() or not port_bindable(port):
            port = free_port()
        chosen[name] = port
    return chosen


def exit_status_line(supervisor: Supervisor) -> str | None:
    """The failure to report if a child has exited, else None."""
    if failed := supervisor.exited():
        return supervisor.describe_failure(failed[0])
    return None


def start_backends(env: dict[str, str], backends: list[EmbeddedValkey | EmbeddedPostgres]) -> None:
    """Embedded Valkey / PostgreSQL for what the environment does not configure."""
    from portfolio_site.environment import DATABASE_URL, REDIS_URL

    if not env.get(REDIS_URL):
        valkey = EmbeddedValkey(LOCAL_DIR / "valkey")
        with step(f"REDIS_URL not set: starting embedded Valkey (data in {shown(valkey.data_dir)})", "starting Valkey"):
            backends.append(valkey.start())
        env[REDIS_URL] = valkey.url
    if not env.get(DATABASE_URL):
        postgres = EmbeddedPostgres(LOCAL_DIR / "postgres")
        first = "" if postgres.initialised else "; first run: initdb creates it"
        with step(f"DATABASE_URL not set: starting embedded PostgreSQL (data in {shown(postgres.root)}{first})",
                  "starting PostgreSQL"):
            backends.append(postgres.start())
        env[DATABASE_URL] = postgres.url


def run_step(argv: list[str], env: dict[str, str]) -> None:
    """One set-up command (migrate …) with a heartbeat; its last lines of output if it fails."""
    with step("running " + " ".join(argv[1:]), "running " + " ".join(argv[1:3])):
        done = subprocess.run(argv, cwd=APP_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    if done.returncode:
        last = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(argv[1:])} exited with {done.returncode}:\n{last}")


class AdminLogin(NamedTuple):
    user: str
    #: None when the stack cannot vouch for a password; ``problem`` then says why.
    password: str | None
    problem: str = ""


def set_up_admin(env: dict[str, str]) -> AdminLogin:
    """The local admin user (apps.main ensure_local_admin): created on the first start, else only checked."""
    from django.db import connections

    from apps.main.management.commands.ensure_local_admin import LOCAL_ADMIN_USER, AdminState, ensure_local_admin
    from portfolio_site.environment import LOCAL_ADMIN_PASSWORD

    password = env[LOCAL_ADMIN_PASSWORD]
    try:
        state = ensure_local_admin(password)
    except Exception as exc:  # e.g. settings with DEBUG off: the stack runs on, without an admin login
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        say(f"admin user not set up: {problem}")
        return AdminLogin(LOCAL_ADMIN_USER, None, f"not set up: {problem}")
    finally:
        connections.close_all()  # this process keeps no database connection while it supervises
    if state is AdminState.CREATED:
        say(f"created the admin user {LOCAL_ADMIN_USER!r} (password kept in {shown(credentials_path())})")
    if state is AdminState.MISMATCH:
        reset = f"cd app && uv run python manage.py changepassword {LOCAL_ADMIN_USER}"
        return AdminLogin(LOCAL_ADMIN_USER, None, f"the saved password no longer logs in (changed?); reset: {reset}")
    return AdminLogin(LOCAL_ADMIN_USER, password)


def keep_backends_running(watchdog: Watchdog) -> None:
    """Restart an embedded server that died, with one line saying so; ServerLost if it cannot be."""
    for line in watchdog.check():
        say(line)


class StartupProgress:
    """Tells what is still starting every PROGRESS_EVERY seconds, so a slow start is not a silent one."""

    def __init__(self, every: float = PROGRESS_EVERY) -> None:
        self.started = time.monotonic()
        self.every = every
        self.next_report = self.started + every
        self.pending: list[str] = []

    def report(self, pending: list[str]) -> None:
        self.pending = pending
        now = time.monotonic()
        if pending and now >= self.next_report:
            # On the grid (10 s, 20 s …): a slow probe does not push every later report back.
            while self.next_report <= now:
                self.next_report += self.every
            say(f"still starting after {now - self.started:.0f}s: {', '.join(pending)}")


def not_answering(nodes: dict[str, str], web_port: int, flower_port: int) -> list[str]:
    """What of the stack does not answer yet: workers without a ping reply, the web app, Flower."""
    from portfolio_site.celery import app

    pending: list[str] = []
    try:
        answered = {name for reply in app.control.ping(timeout=0.5) for name in reply}
    except Exception:  # the broker itself may not answer yet
        answered = set()
    pending += [f"worker {node} (no ping reply)" for node in nodes.values() if node not in answered]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=2):
            pass
    except Exception:
        pending.append(f"web (http://127.0.0.1:{web_port}/healthz not answering)")
    if port_free(flower_port):
        pending.append(f"Flower (port {flower_port} not listening)")
    return pending


def wait_until_up(*, nodes: dict[str, str], web_port: int, flower_port: int, timeout: float,
                  supervisor: Supervisor, watchdog: Watchdog, stopping: threading.Event) -> None:
    progress = StartupProgress()

    def ready() -> bool:
        if failure := exit_status_line(supervisor):
            raise Abort(failure)
        if stopping.is_set():
            raise KeyboardInterrupt
        try:
            keep_backends_running(watchdog)
        except ServerLost as exc:
            raise Abort(str(exc)) from exc
        pending = not_answering(nodes, web_port, flower_port)
        progress.report(pending)
        return not pending

    try:
        wait_until(ready, timeout=timeout, what="the stack to come up", interval=0.5)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; not answering: {', '.join(progress.pending)}") from None


def local_urls(web_port: int, flower_port: int, metrics: dict[str, int]) -> dict[str, str]:
    """The stack's URLs for the web process (its landing page links them) and for stack.env."""
    from portfolio_site import environment as env_names

    return {
        env_names.WEB_URL: f"http://127.0.0.1:{web_port}/",
        env_names.FLOWER_URL: f"http://127.0.0.1:{flower_port}/",
        env_names.WORKER_METRICS_URLS: ",".join(f"{name}=http://127.0.0.1:{port}/metrics"
                                                for name, port in metrics.items()),
    }


def print_banner(env: dict[str, str], admin: AdminLogin, nodes: dict[str, str], ports: dict[str, int],
                 log_dir: Path) -> None:
    from django.urls import reverse

    from apps.main.queues import WORKER_POOLS
    from portfolio_site import environment as env_names

    web = env[env_names.WEB_URL]
    flower_user, _, flower_password = env[env_names.FLOWER_BASIC_AUTH].split(",")[0].partition(":")
    admin_login = f"user {admin.user}  password {admin.password}" if admin.password else \
        f"user {admin.user}: {admin.problem}"
    rows = [
        ("web", web, "start here: links to every page below"),
        ("admin", f"{web}admin/", admin_login),
        ("API docs", f"{web}{reverse('api-docs').lstrip('/')}", f"Bearer token: {env_names.API_TOKEN} in stack.env"),
        ("flower", env[env_names.FLOWER_URL], f"user {flower_user}  password {flower_password}"),
    ]
    width = max(len(url) for _, url, _ in rows)
    # stack.log keeps no password: the terminal shows them, the log says where they are kept
    secrets_shown = [password for password in (admin.password, flower_password) if password]
    say("the stack is up:")
    for label, url, note in rows:
        kept = note
        for password in secrets_shown:
            kept = kept.replace(password, f"<in {shown(credentials_path())}>")
        say(f"  {label:<12} {url:<{width}}  {note}", recorded=f"  {label:<12} {url:<{width}}  {kept}")
    say(f"  {'credentials':<12} {shown(credentials_path())} (kept across runs), "
        f"{shown(stack_env.stack_env_path())} (while the stack runs)")
    say(f"  {'broker':<12} {env[env_names.REDIS_URL].split('@')[-1]}")
    node_width = max(len(node) for node in nodes.values())
    queues = {name: f"queues={','.join(pool.queues)} concurrency={pool.concurrency}"
              for name, pool in WORKER_POOLS.items()}
    queues_width = max(len(text) for text in queues.values())
    for name in WORKER_POOLS:
        say(f"  {'worker':<12} {nodes[name]:<{node_width}}  {queues[name]:<{queues_width}}"
            f"  metrics http://127.0.0.1:{ports[name]}/metrics")
    say(f"  {'logs':<12} {shown(log_dir)}")
    say(f"  {'next':<12} make test-celery   one task of each kind, through the workers")
    say(f"  {'':<12} make check-stack   the verification checklist")
    say("Ctrl-C stops everything.")


def supervise(supervisor: Supervisor, watchdog: Watchdog, stopping: threading.Event) -> int:
    """Until Ctrl-C / SIGTERM: 0 then; 1 as soon as a child exits or an embedded server is lost."""
    while not stopping.wait(1):
        if failure := exit_status_line(supervisor):
            say(failure)
            return 1
        try:
            keep_backends_running(watchdog)
        except ServerLost as exc:
            say(str(exc))
            return 1
    return 0


def shut_down(supervisor: Supervisor, backends: list[EmbeddedValkey | EmbeddedPostgres]) -> None:
    """Stop in order (children before the servers they use); a failing step does not skip the next."""
    say("stopping …")
    steps: list[tuple[str, Callable[[], None]]] = [
        ("removing stack.env", stack_env.remove),
        ("stopping the children", supervisor.stop_all),
        *((f"stopping embedded {backend.label}", backend.stop) for backend in reversed(backends)),
    ]
    failed = 0
    for what, step in steps:
        try:
            step()
        except Exception as exc:
            failed += 1
            say(f"{what} failed: {type(exc).__name__}: {exc}")
    say("stopped; no process left running" if not failed else f"stopped; {failed} step(s) failed, see above")


def main(argv: list[str] | None = None) -> int:
    from portfolio_site import commands
    from portfolio_site import environment as env_names
    from portfolio_site.ports import FLOWER_PORT, WEB_PORT, WORKER_METRICS_PORT

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--web-port", type=int, default=WEB_PORT)
    parser.add_argument("--flower-port", type=int, default=FLOWER_PORT)
    parser.add_argument("--metrics-port", type=int,
                        default=env_names.get_int(env_names.METRICS_PORT, WORKER_METRICS_PORT),
                        help="The first worker's metrics port, the next ones for the others; 0: any free port.")
    parser.add_argument("--ready-timeout", type=float, default=300,
                        help="Seconds to wait for workers, web and Flower to answer (default 300).")
    args = parser.parse_args(argv)

    env = python_env()
    log_dir = Path(env.get(env_names.LOG_DIR) or REPO_DIR / "logs") / "processes"
    console.log_path = log_dir / "stack.log"
    # Python ignores SIGPIPE already; said here because a dead stdout reader must never end the stop.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    for port, what in ((args.web_port, "web"), (args.flower_port, "Flower")):
        if not port_free(port):
            say(f"port {port} for {what} is in use; stop what holds it or choose another: "
                f"make up {what.upper()}_PORT=… (--{what.lower()}-port)")
            return 2

    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())

    backends: list[EmbeddedValkey | EmbeddedPostgres] = []
    watchdog = Watchdog(backends)
    env.setdefault(env_names.SETTINGS_MODULE, "portfolio_site.settings.dev")
    env.setdefault(env_names.DATA_DIR, str(LOCAL_DIR / "data"))
    for key, value in local_credentials().items():
        env.setdefault(key, value)
    supervisor = Supervisor(log_dir=log_dir, env=env)
    try:
        start_backends(env, backends)
        for argv in commands.MIGRATE:
            run_step(argv, env)

        os.environ.update(env)
        import django

        django.setup()
        admin = set_up_admin(env)
        from apps.main.queues import WORKER_POOLS

        host = socket.gethostname()
        nodes = {name: f"{name}@{host}" for name in WORKER_POOLS}
        ports = metrics_ports(list(WORKER_POOLS), args.metrics_port)
        env.update(local_urls(args.web_port, args.flower_port, ports))
        for pool_name, pool in WORKER_POOLS.items():
            supervisor.spawn(f"worker-{pool_name}", commands.worker(pool_name, pool), extra_env={
                env_names.METRICS_PORT: str(ports[pool_name]),
                # Each worker merges its own pool children's samples, as each worker pod does.
                env_names.PROMETHEUS_MULTIPROC_DIR: str(LOCAL_DIR / "metrics" / f"worker-{pool_name}"),
            })
        supervisor.spawn("beat", commands.beat())
        supervisor.spawn("flower", commands.flower(args.flower_port))
        supervisor.spawn("web", ["python", "manage.py", "runserver", f"127.0.0.1:{args.web_port}", "--noreload"])

        say("waiting for workers, web and Flower …")
        wait_until_up(nodes=nodes, web_port=args.web_port, flower_port=args.flower_port,
                      timeout=args.ready_timeout, supervisor=supervisor, watchdog=watchdog, stopping=stopping)
        stack_env.write(env)
        print_banner(env, admin, nodes, ports, supervisor.log_dir)
        return supervise(supervisor, watchdog, stopping)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        say(f"start-up failed: {exc}")
        return 1
    finally:
        shut_down(supervisor, backends)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    time.tzset()
    sys.exit(main())
