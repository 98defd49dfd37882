#!/usr/bin/env python
"""Start the whole local stack: Redis (embedded Valkey) and PostgreSQL unless configured, one worker
per queue, beat, Flower and the web app. Prints the URLs; Ctrl-C or SIGTERM stops everything.

    python start_celery_services.py [--web-port 8000] [--flower-port 5555]

REDIS_URL / DATABASE_URL from the environment are used as they are; without them the embedded
servers keep their data under .local/ (git-ignored; $LOCAL_STACK_DIR if set) between runs, and the
processes log to logs/processes/ ($LOG_DIR/processes).
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
from pathlib import Path

from embedded import EmbeddedPostgres, EmbeddedValkey, stack_env
from embedded.network import Abort, wait_until
from embedded.supervisor import APP_DIR, Supervisor, python_env

REPO_DIR = APP_DIR.parent
# State and logs go elsewhere when LOCAL_STACK_DIR / LOG_DIR say so (the tests never touch a developer's).
LOCAL_DIR = stack_env.local_dir()


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def local_credentials() -> dict[str, str]:
    """API token and Flower login for the local stack, generated once and kept in .local/."""
    path = LOCAL_DIR / "credentials.json"
    if path.exists():
        return json.loads(path.read_text())
    creds = {"API_TOKEN": secrets.token_urlsafe(24), "FLOWER_BASIC_AUTH": f"admin:{secrets.token_urlsafe(12)}"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(creds, indent=2))
    path.chmod(0o600)
    return creds


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def main(argv: list[str] | None = None) -> int:
    from portfolio_site import commands
    from portfolio_site.ports import FLOWER_PORT, WEB_PORT

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--web-port", type=int, default=WEB_PORT)
    parser.add_argument("--flower-port", type=int, default=FLOWER_PORT)
    parser.add_argument("--ready-timeout", type=float, default=120)
    args = parser.parse_args(argv)

    for port, what in ((args.web_port, "web"), (args.flower_port, "Flower")):
        if not port_free(port):
            say(f"port {port} for {what} is in use; stop what holds it or pass --{what.lower()}-port")
            return 2

    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())

    backends: list[EmbeddedValkey | EmbeddedPostgres] = []
    env = python_env()
    env.setdefault("DJANGO_SETTINGS_MODULE", "portfolio_site.settings.dev")
    env.setdefault("APP_DATA_DIR", str(LOCAL_DIR / "data"))
    for key, value in local_credentials().items():
        env.setdefault(key, value)
    supervisor = Supervisor(log_dir=Path(env.get("LOG_DIR") or REPO_DIR / "logs") / "processes", env=env)
    try:
        if not env.get("REDIS_URL"):
            say(f"REDIS_URL not set: starting embedded Valkey (data in {LOCAL_DIR / 'valkey'})")
            backends.append(EmbeddedValkey(LOCAL_DIR / "valkey").start())
            env["REDIS_URL"] = backends[-1].url
        if not env.get("DATABASE_URL"):
            say(f"DATABASE_URL not set: starting embedded PostgreSQL (data in {LOCAL_DIR / 'postgres'})")
            backends.append(EmbeddedPostgres(LOCAL_DIR / "postgres").start())
            env["DATABASE_URL"] = backends[-1].url

        for step in commands.MIGRATE:
            say("running " + " ".join(step[1:]))
            subprocess.run(step, cwd=APP_DIR, env=env, check=True, stdout=subprocess.DEVNULL)

        os.environ.update(env)
        import django

        django.setup()
        from apps.main.queues import WORKER_POOLS
        from portfolio_site.celery import app

        host = socket.gethostname()
        for pool_name, pool in WORKER_POOLS.items():
            supervisor.spawn(f"worker-{pool_name}", commands.worker(pool_name, pool))
        supervisor.spawn("beat", commands.beat())
        supervisor.spawn("flower", commands.flower(args.flower_port))
        supervisor.spawn("web", ["python", "manage.py", "runserver", f"127.0.0.1:{args.web_port}", "--noreload"])

        def ready() -> bool:
            if failed := supervisor.exited():
                raise Abort(supervisor.describe_failure(failed[0]))
            if stopping.is_set():
                raise KeyboardInterrupt
            expected = {f"{name}@{host}" for name in WORKER_POOLS}
            answered = {name for reply in app.control.ping(timeout=0.5) for name in reply}
            with urllib.request.urlopen(f"http://127.0.0.1:{args.web_port}/healthz", timeout=2):
                pass
            return expected <= answered and not port_free(args.flower_port)

        say("waiting for workers, web and Flower …")
        wait_until(ready, timeout=args.ready_timeout, what="the stack to come up", interval=0.5)
        stack_env.write(env)
        flower_user = env["FLOWER_BASIC_AUTH"].split(",")[0].split(":")[0]
        say("the stack is up:")
        say(f"  web          http://127.0.0.1:{args.web_port}/   (admin at /admin/, API at /api/tasks/<name>/)")
        say(f"  flower       http://127.0.0.1:{args.flower_port}/   user {flower_user!r}")
        say(f"  credentials  API token and Flower password in {stack_env.stack_env_path()}")
        say(f"  broker       {env['REDIS_URL'].split('@')[-1]}")
        for name, pool in WORKER_POOLS.items():
            say(f"  worker       {name}@{host}  queues={','.join(pool.queues)} concurrency={pool.concurrency}")
        say(f"  logs         {supervisor.log_dir}")
        say("Ctrl-C stops everything.")
        while not stopping.wait(1):
            if failed := supervisor.exited():
                say(supervisor.describe_failure(failed[0]))
                return 1
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        say(f"start-up failed: {exc}")
        return 1
    finally:
        say("stopping …")
        stack_env.remove()
        supervisor.stop_all()
        for backend in reversed(backends):
            backend.stop()
        say("stopped; no process left running")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    time.tzset()
    sys.exit(main())
