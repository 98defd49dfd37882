"""The HTTP API through Django's test client: auth, validation, limits, error responses (JSON, 503 with
the broker or database down on real closed ports, error pages without secrets), probes,
and every allow-listed task end to end on real workers (one per pool, ``stack_workers``). Tokens, scopes,
rate limits and the audit trail: test_api_tokens.py."""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
from celery import states
from django.conf import settings
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path as route

from apps.main.api.serializers import TASK_ARGUMENTS
from apps.main.queues import WORKER_POOLS, queue_for, task_name
from embedded.network import free_port, wait_until
from embedded.supervisor import python_env
from portfolio_site import environment as env_names
from portfolio_site.celery import app
from tests.app.procs import APP_DIR

# Tokens live in the database (tests/app/test_api_tokens.py); API_TOKEN is the one every test database has.
pytestmark = pytest.mark.django_db


@pytest.fixture
def client() -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {settings.API_TOKEN}")


@pytest.fixture
def api() -> Client:
    """Like ``client``, but a failing view gives its error response instead of raising it in the test:
    the tests using it assert what a caller would get."""
    return Client(HTTP_AUTHORIZATION=f"Bearer {settings.API_TOKEN}", raise_request_exception=False)


def post(client: Client, short: str, body: Any) -> Any:
    return client.post(f"/api/tasks/{short}/", data=json.dumps(body), content_type="application/json")


def json_error(response: Any, status: int) -> dict[str, Any]:
    """The body of an error response, checked to be JSON with a reason and the expected status."""
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].split(";")[0] == "application/json", (response["Content-Type"],
                                                                           response.content[:300])
    body = response.json()
    assert isinstance(body, dict) and body.get("detail"), body
    return body


# --- Authentication ------------------------------------------------------------------------------

@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic dXNlcjpwYXNz", "Bearer"])
def test_requests_without_the_token_get_401_with_a_bearer_challenge(authorization: str | None) -> None:
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    for response in (
        Client(**headers).post("/api/tasks/health_check/", data="{}", content_type="application/json"),
        Client(**headers).get(f"/api/tasks/{uuid.uuid4()}/"),
    ):
        assert response.status_code == 401, response.content
        assert response["WWW-Authenticate"] == "Bearer"
        assert response.json()["detail"]


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    # RFC 7235: the auth-scheme is a case-insensitive token. An unknown argument proves the request passed auth.
    response = post(Client(HTTP_AUTHORIZATION=f"{scheme} {settings.API_TOKEN}"), "health_check", {"unknown": 1})
    assert response.status_code == 400, response.content


# --- Validation ----------------------------------------------------------------------------------

def test_unknown_task_is_404_with_the_allow_list(client: Client) -> None:
    response = post(client, "delete_everything", {})
    assert response.status_code == 404
    body = response.json()
    assert "delete_everything" in body["detail"] and body["available"] == sorted(TASK_ARGUMENTS)


BAD_ARGUMENTS = [
    ("unknown argument", "update_analytics", {"window_minutes": 5, "windows": 3}, "windows", "unknown argument"),
    ("wrong type (int)", "generate_reports", {"hours": "many"}, "hours", "valid integer"),
    ("wrong type (dict)", "process_user_action",
     {"action_id": "a", "user_id": "u", "action": "x", "payload": [1, 2]}, "payload", "dictionary"),
    ("wrong type (list)", "backup_data", {"models": "main.UserAction"}, "models", "list"),
    ("bad e-mail", "send_notification", {"channel": "email", "recipient": "not-an-address", "message": "m"},
     "recipient", "e-mail"),
    ("bad URL", "send_notification", {"channel": "webhook", "recipient": "ftp://x.example/h", "message": "m"},
     "recipient", "URL"),
    ("bad URL (no scheme)", "send_notification", {"channel": "webhook", "recipient": "hooks.example", "message": "m"},
     "recipient", "URL"),
    ("missing required", "send_notification", {"channel": "in_app", "message": "m"}, "recipient", "required"),
    ("unknown choice", "send_notification", {"channel": "sms", "recipient": "u", "message": "m"}, "channel",
     "valid choice"),
    ("below minimum", "update_analytics", {"window_minutes": 0}, "window_minutes", "greater than or equal to 1"),
    ("above maximum", "generate_reports", {"hours": 24 * 30 + 1}, "hours", "less than or equal to 720"),
    ("negative", "cleanup_temp_files", {"max_age_seconds": -1}, "max_age_seconds", "greater than or equal to 0"),
    ("keep zero", "backup_data", {"keep": 0}, "keep", "greater than or equal to 1"),
    ("unknown model", "backup_data", {"models": ["auth.User"]}, "models", "valid choice"),
    ("bad date-time", "process_user_action",
     {"action_id": "a", "user_id": "u", "action": "x", "occurred_at": "yesterday"}, "occurred_at", "Datetime"),
]


