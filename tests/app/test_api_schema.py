"""The published OpenAPI schema equals the API: schemathesis, with every check and its default generation,
finds nothing against the live site (gunicorn, real Valkey and PostgreSQL); facts of the schema's structure;
the schema's JSON and YAML forms; and the docs page (Swagger UI), whose every asset the site serves itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import redis as redis_lib
import yaml
from django.conf import settings
from django.test import Client
from rest_framework import serializers as drf

from apps.main.api.serializers import RECIPIENTS, TASK_ARGUMENTS, SendNotificationArguments
from apps.main.tasks import CHANNELS
from embedded.network import Abort, free_port, wait_until
from embedded.supervisor import Supervisor
from portfolio_site import commands
from tests.app.procs import manage, redis_db_url
from tests.app.test_api import e2e_bodies
from tests.support.timeouts import scaled

#: The live site's broker and cache: what schemathesis enqueues waits there, where no worker of the session
#: listens (a worker would POST its webhook notifications to the generated hosts).
SCHEMA_REDIS_DB = 12
#: Test cases per operation and phase: about 900 cases in all, ~30 s on an idle 2-core machine.
MAX_EXAMPLES = 30
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


# --- The live site, as the image runs it -------------------------------------------------------------

@pytest.fixture(scope="module")
def site_env(live_env: dict[str, str], redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The test settings with the image's static files: collected (manifest, compressed) by collectstatic as
    the Dockerfile runs it, then served by WhiteNoise, instead of the test settings' finders."""
    root = tmp_path_factory.mktemp("site")
    (root / "collected_static_settings.py").write_text(
        "from portfolio_site.settings.test import *  # noqa: F403\n"
        "from portfolio_site.settings.base import STORAGES  # noqa: F401  (the image's manifest storage)\n"
        f"STATIC_ROOT = {str(root / 'static')!r}\n"
    )
    env = {**live_env, "DJANGO_SETTINGS_MODULE": "collected_static_settings", "REDIS_URL": redis_db_url(
        redis_url, SCHEMA_REDIS_DB), "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get(
            "PYTHONPATH")]))}
    collected = manage("collectstatic", "--noinput", env=env, timeout=scaled(180))
    assert collected.returncode == 0, collected.stdout + collected.stderr
    return env


@dataclass
class Site:
    url: str
    log: Path  # gunicorn's output, the app's JSON log lines included


@pytest.fixture(scope="module")
def live_site(site_env: dict[str, str], process_logs: Path) -> Iterator[Site]:
    """The site on gunicorn (the web pod's command line, bound to loopback) with no worker behind it.
    Afterwards drops what it enqueued."""
    port = free_port()
    argv = [f"127.0.0.1:{port}" if arg == f"0.0.0.0:{port}" else arg for arg in commands.web(port, workers=2)]
    supervisor = Supervisor(log_dir=process_logs, env=site_env)
    child = supervisor.spawn(f"web-schema-{port}", argv)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if child.process.poll() is not None:
            raise Abort(supervisor.describe_failure(child))
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return response.status == 200

    try:
        wait_until(answers, timeout=scaled(60), what="gunicorn to answer", interval=0.2)
        yield Site(url, child.log_path)
    finally:
        supervisor.stop_all()
        redis_lib.Redis.from_url(site_env["REDIS_URL"]).flushdb()


def fetch(url: str, **headers: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET, also for an error status."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=scaled(30)) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


# --- schemathesis: the schema equals the API -----------------------------------------------------------

@pytest.mark.django_db(transaction=True)  # pytest-django creates the test database only for such tests
def test_schemathesis_with_every_check_finds_no_failure(live_site: Site, tmp_path: Path) -> None:
    """The schemathesis command line as anyone runs it (no config file, default generation: NUL bytes and
    every Unicode category, positive and negative data, all phases), every check, the bearer token; only the
    number of examples per operation is bounded. A disagreement in either direction fails: a value the schema
    allows and the API refuses, one it forbids and the API takes, an undocumented status, header or body."""
    report = tmp_path / "report.json"
    env = {name: value for name, value in os.environ.items() if not name.startswith("SCHEMATHESIS_")}
    started = time.monotonic()
    run = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{live_site.url}/api/schema/",
         "--checks", "all", "--header", f"Authorization: Bearer {settings.API_TOKEN}",  # live_env's API_TOKEN
         "--max-examples", str(MAX_EXAMPLES), "--report", "json", "--report-json-path", str(report), "--no-color"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=scaled(600),
    )
    took = time.monotonic() - started
    assert report.exists(), run.stdout[-5000:] + run.stderr[-5000:]
    summary = json.loads(report.read_text())
    cases = summary["test_cases"]
    print(f"schemathesis: {cases['generated']} test cases, {len(summary['failures'])} failure(s), "
          f"{len(summary['errors'])} error(s) in {took:.0f}s (seed {summary['seed']})")
    server_errors = [line for line in live_site.log.read_text().splitlines() if '"level": "ERROR"' in line]
    assert run.returncode == 0 and not summary["failures"] and not summary["errors"], (
        run.stdout[-20000:] + "\nThe server's errors:\n" + "\n".join(server_errors[-20:]))
    assert summary["operations"]["tested"] == summary["operations"]["total"] == len(TASK_ARGUMENTS) + 1
    assert all(phase["status"] == "success" for name, phase in summary["phases"].items() if name != "examples")
    assert cases["generated"] >= MAX_EXAMPLES * (len(TASK_ARGUMENTS) + 1)


