"""The HTTP API through Django's test client: auth, validation, the OpenAPI schema, probes, and every
allow-listed task end to end on real workers (one per pool, ``stack_workers``)."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
from celery import states
from django.conf import settings
from django.test import Client, override_settings
from rest_framework import serializers as drf

from apps.main.api.serializers import TASK_ARGUMENTS
from apps.main.queues import WORKER_POOLS, queue_for, task_name
from embedded.network import free_port, wait_until
from portfolio_site.celery import app


@pytest.fixture
def client() -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {settings.API_TOKEN}")


def post(client: Client, short: str, body: Any) -> Any:
    return client.post(f"/api/tasks/{short}/", data=json.dumps(body), content_type="application/json")


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


def test_the_token_in_settings_is_what_authenticates(client: Client) -> None:
    assert settings.API_TOKEN  # with none configured every request would be refused
    with override_settings(API_TOKEN="another-token"):
        assert post(client, "health_check", {"unknown": 1}).status_code == 401
        other = Client(HTTP_AUTHORIZATION="Bearer another-token")
        assert post(other, "health_check", {"unknown": 1}).status_code == 400


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
def test_status_of_an_unknown_id_is_pending(client: Client) -> None:
    task_id = str(uuid.uuid4())
    response = client.get(f"/api/tasks/{task_id}/")
    assert response.status_code == 200
    assert response.json() == {"id": task_id, "task": None, "state": "PENDING", "ready": False, "result": None,
                               "error": None, "worker": None, "queue": None, "date_done": None}


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
    """Point the web process at another broker: the setting and the Celery app built from it."""
    previous = app.conf.broker_url
    with override_settings(CELERY_BROKER_URL=url):
        app.conf.broker_url = url
        try:
            yield
        finally:
            app.conf.broker_url = previous


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


# --- OpenAPI -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    response = Client().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    return json.loads(response.content)


def test_schema_by_accept_header_is_the_same_document(schema: dict[str, Any]) -> None:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert json.loads(response.content) == schema


def resolve(node: Any, document: dict[str, Any]) -> Any:
    """The schema with every local $ref replaced by what it points to (ours are not recursive)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolve(target, document)
        return {key: resolve(value, document) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(item, document) for item in node]
    return node


def request_schema(schema: dict[str, Any], short: str) -> dict[str, Any]:
    operation = schema["paths"][f"/api/tasks/{short}/"]["post"]
    return resolve(operation["requestBody"]["content"]["application/json"]["schema"], schema)


def test_schema_lists_exactly_the_allow_listed_tasks(schema: dict[str, Any]) -> None:
    posts = {path for path, item in schema["paths"].items() if "post" in item}
    assert posts == {f"/api/tasks/{short}/" for short in TASK_ARGUMENTS}


@pytest.mark.parametrize("short", sorted(TASK_ARGUMENTS))
def test_request_schema_matches_the_serializer(schema: dict[str, Any], short: str) -> None:
    fields = TASK_ARGUMENTS[short]().fields
    body = request_schema(schema, short)
    assert body["type"] == "object"
    assert set(body.get("properties", {})) == set(fields)
    assert sorted(body.get("required", [])) == sorted(name for name, field in fields.items() if field.required)
    assert body["additionalProperties"] is False  # the API refuses unknown keys; the schema says so
    for name, field in fields.items():
        prop = body["properties"][name]
        if isinstance(field, drf.ListField):
            field, prop = field.child, prop["items"]
        if isinstance(field, drf.ChoiceField):
            assert prop["enum"] == list(field.choices), name
        if isinstance(field, drf.IntegerField):
            assert (prop.get("minimum"), prop.get("maximum")) == (field.min_value, field.max_value), name


def test_schema_declares_bearer_auth_on_every_operation(schema: dict[str, Any]) -> None:
    schemes = schema["components"]["securitySchemes"]
    assert schemes == {"bearerAuth": {"type": "http", "scheme": "bearer"}}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert operation["security"] == [{"bearerAuth": []}], (method, path)


def example(prop: dict[str, Any]) -> Any:
    """A value the property's schema accepts."""
    if "enum" in prop:
        return prop["enum"][0]
    kind = prop.get("type")
    if kind == "integer":
        return prop.get("minimum", 1)
    if kind == "object":
        return {}
    if kind == "array":
        return [example(prop["items"])]
    if prop.get("format") == "date-time":
        return "2024-01-01T00:00:00Z"
    return "x"


def invalid_variants(body_schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(description, field it breaks, body) for each way the schema makes a body invalid."""
    props = body_schema.get("properties", {})
    base = {name: example(prop) for name, prop in props.items() if name in body_schema.get("required", [])}
    yield "unknown property", "zz_unknown", {**base, "zz_unknown": 1}
    for name in body_schema.get("required", []):
        yield f"{name} missing", name, {k: v for k, v in base.items() if k != name}
    for name, prop in props.items():
        item = prop["items"] if prop.get("type") == "array" else prop
        wrap = (lambda v: [v]) if item is not prop else (lambda v: v)
        if "enum" in item:
            yield f"{name} not in enum", name, {**base, name: wrap("zz-not-a-choice")}
        if "minimum" in item:
            yield f"{name} below minimum", name, {**base, name: wrap(item["minimum"] - 1)}
        if "maximum" in item:
            yield f"{name} above maximum", name, {**base, name: wrap(item["maximum"] + 1)}
        if "maxLength" in item:
            yield f"{name} too long", name, {**base, name: wrap("y" * (item["maxLength"] + 1))}
        wrong = {"integer": "abc", "string": {"a": 1}, "object": [1], "array": "abc"}.get(prop.get("type"))
        if wrong is not None:
            yield f"{name} wrong type", name, {**base, name: wrong}


@pytest.mark.parametrize("short", sorted(TASK_ARGUMENTS))
def test_every_body_the_schema_rejects_the_api_rejects(schema: dict[str, Any], client: Client, short: str) -> None:
    body_schema = request_schema(schema, short)
    validator = jsonschema.Draft7Validator(body_schema)
    variants = list(invalid_variants(body_schema))
    assert len(variants) >= 1 + len(body_schema.get("required", []))
    for description, field, body in variants:
        assert not validator.is_valid(body), f"schema accepts {description}: {body}"
        response = post(client, short, body)
        assert response.status_code == 400, (description, body, response.content)
        assert field in response.json(), (description, response.json())