@pytest.mark.parametrize(("short", "body", "field", "reason"),
                         [case[1:] for case in BAD_ARGUMENTS], ids=[case[0] for case in BAD_ARGUMENTS])
def test_bad_arguments_are_400_naming_the_field(client: Client, short: str, body: dict, field: str,
                                                reason: str) -> None:
    response = post(client, short, body)
    assert response.status_code == 400, response.content
    errors = response.json()
    assert field in errors, errors
    assert reason.lower() in json.dumps(errors[field]).lower(), errors


@pytest.mark.parametrize(("body", "reason"), [([1, 2], "object"), ("text", "object"), (42, "object"),
                                              (None, "no data")], ids=["array", "string", "number", "null"])
def test_a_body_that_is_not_an_object_is_400(client: Client, body: Any, reason: str) -> None:
    response = post(client, "update_analytics", body)
    assert response.status_code == 400
    errors = response.json()
    assert list(errors) == ["non_field_errors"] and reason in json.dumps(errors).lower(), errors


def test_malformed_json_is_400(client: Client) -> None:
    response = client.post("/api/tasks/health_check/", data="{not json", content_type="application/json")
    assert response.status_code == 400


# --- Limits: too deep, too large, text a database cannot store; every refusal is JSON --------------

def nested_objects(depth: int) -> str:
    """``{"a":{"a":…1…}}``: ``depth`` objects, one inside the other (depth 1 is ``{"a":1}``)."""
    return '{"a":' * depth + "1" + "}" * depth


def user_action(payload: str) -> str:
    return f'{{"action_id": "a-{uuid.uuid4().hex}", "user_id": "u", "action": "x", "payload": {payload}}}'


DEEP_BODIES = {
    "payload 500 deep": user_action(nested_objects(500)),
    "payload 1000 deep": user_action(nested_objects(1000)),
    "arrays 100000 deep": "[" * 100_000 + "]" * 100_000,
    "arrays 100000 deep, unclosed": "[" * 100_000,
    "objects 100000 deep, malformed": '{"a":' * 100_000,
}


@pytest.mark.parametrize("body", list(DEEP_BODIES.values()), ids=list(DEEP_BODIES))
def test_a_body_nested_deeper_than_the_limit_is_400(api: Client, body: str) -> None:
    response = api.post("/api/tasks/process_user_action/", data=body, content_type="application/json")
    detail = json_error(response, 400)["detail"]
    assert "nested deeper than" in detail and str(settings.API_MAX_JSON_DEPTH) in detail, detail


def test_the_depth_limit_is_a_setting_and_the_limit_itself_is_allowed(api: Client) -> None:
    def depth_refused(depth: int) -> bool:
        # update_analytics refuses an object as window_minutes; a depth refusal says so instead.
        body = '{"window_minutes": ' + nested_objects(depth - 1) + "}"
        response = api.post("/api/tasks/update_analytics/", data=body, content_type="application/json")
        assert response.status_code == 400, response.content
        return "nested deeper than" in json.dumps(response.json())

    assert settings.API_MAX_JSON_DEPTH == 32  # the default: the test settings keep it
    assert not depth_refused(32) and depth_refused(33)
    with override_settings(API_MAX_JSON_DEPTH=4):
        assert not depth_refused(4) and depth_refused(5)


@pytest.mark.parametrize("text", ['"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["',
                                  '"\\"{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{\\\\"'],
                         ids=["brackets", "brackets after escaped quotes"])
def test_brackets_inside_strings_do_not_count_as_nesting(api: Client, text: str) -> None:
    response = api.post("/api/tasks/update_analytics/", data=f'{{"window_minutes": {text}}}',
                        content_type="application/json")
    assert response.status_code == 400 and "window_minutes" in response.json(), response.content


