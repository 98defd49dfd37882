"""No secret of the run shows on a page anyone can fetch (issue 14): Flower's pages and API with real workers and an
encrypted task, Flower's /metrics behind its basic auth, and Django's error pages — the production ones from the
real server (gunicorn, the web pod's command line) and the DEBUG page with every secret in its settings, its
environment and its frame variables. The secrets are the run's own (tests.support.leaks.run_secrets: the session's
Redis and PostgreSQL passwords, API token, SECRET_KEY, payload encryption keys) and the Flower password made here;
every form of them is searched for (raw, percent-encoded, base64)."""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path as route

from apps.main.queues import task_name
from embedded.network import Abort, free_port, wait_until
from embedded.supervisor import Child, Supervisor
from portfolio_site import commands
from portfolio_site import environment as env_names
from portfolio_site.celery import app
from tests.app.test_api import failing_site  # noqa: F401 (a fixture used here)
from tests.support import leaks
from tests.support.timeouts import scaled

FLOWER_USER = "flower-admin"


@dataclass
class Page:
    status: int
    headers: str
    body: str

    @property
    def text(self) -> str:
        """All of the answer that a secret could be in."""
        return f"{self.headers}\n{self.body}"


def fetch(url: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None,
          timeout: float = 10) -> Page:
    """A request as a browser or a script makes it; an error status is an answer too."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Page(response.status, str(response.headers), response.read().decode(errors="replace"))
    except urllib.error.HTTPError as error:
        return Page(error.code, str(error.headers), error.read().decode(errors="replace"))


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def assert_no_secret(pages: dict[str, Page], secrets_: dict[str, str]) -> None:
    found = {where: leaks.find(page.text, secrets_) for where, page in pages.items()}
    assert not any(found.values()), {where: names for where, names in found.items() if names}


def spawn_and_wait(supervisor: Supervisor, name: str, argv: list[str], url: str) -> Child:
    """Start a server and wait until ``url`` answers (any status): a server that exits fails at once."""
    child = supervisor.spawn(name, argv)

    def answers() -> bool:
        if child.process.poll() is not None:
            raise Abort(supervisor.describe_failure(child))
        try:
            fetch(url, timeout=2)
        except OSError:
            return False
        return True

    wait_until(answers, timeout=scaled(60), what=f"{name} to answer", interval=0.2)
    return child


# --- Flower ---------------------------------------------------------------------------------------------

@dataclass
class Flower:
    url: str
    password: str
    child: Child
    auth: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.auth = basic(FLOWER_USER, self.password)

    def get(self, path: str, **headers: str) -> Page:
        return fetch(f"{self.url}{path}", headers={**self.auth, **headers})


@pytest.fixture(scope="module")
def flower(live_env: dict[str, str], stack_workers: dict[str, str], process_logs: Path) -> Iterator[Flower]:
    """Flower as the chart runs it (start_flower, basic auth from the environment), on the session's Redis,
    once it lists every worker of the stack."""
    password = leaks.remember("Flower password", secrets.token_urlsafe(18))
    port = free_port()
    env = {**live_env, env_names.FLOWER_BASIC_AUTH: f"{FLOWER_USER}:{password}"}
    supervisor = Supervisor(log_dir=process_logs, env=env)
    try:
        child = spawn_and_wait(supervisor, f"flower-{port}", [*commands.flower(port), "--address=127.0.0.1"],
                               f"http://127.0.0.1:{port}/healthcheck")
        flower = Flower(f"http://127.0.0.1:{port}", password, child)

        def lists_the_workers() -> bool:
            page = flower.get("/api/workers?refresh=1")
            return page.status == 200 and all(node in page.text for node in stack_workers.values())

        wait_until(lists_the_workers, timeout=scaled(30), what="Flower to list the stack's workers", interval=0.5)
        yield flower
    finally:
        supervisor.stop_all()


@pytest.mark.live
def test_flower_metrics_need_the_basic_auth_of_its_ui(flower: Flower) -> None:
    assert fetch(f"{flower.url}/metrics").status == 401
    assert fetch(f"{flower.url}/metrics", headers=basic(FLOWER_USER, "wrong-password")).status == 401
    metrics = flower.get("/metrics")
    assert metrics.status == 200 and "flower_events_total" in metrics.text
    # The liveness check says only "OK" and stays open (the chart's probes are TCP checks).
    health = fetch(f"{flower.url}/healthcheck")
    assert (health.status, health.body) == (200, "OK")


def flower_routes() -> list[tuple[str, str]]:
    """(method, path) of every route of Flower's application with a handler method of its own, groups filled in
    with a name nothing has; without the ones that must stay open: login/logout, static files, /healthcheck and
    the catch-all 404."""
    from flower import urls
    from flower.views import BaseHandler
    from flower.views.auth import LoginHandler, LogoutHandler
    from flower.views.error import NotFoundErrorHandler
    from flower.views.monitor import Healthcheck
    from tornado.web import StaticFileHandler, URLSpec

    open_handlers = (LoginHandler, LogoutHandler, NotFoundErrorHandler, Healthcheck, StaticFileHandler)
    routes = []
    for entry in urls.handlers:
        pattern, handler = (entry.regex.pattern, entry.handler_class) if isinstance(entry, URLSpec) else entry[:2]
        if issubclass(handler, open_handlers):
            continue
        path = re.sub(r"\(\.[+*]\)", "nothing-has-this-name", pattern.rstrip("$"))
        methods = {name for cls in handler.__mro__ if issubclass(cls, BaseHandler) and cls is not BaseHandler
                   for name in ("get", "post") if name in vars(cls)}
        routes += [(method.upper(), path) for method in sorted(methods)]
    return routes


@pytest.mark.live
def test_every_flower_page_and_api_but_its_health_check_needs_the_login(flower: Flower) -> None:
    routes = flower_routes()
    assert ("GET", "/metrics") in routes and ("POST", "/api/task/revoke/nothing-has-this-name") in routes
    answers = {f"{method} {path}": fetch(f"{flower.url}{path}", method=method, body=b"" if method == "POST" else None,
                                         headers={"Content-Type": "application/x-www-form-urlencoded"}).status
               for method, path in routes}
    assert set(answers.values()) == {401}, {route: status for route, status in answers.items() if status != 401}


@pytest.mark.live
def test_flower_runs_without_the_password_on_its_command_line(flower: Flower) -> None:
    """`ps` shows a process's argv: the password travels in the environment only (start_flower execs Flower in
    the same process, whose command line is then Flower's)."""
    cmdline = Path(f"/proc/{flower.child.process.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert "apps.main.flower_launcher" in cmdline and "flower" in cmdline.split()
    assert not leaks.find(cmdline, {"Flower password": flower.password}), cmdline


@pytest.mark.live
@pytest.mark.django_db(transaction=True)  # the tasks' results are rows of the test database
def test_flower_pages_show_no_secret(flower: Flower, stack_workers: dict[str, str]) -> None:
    """Every page and API answer of Flower about the stack's workers (their configuration and stats included), its
    tasks (an encrypted send_notification among them), the broker and its metrics holds none of the secrets —
    and none of the encrypted task's arguments."""
    marker = f"leak-marker-{uuid.uuid4().hex}"
    notification = app.send_task(task_name("send_notification"), kwargs={
        "channel": "in_app", "recipient": marker, "message": marker, "subject": marker})
    health = app.send_task(task_name("health_check"))
    task_ids = [notification.id, health.id]
    assert notification.get(timeout=scaled(30))["channel"] == "in_app" and health.get(timeout=scaled(30))

    def flower_saw_them_succeed() -> bool:
        listed = json.loads(flower.get("/api/tasks").body)
        return all(listed.get(task_id, {}).get("state") == "SUCCESS" for task_id in task_ids)

    wait_until(flower_saw_them_succeed, timeout=scaled(30), what="Flower to see the tasks succeed", interval=0.5)
    datatable = urllib.parse.urlencode({"draw": 1, "start": 0, "length": 100, "search[value]": "",
                                        "order[0][column]": 0, "columns[0][data]": "name", "order[0][dir]": "asc"})
    paths = ["/", "/workers", "/tasks", f"/tasks/datatable?{datatable}", "/broker", "/api/workers?refresh=1",
             "/api/tasks", "/api/task/types", "/api/queues/length", "/metrics", "/nothing-has-this-name"]
    paths += [f"/worker/{urllib.parse.quote(node)}" for node in stack_workers.values()]
    paths += [f"{kind}{task_id}" for task_id in task_ids for kind in ("/task/", "/api/task/info/", "/api/task/result/")]
    pages = {path: flower.get(path) for path in paths}
    assert {path: page.status for path, page in pages.items() if page.status != 200} == {"/nothing-has-this-name": 404}
    # What the pages are expected to show, so that "no secret" is said of the real thing: the broker's address
    # (password masked), each worker's configuration and stats, the encrypted task's hidden arguments.
    assert "redis://:**@127.0.0.1" in pages["/broker"].text
    workers = json.loads(pages["/api/workers?refresh=1"].body)
    assert all(workers[node]["conf"] and workers[node]["stats"] for node in stack_workers.values()), workers
    assert "&lt;encrypted&gt;" in pages[f"/task/{notification.id}"].text
    assert_no_secret(pages, {**leaks.run_secrets(), "send_notification's arguments": marker})


# --- Django's error pages -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def secret_env() -> dict[str, str]:
    """The environment variables that hold secrets besides REDIS_URL and DATABASE_URL (live_env has those), as the
    local stack gives them to every process (embedded.stack_env.SHARED_KEYS) and the chart to the pods."""
    password = leaks.remember("Flower password (web)", secrets.token_urlsafe(18))
    return {
        env_names.SECRET_KEY: settings.SECRET_KEY,
        env_names.API_TOKEN: settings.API_TOKEN,
        env_names.PAYLOAD_ENCRYPTION_KEYS: ",".join(settings.PAYLOAD_ENCRYPTION_KEYS),
        env_names.FLOWER_BASIC_AUTH: f"{FLOWER_USER}:{password}",
    }


@pytest.fixture(scope="module")
def web(live_env: dict[str, str], secret_env: dict[str, str], process_logs: Path) -> Iterator[str]:
    """The site on gunicorn (the web pod's command line, bound to loopback) with every secret in its environment."""
    port = free_port()
    argv = commands.web(port, workers=1)
    argv[argv.index("--bind") + 1] = f"127.0.0.1:{port}"
    supervisor = Supervisor(log_dir=process_logs, env={**live_env, **secret_env})
    try:
        spawn_and_wait(supervisor, f"web-leaks-{port}", argv, f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}"
    finally:
        supervisor.stop_all()


def raw_exchange(url: str, request: bytes) -> Page:
    """What the server answers to bytes that are no valid HTTP request (urllib cannot send them)."""
    address = urllib.parse.urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.decode(errors="replace").partition("\r\n\r\n")
    return Page(int(head.split(" ", 2)[1]), head, body)


@pytest.mark.live
@pytest.mark.django_db(transaction=True)  # the API's tokens are rows of the test database
def test_the_production_error_pages_show_no_secret(web: str) -> None:
    token = {"Authorization": f"Bearer {settings.API_TOKEN}", "Content-Type": "application/json"}
    wrong = {**token, "Authorization": f"Bearer {secrets.token_urlsafe(24)}"}
    pages = {
        "404": fetch(f"{web}/nothing-has-this-name/"),
        "400 DisallowedHost": fetch(f"{web}/healthz", headers={"Host": "attacker.example"}),
        "400 gunicorn": raw_exchange(web, b"NOT-HTTP \x00\r\n\r\n"),
        "401": fetch(f"{web}/api/tasks/health_check/", method="POST", headers=wrong, body=b"{}"),
        "400 JSON": fetch(f"{web}/api/tasks/health_check/", method="POST", headers=token, body=b"{not json"),
        "404 API": fetch(f"{web}/api/tasks/{uuid.uuid4()}/", headers=token),
        "413": fetch(f"{web}/api/tasks/health_check/", method="POST", headers=token,
                     body=b" " * (settings.API_MAX_BODY_BYTES + 1)),
        "403 CSRF": fetch(f"{web}/admin/login/", method="POST", body=b"username=admin&password=x",
                          headers={"Content-Type": "application/x-www-form-urlencoded"}),
    }
    statuses = {name: page.status for name, page in pages.items()}
    assert statuses == {name: int(name.split()[0]) for name in pages}, statuses
    assert_no_secret(pages, leaks.run_secrets())  # the Flower passwords made here included (remembered)


def fail_holding_secrets(request: HttpRequest) -> HttpResponse:
    """A view that fails with secrets in its frame under plain names (as apps.main.payload_encryption.cipher's
    frame holds the keys) and in its exception's message."""
    keys = list(settings.PAYLOAD_ENCRYPTION_KEYS)
    signing, login = settings.SECRET_KEY, request.META[env_names.FLOWER_BASIC_AUTH]
    raise RuntimeError(f"forced failure with {keys[0]}, {signing} and {login} ({settings.API_TOKEN})")


@pytest.fixture
def site_holding_secrets(request: pytest.FixtureRequest) -> None:
    """tests/app/test_api.py's failing_site, one more failing view in its (per-test) URLconf."""
    request.getfixturevalue("failing_site")
    settings.ROOT_URLCONF.urlpatterns.insert(0, route("fail-holding-secrets/", fail_holding_secrets))


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [True, False], ids=["debug", "production"])
@pytest.mark.parametrize("accept", ["text/html", "text/plain"])
@pytest.mark.parametrize("path", ["/boom/", "/fail-holding-secrets/"])
def test_the_500_pages_show_no_secret(site_holding_secrets: None, secret_env: dict[str, str], path: str,
                                      accept: str, debug: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DEBUG page lists the settings, the request's META (runserver copies the whole environment there), its
    GET and POST data, and every frame's variables: each holds secrets here. The process's environment is the
    local stack's (every process gets the Flower login), as the web process's in test_the_production_error_pages."""
    monkeypatch.setenv(env_names.FLOWER_BASIC_AUTH, secret_env[env_names.FLOWER_BASIC_AUTH])
    flower_password = secret_env[env_names.FLOWER_BASIC_AUTH].partition(":")[2]
    with override_settings(DEBUG=debug):
        response = Client(raise_request_exception=False).post(
            f"{path}?next={settings.API_TOKEN}", data={"note": flower_password, "secret": settings.SECRET_KEY},
            HTTP_ACCEPT=accept, HTTP_AUTHORIZATION=f"Bearer {settings.API_TOKEN}",
            HTTP_COOKIE=f"sessionid={settings.SECRET_KEY}", REDIS_URL=settings.REDIS_URL,
            DATABASE_URL=settings.DATABASE_URL, **secret_env,
        )
    page = response.content.decode()
    assert response.status_code == 500
    assert ("forced failure" in page) is debug  # the debug page shows the exception, production does not
    assert_no_secret({path: Page(500, str(response.headers), page)}, leaks.run_secrets())