# --- The docs pages: Swagger UI and ReDoc, every asset from the site itself ---------------------------

class References(HTMLParser):
    """Every URL a page loads by itself: the src and href of its elements."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


#: What each kind of asset must be served as.
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def test_the_docs_page_loads_every_asset_from_the_site(live_site: Site) -> None:
    status, content_type, body = fetch(f"{live_site.url}/api/docs/", Accept=BROWSER_ACCEPT)
    assert (status, content_type.split(";")[0]) == (200, "text/html"), body[:300]
    html = body.decode()
    assert not re.search(r"https?://|(src|href|url)=[\"']//", html), "a URL off the site in the page"
    assert 'url: "/api/schema/"' in html  # the document Swagger UI renders
    parser = References()
    parser.feed(html)
    # Swagger UI's stylesheet, its two scripts and the favicon: from the collected static files (hashed names).
    assert len(parser.urls) == 4 and all(url.startswith("/static/drf_spectacular_sidecar/") for url in parser.urls)
    for url in parser.urls:
        status, content_type, asset = fetch(live_site.url + url)
        assert (status, content_type.split(";")[0]) == (200, CONTENT_TYPES[Path(url).suffix]), (url, content_type)
        assert asset, url
    status, content_type, document = fetch(f"{live_site.url}/api/schema/", Accept="application/json, */*")
    assert (status, content_type) == (200, "application/json") and json.loads(document)["paths"]


def test_swagger_ui_loads_nothing_from_elsewhere() -> None:
    """Its settings turn off the one thing Swagger UI fetches from the internet (the validator badge)."""
    page = Client().get("/api/docs/").content.decode()
    settings = json.loads(re.search(r"const swaggerSettings = (\{.*?\});", page, re.DOTALL).group(1))
    assert settings["validatorUrl"] is None


@pytest.mark.parametrize("url", ["/api/docs", "/api/docs/", "/api/schema", "/api/schema/"])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token"])
def test_the_docs_and_the_schema_are_public_with_or_without_a_slash(url: str, authorization: str | None) -> None:
    # A stale token left in a browser must not lock anyone out of the docs.
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = Client(**headers).get(url, HTTP_ACCEPT=BROWSER_ACCEPT)
    assert response.status_code == 200, response.content[:300]


# --- The schema document: JSON for a browser, YAML on asking ------------------------------------------

@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    response = Client().get("/api/schema/", {"format": "json"})
    assert (response.status_code, response["Content-Type"]) == (200, "application/json"), response.content[:300]
    return json.loads(response.content)


@pytest.mark.parametrize(("query", "accept", "media_type"), [
    ({}, BROWSER_ACCEPT, "application/json"),  # a browser shows it instead of downloading a file
    ({}, "application/vnd.oai.openapi+json", "application/vnd.oai.openapi+json"),
    ({"format": "yaml"}, BROWSER_ACCEPT, "application/vnd.oai.openapi"),
    ({}, "application/yaml", "application/yaml"),
], ids=["browser", "openapi-json", "format-yaml", "accept-yaml"])
def test_the_schema_is_one_document_in_json_or_yaml(schema: dict[str, Any], query: dict[str, str], accept: str,
                                                     media_type: str) -> None:
    response = Client().get("/api/schema/", query, HTTP_ACCEPT=accept)
    assert (response.status_code, response["Content-Type"].split(";")[0]) == (200, media_type)
    parse = json.loads if media_type.endswith("json") else yaml.safe_load
    assert parse(response.content) == schema


# --- Facts of the schema's structure -------------------------------------------------------------------

def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, operation) for path, item in schema["paths"].items() for method, operation in item.items()]


def deref(node: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """``node``, or what its $ref points to (one level: the payload's schema refers to itself)."""
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def request_body(schema: dict[str, Any], short: str) -> dict[str, Any]:
    operation = schema["paths"][f"/api/tasks/{short}/"]["post"]
    return operation["requestBody"]["content"]["application/json"]["schema"]


def body_validator(schema: dict[str, Any], short: str) -> jsonschema_rs.Draft202012Validator:
    """Validates a request body of ``short`` as OpenAPI 3.1 says: JSON Schema 2020-12, formats asserted,
    patterns read as ECMA 262 (``$`` is the end of the string). jsonschema-rs, schemathesis' own validator:
    Python's jsonschema would read a pattern with ``re.search``."""
    root = {**request_body(schema, short), "components": schema["components"]}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)