UNSTORABLE_TEXT = {
    "NUL in a value": (r'{"k": "a\u0000b"}', "payload.k", "U+0000"),
    "NUL in a key": (r'{"k\u0000": 1}', "payload", "U+0000"),
    "NUL deep in a list": (r'{"a": [{"b": ["ok", "\u0000"]}]}', "payload.a[0].b[1]", "U+0000"),
    "lone high surrogate in a value": (r'{"k": "x\ud800"}', "payload.k", "surrogate"),
    "lone low surrogate in a key": (r'{"\udfff": 1}', "payload", "surrogate"),
    "reversed surrogate pair": (r'{"k": ["\ude00\ud83d"]}', "payload.k[0]", "surrogate"),
}


@pytest.mark.parametrize(("payload", "where", "reason"), list(UNSTORABLE_TEXT.values()), ids=list(UNSTORABLE_TEXT))
def test_text_postgresql_cannot_store_is_400_naming_where(api: Client, payload: str, where: str,
                                                         reason: str) -> None:
    response = api.post("/api/tasks/process_user_action/", data=user_action(payload),
                        content_type="application/json")
    detail = json_error(response, 400)["detail"]
    assert reason in detail and where in detail, detail


def test_text_checks_cover_top_level_keys_and_fields(api: Client) -> None:
    for body in (r'{"a\u0000": 1}', r'{"window_minutes": "\ud800"}'):
        response = api.post("/api/tasks/update_analytics/", data=body, content_type="application/json")
        assert "U+" in json_error(response, 400)["detail"]


def test_a_valid_surrogate_pair_is_ordinary_text(api: Client) -> None:
    # "\ud83d\ude00" is one character (U+1F600): refused only as a wrong type, not as bad text.
    response = api.post("/api/tasks/update_analytics/", data=r'{"window_minutes": "\ud83d\ude00"}',
                        content_type="application/json")
    assert response.status_code == 400 and "window_minutes" in response.json(), response.content


@pytest.mark.parametrize("number", ["1e400", "-1e999", "NaN", "Infinity"])
def test_numbers_json_cannot_carry_are_400(api: Client, number: str) -> None:
    response = api.post("/api/tasks/process_user_action/", data=user_action(f'{{"n": {number}}}'),
                        content_type="application/json")
    json_error(response, 400)


def test_a_5_mb_body_is_413_json(api: Client) -> None:
    response = api.post("/api/tasks/health_check/", data=json.dumps({"x": "a" * 5_000_000}),
                        content_type="application/json")
    detail = json_error(response, 413)["detail"]
    assert str(settings.API_MAX_BODY_BYTES) in detail, detail
    assert settings.API_MAX_BODY_BYTES == 1024 * 1024  # the default


def test_the_body_limit_is_a_setting_counted_in_bytes(api: Client) -> None:
    body = '{"unknown": "' + "é" * 40 + '"}'  # 95 bytes in UTF-8, 55 characters
    assert len(body.encode()) == 95
    with override_settings(API_MAX_BODY_BYTES=94):
        json_error(api.post("/api/tasks/health_check/", data=body, content_type="application/json"), 413)
    with override_settings(API_MAX_BODY_BYTES=95):
        response = api.post("/api/tasks/health_check/", data=body, content_type="application/json")
        assert response.status_code == 400 and "unknown" in response.json(), response.content


def test_the_parser_also_counts_the_bytes_it_reads() -> None:
    # Content-Length can understate a body (a chunked upload behind a proxy): the parser stops reading at the limit.
    from rest_framework.exceptions import APIException

    from apps.main.api.parsers import LimitedJSONParser

    with override_settings(API_MAX_BODY_BYTES=10), pytest.raises(APIException) as refused:
        LimitedJSONParser().parse(io.BytesIO(b'{"k": "' + b"x" * 10_000 + b'"}'), "application/json", {})
    assert refused.value.status_code == 413