def alternatives(schema: dict[str, Any], short: str) -> list[dict[str, Any]]:
    """The object schemas a body of ``short`` may match (one, or one per notification channel)."""
    body = deref(request_body(schema, short), schema)
    return [deref(item, schema) for item in body["oneOf"]] if "oneOf" in body else [body]


def test_schema_is_openapi_3_1_listing_exactly_the_routes(schema: dict[str, Any]) -> None:
    assert schema["openapi"] == "3.1.0"  # JSON Schema 2020-12: propertyNames and const state the rules
    assert set(schema["paths"]) == {"/api/tasks/{task_id}/", *(f"/api/tasks/{short}/" for short in TASK_ARGUMENTS)}
    assert [(method, path) for path, method, _ in operations(schema) if method != "post"] == [
        ("get", "/api/tasks/{task_id}/")]


def test_schema_declares_bearer_auth_on_every_operation(schema: dict[str, Any]) -> None:
    assert schema["components"]["securitySchemes"] == {"bearerAuth": {"type": "http", "scheme": "bearer"}}
    for path, method, operation in operations(schema):
        assert operation["security"] == [{"bearerAuth": []}], (method, path)


def test_schema_documents_the_error_responses_of_every_operation(schema: dict[str, Any]) -> None:
    for path, method, operation in operations(schema):
        expected = {"400", "401", "404", "413", "503"} | ({"415"} if method == "post" else set())
        assert expected <= set(operation["responses"]), (method, path, sorted(operation["responses"]))
        for code in expected - ({"400"} if method == "post" else set()):  # a body's 400 names the fields
            body = deref(operation["responses"][code]["content"]["application/json"]["schema"], schema)
            assert "detail" in body["properties"] and "detail" in body["required"], (method, path, code, body)
        assert "Retry-After" in operation["responses"]["503"].get("headers", {}), (method, path)


@pytest.mark.parametrize("short", sorted(TASK_ARGUMENTS))
def test_request_schema_states_each_rule_of_the_serializer(schema: dict[str, Any], short: str) -> None:
    fields = TASK_ARGUMENTS[short]().fields
    required = sorted(name for name, field in fields.items() if field.required)
    assert schema["paths"][f"/api/tasks/{short}/"]["post"]["requestBody"].get("required", False) == bool(required)
    for body in alternatives(schema, short):
        assert body["type"] == "object" and body["additionalProperties"] is False  # unknown keys are refused
        assert set(body.get("properties", {})) == set(fields)
        assert sorted(body.get("required", [])) == required
        for name, field in fields.items():
            prop = deref(body["properties"][name], schema)
            if isinstance(field, drf.ListField):
                assert prop.get("minItems") == field.min_length, name
                field, prop = field.child, deref(prop["items"], schema)
            if isinstance(field, drf.ChoiceField):  # all choices, or the one of this alternative
                assert prop["enum"] == list(field.choices) if "const" not in prop else prop["const"] in field.choices
            elif isinstance(field, drf.IntegerField):
                assert (prop["type"], prop.get("minimum"), prop.get("maximum")) == (
                    "integer", field.min_value, field.max_value), name
            elif isinstance(field, drf.CharField) and not field.allow_blank:
                assert (prop["type"], prop.get("minLength"), prop.get("maxLength")) == (
                    "string", field.min_length, field.max_length), name


@pytest.mark.parametrize("short", sorted(TASK_ARGUMENTS))
def test_the_examples_of_the_docs_page_are_valid_bodies(schema: dict[str, Any], short: str) -> None:
    examples = schema["paths"][f"/api/tasks/{short}/"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert [example["value"] for example in examples.values()] == list(TASK_ARGUMENTS[short].examples.values())
    validator = body_validator(schema, short)
    for body in TASK_ARGUMENTS[short].examples.values():
        assert validator.is_valid(body) and TASK_ARGUMENTS[short](data=body).is_valid(), body


def test_each_notification_channel_is_one_alternative_with_its_recipient_rule(schema: dict[str, Any]) -> None:
    channels = [body["properties"]["channel"]["const"] for body in alternatives(schema, "send_notification")]
    assert channels == list(CHANNELS) == list(RECIPIENTS)
    discriminator = deref(request_body(schema, "send_notification"), schema)["discriminator"]
    assert (discriminator["propertyName"], list(discriminator["mapping"])) == ("channel", channels)


RECIPIENT_SAMPLES = ["user@example.com", "first.last+tag@mail.example.org", "https://hooks.example.com/x?a=1",
                     "http://127.0.0.1:8080/hook", "user-9", "not an address", "ftp://files.example.com/x",
                     "user@localhost", "https://", " user@example.com", "user@example.com\n", "https://a.example:0/",
                     " ", "\t", "u" * 501]


@pytest.mark.parametrize("channel", CHANNELS)
def test_the_schema_and_the_serializer_agree_on_every_recipient(schema: dict[str, Any], channel: str) -> None:
    validator = body_validator(schema, "send_notification")
    for recipient in RECIPIENT_SAMPLES:
        body = {"channel": channel, "recipient": recipient, "message": "m"}
        assert validator.is_valid(body) == SendNotificationArguments(data=body).is_valid(), (channel, recipient)
    assert any(validator.is_valid({"channel": channel, "recipient": r, "message": "m"}) for r in RECIPIENT_SAMPLES)


DATE_TIMES = ["2024-05-01T12:00:00Z", "2024-05-01t12:00:00.123456789z", "2024-05-01T12:00:00+23:59",
              "1900-01-01T00:00:00+01:00", "2999-12-31T23:59:59-12:00", "2024-02-29T00:00:00Z",
              "2023-02-29T00:00:00Z", "2024-05-01 12:00:00Z", "2024-05-01T12:00:00", "2024-05-01",
              "2024-05-01T12:00:60Z", "0001-01-01T00:00:00Z", "2024-05-01T24:00:00Z", "yesterday"]


def test_the_schema_and_the_serializer_agree_on_every_date_time(schema: dict[str, Any]) -> None:
    validator = body_validator(schema, "process_user_action")
    verdicts = []
    for value in DATE_TIMES:
        body = {"action_id": "a", "user_id": "u", "action": "x", "occurred_at": value}
        verdicts.append(validator.is_valid(body))
        assert verdicts[-1] == TASK_ARGUMENTS["process_user_action"](data=body).is_valid(), value
    assert verdicts.count(True) == 6, verdicts


@pytest.mark.django_db  # the token is looked up
@pytest.mark.parametrize("short", sorted(TASK_ARGUMENTS))
def test_the_schema_refuses_nul_wherever_the_api_does(schema: dict[str, Any], short: str) -> None:
    """Every string of a body (also a key or a string deep in the free-form payload) holding U+0000 is a 400
    from the API, and invalid by the schema; the body without it is valid by the schema."""
    validator = body_validator(schema, short)
    body = e2e_bodies()[short]
    assert validator.is_valid(body), list(validator.iter_errors(body))
    variants = [{**body, key: value + "\x00"} for key, value in body.items() if isinstance(value, str)]
    if "payload" in body:
        variants += [{**body, "payload": payload} for payload in (
            {"k\x00": 1}, {"k": "a\x00"}, {"a": [{"b": ["ok", "\x00"]}]}, {"a": {"b\x00": None}})]
    assert variants or short in ("update_analytics", "cleanup_temp_files", "health_check", "generate_reports",
                                 "backup_data")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {settings.API_TOKEN}")
    for variant in variants:
        assert not validator.is_valid(variant), variant
        response = api.post(f"/api/tasks/{short}/", data=json.dumps(variant), content_type="application/json")
        assert response.status_code == 400, (variant, response.content)


def test_a_blank_allowing_field_is_valid_blank_by_the_schema(schema: dict[str, Any]) -> None:
    """drf-spectacular publishes a blank-allowing field as oneOf(pattern, empty): the pattern must not match
    "" too, or an empty subject would match both and be invalid."""
    validator = body_validator(schema, "send_notification")
    for subject, valid in (("", True), ("hello", True), ("a\x00", False), ("s" * 201, False)):
        assert validator.is_valid({"channel": "in_app", "recipient": "u", "message": "m", "subject": subject}) == valid