@contextmanager
def django_server() -> Iterator[tuple[str, int]]:
    """The site on Django's threaded WSGI server (as runserver serves it) on a free port: (host, port)."""
    server = ThreadedWSGIServer(("127.0.0.1", 0), WSGIRequestHandler, allow_reuse_address=False)
    server.set_app(get_wsgi_application())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[:2]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_an_oversized_content_length_is_refused_before_the_body_is_read() -> None:
    with django_server() as (host, port):
        connection = http.client.HTTPConnection(host, port, timeout=10)
        connection.putrequest("POST", "/api/tasks/health_check/")
        connection.putheader("Authorization", f"Bearer {settings.API_TOKEN}")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(5_000_000))
        connection.endheaders()  # the headers only: the answer must come without the body
        response = connection.getresponse()
        status, content_type, body = response.status, response.getheader("Content-Type"), response.read()
        connection.close()
    assert status == 413, body[:300]
    assert content_type == "application/json" and json.loads(body)["detail"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", ""])
def test_a_body_that_is_not_json_is_415(api: Client, content_type: str) -> None:
    response = api.generic("POST", "/api/tasks/health_check/", data=b"{}", content_type=content_type)
    assert content_type in json_error(response, 415)["detail"]


def test_a_charset_that_is_not_a_text_encoding_is_400(api: Client) -> None:
    # A bytes-to-bytes codec would decompress the body after its size was checked (set in META: the test
    # client itself cannot encode with it).
    response = api.post("/api/tasks/health_check/", data=b"{}", content_type="application/json",
                        CONTENT_TYPE="application/json; charset=zlib_codec")
    assert "charset" in json_error(response, 400)["detail"]


def test_a_body_that_is_not_utf_8_is_400(api: Client) -> None:
    response = api.post("/api/tasks/health_check/", data=b'{"k": "\xff\xfe"}', content_type="application/json")
    json_error(response, 400)


@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
def test_the_trailing_slash_is_optional(api: Client, debug: bool) -> None:
    # Django's APPEND_SLASH cannot redirect a POST (with DEBUG it raises): the routes match both spellings.
    with override_settings(DEBUG=debug):
        response = api.post("/api/tasks/update_analytics", data='{"window_minutes": 0}',
                            content_type="application/json")
        assert response.status_code == 400 and "window_minutes" in response.json(), response.content
        json_error(api.post("/api/tasks/delete_everything", data="{}", content_type="application/json"), 404)
        json_error(api.get("/api/tasks/update_analytics"), 405)
        assert api.get("/api/schema", {"format": "json"}).status_code == 200


def test_a_post_without_the_trailing_slash_is_accepted(api: Client) -> None:
    response = api.post("/api/tasks/health_check", data="{}", content_type="application/json")
    assert response.status_code == 202, response.content
    assert urlsplit(response.json()["status_url"]).path == f"/api/tasks/{response.json()['id']}/"


@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
@pytest.mark.parametrize(("method", "url"), [("get", "/api/nothing/"), ("post", "/api/nothing"), ("get", "/api"),
                                             ("post", "/api/"), ("get", "/api/tasks/"), ("put", "/api/tasks/x/y/"),
                                             ("get", "/api/tasks/not-a-task-id/"), ("put", "/api/tasks/x/"),
                                             ("delete", "/api/tasks/not_a_task"), ("options", "/api/tasks/x/")])
def test_an_unknown_route_under_api_is_a_json_404(api: Client, debug: bool, method: str, url: str) -> None:
    with override_settings(DEBUG=debug):
        json_error(getattr(api, method)(url), 404)


def test_an_unknown_route_elsewhere_is_a_json_404() -> None:
    json_error(Client().get("/no-such-page/"), 404)


def test_a_wrong_method_is_a_json_405(api: Client) -> None:
    for response in (api.get("/api/tasks/health_check/"), api.delete(f"/api/tasks/{uuid.uuid4()}/")):
        assert "not allowed" in json_error(response, 405)["detail"]
    for url in ("/healthz", "/readyz"):
        response = Client().post(url)
        assert "not allowed" in json_error(response, 405)["detail"] and response["Allow"] == "GET"


def test_authentication_comes_before_the_body_is_parsed() -> None:
    # Authentication comes before parsing: without the token even a deep body is only a 401.
    response = Client().post("/api/tasks/health_check/", data="[" * 1000, content_type="application/json")
    json_error(response, 401)


# --- Every task end to end -----------------------------------------------------------------------

def e2e_bodies() -> dict[str, dict[str, Any]]:
    run = uuid.uuid4().hex[:10]
    return {
        "send_notification": {"channel": "in_app", "recipient": "user-9", "subject": "api", "message": f"hi {run}"},
        "process_user_action": {"action_id": f"api-{run}", "user_id": "u-9", "action": "api_login",
                                "payload": {"via": "api"}, "occurred_at": "2024-05-01T12:00:00Z"},
        "update_analytics": {"window_minutes": 10},
        "cleanup_temp_files": {"max_age_seconds": 3600},
        "health_check": {},
        "generate_reports": {"report_type": "performance", "hours": 1},
        "backup_data": {"models": ["main.UserAction"], "keep": 5},
    }


def test_e2e_bodies_cover_the_allow_list() -> None:
    assert set(e2e_bodies()) == set(TASK_ARGUMENTS)


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_every_task_is_accepted_and_runs_on_the_pool_of_its_queue(client: Client,
                                                                   stack_workers: dict[str, str]) -> None:
    accepted = {}
    bodies = e2e_bodies()
    for short, body in bodies.items():
        response = post(client, short, body)
        assert response.status_code == 202, (short, response.content)
        data = response.json()
        assert set(data) == {"id", "task", "queue", "status_url"}
        assert (data["task"], data["queue"]) == (task_name(short), queue_for(short))
        assert urlsplit(data["status_url"]).path == f"/api/tasks/{data['id']}/"
        accepted[short] = data

    def status(short: str) -> dict[str, Any]:
        response = client.get(urlsplit(accepted[short]["status_url"]).path)
        assert response.status_code == 200
        st = response.json()
        # Every answer, also one taken while the task finishes, describes one moment.
        assert st["ready"] == (st["state"] in states.READY_STATES), st
        assert st["ready"] or (st["result"], st["date_done"]) == (None, None), st
        return st

    final = {}
    for short in accepted:
        final[short] = wait_until(lambda s=short: (lambda st: st if st["ready"] else None)(status(s)),
                                timeout=30, what=f"{short} to finish")
    for short, st in final.items():
        assert st["state"] == "SUCCESS", (short, st)
        assert (st["id"], st["task"], st["queue"]) == (accepted[short]["id"], task_name(short), queue_for(short))
        pool = st["worker"].split("@")[0]
        assert pool in WORKER_POOLS and queue_for(short) in WORKER_POOLS[pool].queues, (short, st["worker"])
        assert st["error"] is None and st["date_done"]

    results = {short: st["result"] for short, st in final.items()}
    assert results["send_notification"]["channel"] == "in_app"
    assert results["process_user_action"] == {"action_id": bodies["process_user_action"]["action_id"],
                                              "created": True}
    assert results["health_check"]["status"] == "healthy"
    assert results["backup_data"]["counts"]["main.UserAction"] >= 1
    assert results["generate_reports"]["path"].endswith(".json")
    assert results["update_analytics"]["snapshot_id"] > 0
    assert set(results["cleanup_temp_files"]) >= {"files_removed", "results_removed"}


@pytest.mark.django_db
@pytest.mark.parametrize("slash", ["/", ""], ids=["slash", "no-slash"])
def test_status_of_an_id_never_issued_is_404(api: Client, slash: str) -> None:
    task_id = str(uuid.uuid4())
    body = json_error(api.get(f"/api/tasks/{task_id}{slash}"), 404)
    assert "unknown" in body["detail"] and "expired" in body["detail"], body


@pytest.mark.django_db
def test_status_of_an_id_the_api_issued_is_200_while_pending(api: Client) -> None:
    accepted = api.post("/api/tasks/health_check/", data="{}", content_type="application/json")
    assert accepted.status_code == 202, accepted.content
    task_id = accepted.json()["id"]
    response = api.get(urlsplit(accepted.json()["status_url"]).path)
    assert response.status_code == 200, response.content
    assert response.json()["id"] == task_id and response.json()["state"] in states.ALL_STATES


@pytest.mark.django_db
def test_status_of_an_id_issued_outside_the_api_is_200(api: Client) -> None:
    # Beat, retries and the dead-letter requeue publish through Celery too: every publish is recorded.
    result = app.send_task(task_name("health_check"))
    response = api.get(f"/api/tasks/{result.id}/")
    assert response.status_code == 200, response.content
    assert response.json()["id"] == result.id


@pytest.mark.django_db
def test_status_of_an_id_with_a_stored_result_is_200(api: Client) -> None:
    from django_celery_results.models import TaskResult

    task_id = str(uuid.uuid4())  # never published here: only its result row exists
    TaskResult.objects.create(task_id=task_id, task_name=task_name("health_check"), status=states.SUCCESS,
                              result='{"status": "healthy"}', content_type="application/json",
                              content_encoding="utf-8")
    response = api.get(f"/api/tasks/{task_id}/")
    assert response.status_code == 200, response.content
    assert (response.json()["state"], response.json()["result"]) == (states.SUCCESS, {"status": "healthy"})


# --- Probes --------------------------------------------------------------------------------------

def test_healthz_needs_nothing() -> None:
    response = Client().get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.django_db
def test_readyz_is_200_when_database_and_broker_answer() -> None:
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


@contextmanager
def broker_at(url: str) -> Iterator[None]:
    """Point the web process at another broker: the setting, the Celery app built from it, and the app's
    connection and producer pools (``send_task`` publishes through them; they hold the old URL)."""
    previous = app.conf.broker_url, app._pool, app.amqp._producer_pool
    with override_settings(CELERY_BROKER_URL=url):
        app.conf.broker_url = url
        app._pool = app.amqp._producer_pool = None
        try:
            yield
        finally:
            if app._pool is not None:
                app._pool.force_close_all()
            app.conf.broker_url, app._pool, app.amqp._producer_pool = previous


@contextmanager
def hanging_up_server() -> Iterator[tuple[int, list[int]]]:
    """A TCP server that accepts and at once closes every connection; yields (port, accepted)."""
    accepted: list[int] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(5)
        server.close()


@pytest.mark.django_db
def test_readyz_is_503_naming_the_broker_when_it_is_unreachable(redis_url: str) -> None:
    redis_password = urlsplit(redis_url).password
    # Nothing listens here: connection refused.
    with broker_at(f"redis://:{redis_password}@127.0.0.1:{free_port()}/0"):
        started = time.monotonic()
        response = Client().get("/readyz")
    assert response.status_code == 503, response.content
    body = response.json()
    assert body["status"] == "not ready" and body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("error: "), body
    assert time.monotonic() - started < 15  # a probe must answer within its own timeout

    # Something listens and hangs up: proves the probe really opens a connection to the configured URL.
    with hanging_up_server() as (port, accepted), broker_at(f"redis://:{redis_password}@127.0.0.1:{port}/0"):
        response = Client().get("/readyz")
    assert response.status_code == 503 and response.json()["checks"]["broker"].startswith("error: ")
    assert accepted, "readyz did not connect to the broker URL it was given"

    # And the same switch back to the real broker is ready again.
    with broker_at(redis_url):
        assert Client().get("/readyz").status_code == 200


# --- The broker or the database down: 503 with Retry-After, at once ---------------------------------

def assert_unavailable(response: Any, names: str, started: float) -> None:
    detail = json_error(response, 503)["detail"]
    assert names in detail, detail
    assert int(response["Retry-After"]) == settings.API_RETRY_AFTER_SECONDS > 0
    assert time.monotonic() - started < 15  # answered, not hung retrying


def test_enqueue_with_the_broker_down_is_503_with_retry_after(api: Client, redis_url: str) -> None:
    redis_password = urlsplit(redis_url).password
    with broker_at(f"redis://:{redis_password}@127.0.0.1:{free_port()}/0"):  # nothing listens there
        started = time.monotonic()
        response = api.post("/api/tasks/health_check/", data="{}", content_type="application/json")
    assert_unavailable(response, "broker", started)
    assert redis_password not in response.content.decode()


@contextmanager
def database_at_port(port: int) -> Iterator[None]:
    """Point this process's database connection at another port; the next query connects there."""
    from django.db import connection

    saved = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = port
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["PORT"] = saved


@pytest.mark.django_db(transaction=True)
def test_status_with_the_database_down_is_503_with_retry_after(api: Client) -> None:
    with database_at_port(free_port()):
        started = time.monotonic()
        response = api.get(f"/api/tasks/{uuid.uuid4()}/")
    assert_unavailable(response, "database", started)
    assert api.get(f"/api/tasks/{uuid.uuid4()}/").status_code == 404  # and back to normal


# --- Error pages: JSON without a traceback, and no secret even on the debug page ------------------

def explode(request: HttpRequest) -> HttpResponse:
    broker = settings.REDIS_URL  # a local variable the debug page lists
    raise RuntimeError(f"forced failure talking to {broker}")


@pytest.fixture
def failing_site() -> Iterator[None]:
    """The site's URLconf, its error handlers, and two views that raise: no input makes the site fail,
    so these force a failure to see what the error pages show."""
    import portfolio_site.urls as site

    conf = ModuleType("failing_site")
    conf.urlpatterns = [route("boom/", explode), route("api/boom/", explode), *site.urlpatterns]  # type: ignore[attr-defined]
    for handler in ("handler400", "handler403", "handler404", "handler500"):
        if hasattr(site, handler):
            setattr(conf, handler, getattr(site, handler))
    with override_settings(ROOT_URLCONF=conf):
        yield


def secrets_in_play() -> dict[str, str]:
    secrets = {
        "REDIS_URL password": urlsplit(settings.REDIS_URL).password,
        "DATABASE_URL password": urlsplit(settings.DATABASE_URL).password,
        "API token": settings.API_TOKEN,
    }
    assert all(secrets.values()), secrets  # else this test would prove nothing
    return secrets  # type: ignore[return-value]


@pytest.mark.parametrize("accept", ["text/html", "text/plain"])
def test_the_debug_page_shows_no_secret(failing_site: None, accept: str) -> None:
    secrets = secrets_in_play()
    with override_settings(DEBUG=True):
        response = Client(raise_request_exception=False).post(
            "/boom/?password=query-secret-1",
            data={"upstream": settings.DATABASE_URL, "db_password": "form-secret-2"},
            HTTP_ACCEPT=accept,
            HTTP_AUTHORIZATION=f"Bearer {settings.API_TOKEN}",
            HTTP_X_UPSTREAM=settings.REDIS_URL,  # a header whose name says nothing
            REDIS_URL=settings.REDIS_URL,  # runserver puts the process environment in META
        )
    page = response.content.decode()
    assert response.status_code == 500 and "forced failure talking to" in page and "RuntimeError" in page
    secrets |= {"query parameter": "query-secret-1", "form field": "form-secret-2"}
    leaked = [name for name, secret in secrets.items() if secret in page]
    assert not leaked, leaked
    assert "REDIS_URL" in page and "redis://" in page  # the settings are listed, their secrets hidden


@pytest.mark.parametrize("url", ["/boom/", "/api/boom/"])
def test_a_failure_in_production_is_a_json_500_without_a_traceback(failing_site: None, url: str) -> None:
    response = Client(raise_request_exception=False).get(url)
    page = response.content.decode()
    json_error(response, 500)
    assert "Traceback" not in page and "RuntimeError" not in page and "forced" not in page, page


def test_a_failure_in_the_api_is_json_also_in_debug(failing_site: None) -> None:
    with override_settings(DEBUG=True):
        response = Client(raise_request_exception=False).get("/api/boom/")
    json_error(response, 500)
    assert "forced" not in response.content.decode()


def test_api_limits_come_from_the_environment() -> None:
    code = ("import django; django.setup(); from django.conf import settings; "
            "print(settings.API_MAX_JSON_DEPTH, settings.API_MAX_BODY_BYTES)")
    env = python_env({**os.environ, "DJANGO_SETTINGS_MODULE": "portfolio_site.settings.test"})
    for name in (env_names.API_MAX_JSON_DEPTH, env_names.API_MAX_BODY_BYTES):
        env.pop(name, None)
    defaults = subprocess.run([sys.executable, "-c", code], cwd=APP_DIR, env=env, capture_output=True, text=True,
                              timeout=60, check=True)
    assert defaults.stdout.split() == ["32", str(1024 * 1024)]
    env.update({env_names.API_MAX_JSON_DEPTH: "7", env_names.API_MAX_BODY_BYTES: "2048"})
    configured = subprocess.run([sys.executable, "-c", code], cwd=APP_DIR, env=env, capture_output=True, text=True,
                                timeout=60, check=True)
    assert configured.stdout.split() == ["7", "2048"]
