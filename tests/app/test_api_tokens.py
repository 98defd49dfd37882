"""Task-level access control of the API on the real database and Redis: tokens stored as digests, each
limited to its tasks and result reads, revocation and expiry, the per-token rate limit (429 + Retry-After),
the audit trail of every call, the management command and the admin pages."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
import redis as redis_lib
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from apps.main.api import ratelimit, tokens
from apps.main.api.auth import INVALID_TOKEN
from apps.main.models import ApiAuditEvent, ApiToken
from apps.main.redis_keys import API_RATE_LIMIT_KEY
from embedded.network import wait_until
from tests.support.timeouts import scaled

pytestmark = pytest.mark.django_db

#: A body every task refuses after the token's checks passed (400): proves the call got through them
#: without enqueueing anything.
REFUSED_BODY = {"unknown": 1}


def bearer(token: str, **extra: Any) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}", **extra)


def post(client: Client, short: str, body: Any = REFUSED_BODY, **headers: str) -> Any:
    return client.post(f"/api/tasks/{short}/", data=json.dumps(body), content_type="application/json", **headers)


def status(client: Client, task_id: str | None = None) -> Any:
    return client.get(f"/api/tasks/{task_id or uuid.uuid4()}/")


def issue(name: str = "svc", **scope: Any) -> tuple[ApiToken, str]:
    scope.setdefault("tasks", ["health_check"])
    return tokens.issue(name, **scope)


def detail(response: Any, expected_status: int) -> str:
    assert response.status_code == expected_status, (response.status_code, response.content[:300])
    return response.json()["detail"]


# --- Storage -------------------------------------------------------------------------------------

def test_a_token_is_stored_as_its_sha256_digest_only() -> None:
    record, token = issue(tasks=["health_check", "send_notification"], can_read_results=True)
    assert token.startswith(tokens.TOKEN_PREFIX) and len(token) >= 40
    assert record.digest == hashlib.sha256(token.encode()).hexdigest()
    assert record.shown_part == token[:tokens.SHOWN_CHARACTERS]
    with connection.cursor() as cursor:  # every column of every token row, as the database holds it
        cursor.execute(f"SELECT * FROM {ApiToken._meta.db_table}")
        stored = repr(cursor.fetchall())
    assert token not in stored and token[tokens.SHOWN_CHARACTERS:] not in stored
    assert post(bearer(token), "health_check").status_code == 400  # and it authenticates


def test_tokens_are_random_and_unique() -> None:
    secrets = {issue(f"svc-{n}")[1] for n in range(20)}
    assert len(secrets) == 20


def test_a_token_can_only_name_tasks_of_the_allow_list() -> None:
    with pytest.raises(ValueError, match=r"unknown task.*delete_everything"):
        issue(tasks=["health_check", "delete_everything"])
    assert not ApiToken.objects.filter(name="svc").exists()


# --- Scope ---------------------------------------------------------------------------------------

def test_a_token_enqueues_only_its_own_tasks() -> None:
    _, token = issue(tasks=["health_check"])
    client = bearer(token)
    accepted = post(client, "health_check", {})
    assert accepted.status_code == 202, accepted.content
    assert "may not enqueue send_notification" in detail(post(client, "send_notification"), 403)
    assert "may not enqueue backup_data" in detail(post(client, "backup_data", {}), 403)


def test_the_scope_is_checked_before_the_body() -> None:
    # A token outside its scope learns nothing of the task's arguments: 403 whatever the body.
    _, token = issue(tasks=["health_check"])
    for body in ({}, REFUSED_BODY, [1, 2]):
        assert post(bearer(token), "generate_reports", body).status_code == 403


def test_reading_results_needs_the_flag() -> None:
    _, enqueue_only = issue("enqueue-only", tasks=["health_check"])
    task_id = post(bearer(enqueue_only), "health_check", {}).json()["id"]
    assert "may not read task results" in detail(status(bearer(enqueue_only), task_id), 403)
    _, reader = issue("reader", tasks=[], can_read_results=True)
    assert status(bearer(reader), task_id).json()["id"] == task_id
    assert post(bearer(reader), "health_check", {}).status_code == 403


def test_a_scope_change_applies_to_the_next_call() -> None:
    record, token = issue(tasks=["health_check"])
    assert post(bearer(token), "update_analytics").status_code == 403
    record.tasks = ["health_check", "update_analytics"]
    record.save()
    assert post(bearer(token), "update_analytics").status_code == 400


# --- Revocation and expiry -----------------------------------------------------------------------

def test_revoked_expired_and_unknown_tokens_get_the_same_401() -> None:
    revoked, revoked_token = issue("revoked")
    expired, expired_token = issue("expired", expires_at=timezone.now() + timedelta(seconds=1))
    assert post(bearer(revoked_token), "health_check").status_code == 400
    revoked.revoked_at = timezone.now()
    revoked.save()
    ApiToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    unknown = tokens.new_token()
    for token in (revoked_token, expired_token, unknown):
        response = post(bearer(token), "health_check")
        assert detail(response, 401) == INVALID_TOKEN  # which of the three: the audit's business only
        assert response["WWW-Authenticate"] == "Bearer"
    reasons = dict(ApiAuditEvent.objects.filter(status=401).values_list("token_name", "reason"))
    assert reasons == {"revoked": "revoked token", "expired": "expired token", "": "unknown token"}


# --- The environment's token ---------------------------------------------------------------------

def test_api_token_from_the_environment_is_a_full_token_after_migrate() -> None:
    record = ApiToken.objects.get(name=tokens.ENVIRONMENT_TOKEN_NAME)  # made by the test database's migrate
    assert record.digest == tokens.digest(settings.API_TOKEN)
    assert record.tasks == tokens.task_names() and record.can_read_results


def test_changing_api_token_replaces_the_environment_token_and_revocation_sticks() -> None:
    old = settings.API_TOKEN
    assert tokens.sync_environment_token(old) == "unchanged"
    assert tokens.sync_environment_token("a-new-environment-token-value") == "replaced (API_TOKEN changed)"
    assert post(bearer(old), "health_check").status_code == 401
    assert post(bearer("a-new-environment-token-value"), "health_check").status_code == 400
    ApiToken.objects.filter(name=tokens.ENVIRONMENT_TOKEN_NAME).update(revoked_at=timezone.now())
    assert tokens.sync_environment_token(old) == "revoked (kept revoked)"
    assert post(bearer(old), "health_check").status_code == 401
    assert tokens.sync_environment_token("") == "none configured"


# --- Rate limit ----------------------------------------------------------------------------------

def test_a_token_over_its_rate_gets_429_with_retry_after(redis_client: redis_lib.Redis) -> None:
    record, token = issue(rate_limit=3, can_read_results=True)
    _, other = issue("other", rate_limit=3)
    client = bearer(token)
    assert [post(client, "health_check").status_code for _ in range(3)] == [400, 400, 400]
    refused = post(client, "health_check")
    assert "3 requests per 60 s" in detail(refused, 429)
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert status(client).status_code == 429  # every route of the token counts
    assert post(bearer(other), "health_check").status_code == 400  # per token, not global
    # The counter dies with its window: no key that could refuse the token for good.
    keys = redis_client.keys(API_RATE_LIMIT_KEY.format(token=record.pk, window="*"))
    assert keys and all(0 < redis_client.pttl(key) <= 61_000 for key in keys)
    event = ApiAuditEvent.objects.filter(status=429).first()
    assert event and event.token_id == record.pk and "Rate limit" in event.reason


def test_the_default_rate_applies_to_tokens_without_their_own() -> None:
    _, token = issue()
    with override_settings(API_RATE_LIMIT=2):
        codes = [post(bearer(token), "health_check").status_code for _ in range(3)]
    assert codes == [400, 400, 429]


def test_a_refused_token_is_served_again_in_the_next_window() -> None:
    _, token = issue(rate_limit=1)
    with override_settings(API_RATE_LIMIT_WINDOW_SECONDS=1):
        post(bearer(token), "health_check")
        wait_until(lambda: post(bearer(token), "health_check").status_code == 429, timeout=scaled(5),
                   what="the second call of the window refused")
        wait_until(lambda: post(bearer(token), "health_check").status_code == 400, timeout=scaled(10),
                   what="a call in a new window served")


def test_windows_count_separately_and_retry_after_reaches_the_window_end() -> None:
    subject = f"unit-{uuid.uuid4()}"
    start = 1_000_020.0  # a window of 60 s starts at 1 000 020 (a multiple of 60)
    assert [ratelimit.hit(subject, 2, window=60, now=start + t).allowed for t in (0, 1, 2)] == [True, True, False]
    assert ratelimit.hit(subject, 2, window=60, now=start + 45.2).retry_after == 15
    assert ratelimit.hit(subject, 2, window=60, now=start + 60).allowed  # the next window


# --- Audit trail ---------------------------------------------------------------------------------

def test_every_call_of_a_task_route_is_audited_with_token_task_time_and_client() -> None:
    record, token = issue(tasks=["health_check"])
    before = timezone.now()
    accepted = post(bearer(token), "health_check", {})
    post(bearer(token), "send_notification")                 # 403, out of scope
    post(bearer(token), "health_check")                       # 400, invalid body
    status(bearer(token), accepted.json()["id"])              # 403, no result reads
    post(Client(), "health_check")                            # 401, no token
    events = list(ApiAuditEvent.objects.order_by("at", "pk"))
    assert [(e.action, e.task, e.status, e.allowed) for e in events] == [
        ("enqueue", "health_check", 202, True),
        ("enqueue", "send_notification", 403, False),
        ("enqueue", "health_check", 400, False),
        ("read_result", "", 403, False),
        ("enqueue", "health_check", 401, False),
    ]
    assert events[0].task_id == accepted.json()["id"] and events[3].task_id == accepted.json()["id"]
    assert all(e.token_id == record.pk and e.token_name == "svc" for e in events[:4]) and events[4].token is None
    assert all(e.client_address == "127.0.0.1" and before <= e.at <= timezone.now() for e in events)
    assert "may not enqueue send_notification" in events[1].reason and "unknown" in events[2].reason
    assert events[4].reason == "Authentication credentials were not provided."


def test_the_client_address_comes_from_the_trusted_proxies_only() -> None:
    _, token = issue()
    forwarded = {"HTTP_X_FORWARDED_FOR": "203.0.113.9, 198.51.100.7"}
    post(bearer(token), "health_check", **forwarded)  # no proxy trusted: the header is the caller's word
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}):
        post(bearer(token), "health_check", **forwarded)
    assert list(ApiAuditEvent.objects.order_by("pk").values_list("client_address", flat=True)) == [
        "127.0.0.1", "198.51.100.7"]


def test_an_audit_event_is_also_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    _, token = issue()
    with caplog.at_level("INFO", logger="apps.main.api.audit"):
        post(bearer(token), "send_notification")
    (line,) = [r for r in caplog.records if r.name == "apps.main.api.audit"]
    assert line.audit_status == 403 and line.audit_token_name == "svc" and line.audit_task == "send_notification"
    assert token not in caplog.text


def test_old_audit_events_are_pruned_by_the_hourly_cleanup() -> None:
    from apps.main.tasks import cleanup_temp_files

    _, token = issue()
    post(bearer(token), "health_check")
    post(bearer(token), "health_check")
    old = ApiAuditEvent.objects.order_by("pk").first()
    ApiAuditEvent.objects.filter(pk=old.pk).update(at=timezone.now() - timedelta(days=91))
    assert cleanup_temp_files.run()["audit_events_removed"] == 1
    assert ApiAuditEvent.objects.count() == 1


# --- Management command --------------------------------------------------------------------------

def run(*args: str) -> str:
    out = StringIO()
    call_command("api_tokens", *args, stdout=out)
    return out.getvalue()


def test_the_command_creates_lists_and_revokes_tokens() -> None:
    token = run("create", "billing", "--tasks", "send_notification,process_user_action", "--read-results",
                "--rate-limit", "120", "--expires-in", "30d", "--quiet").strip()
    record = ApiToken.objects.get(name="billing")
    assert record.digest == tokens.digest(token) and record.rate_limit == 120 and record.can_read_results
    assert record.tasks == ["process_user_action", "send_notification"]
    assert timedelta(days=29) < record.expires_at - timezone.now() <= timedelta(days=30)
    assert post(bearer(token), "send_notification").status_code == 400
    assert post(bearer(token), "health_check").status_code == 403

    listing = run("list")
    assert "billing" in listing and record.shown_part in listing and token not in listing
    rows = {row["name"]: row for row in json.loads(run("list", "--json"))}
    assert rows["billing"]["state"] == "active" and rows["billing"]["last_used_at"]  # authenticated
    assert rows[tokens.ENVIRONMENT_TOKEN_NAME]["tasks"] == tokens.task_names()

    assert "Revoked" in run("revoke", "billing")
    assert post(bearer(token), "send_notification").status_code == 401
    assert json.loads(run("list", "--json"))[-1]["state"] == "revoked token"
    assert "already revoked" in run("revoke", str(record.pk))


def test_the_command_prints_the_token_once_with_its_scope() -> None:
    out = run("create", "reporter", "--all-tasks")
    token = out.strip().splitlines()[-1]
    assert ApiToken.objects.get(name="reporter").digest == tokens.digest(token)
    assert "may not read results" in out and "not stored" in out


@pytest.mark.parametrize(("args", "message"), [
    (["create", "x", "--tasks", "nope"], "unknown task"),
    (["create", tokens.ENVIRONMENT_TOKEN_NAME, "--all-tasks"], "already exists"),
    (["create", "x", "--all-tasks", "--expires-in", "soon"], "duration"),
    (["create", "x", "--all-tasks", "--rate-limit", "0"], "at least 1"),
    (["revoke", "nobody"], "no API token named 'nobody'"),
])
def test_the_command_refuses_bad_input_with_a_reason(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run(*args)


# --- Admin ---------------------------------------------------------------------------------------

@pytest.fixture
def admin_client_(admin_user: Any) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def test_the_admin_issues_a_token_shown_once(admin_client_: Client) -> None:
    page = admin_client_.post(reverse("admin:main_apitoken_add"), {
        "name": "from-admin", "tasks": ["health_check", "generate_reports"], "can_read_results": "on",
        "rate_limit": "", "expires_at_0": "", "expires_at_1": "",
    })
    assert page.status_code == 200, page.content[:500]
    assert "no-store" in page["Cache-Control"]
    record = ApiToken.objects.get(name="from-admin")
    token = page.context["secret"]
    assert token.encode() in page.content and record.digest == tokens.digest(token)
    assert record.tasks == ["generate_reports", "health_check"] and record.created_by == "admin:admin"
    assert post(bearer(token), "generate_reports").status_code == 400
    # Never again: not on the list, not on its own page.
    for url in (reverse("admin:main_apitoken_changelist"), reverse("admin:main_apitoken_change", args=[record.pk])):
        shown = admin_client_.get(url)
        assert shown.status_code == 200 and token.encode() not in shown.content
        assert record.shown_part.encode() in shown.content


def test_the_admin_revokes_and_never_deletes(admin_client_: Client) -> None:
    record, token = issue()
    response = admin_client_.post(reverse("admin:main_apitoken_changelist"),
                                  {"action": "revoke_selected", "_selected_action": [record.pk]})
    assert response.status_code == 302
    assert post(bearer(token), "health_check").status_code == 401
    assert admin_client_.get(reverse("admin:main_apitoken_delete", args=[record.pk])).status_code == 403
    audit = admin_client_.get(reverse("admin:main_apiauditevent_changelist"))
    assert audit.status_code == 200 and b"revoked token" in audit.content


# --- The schema says so --------------------------------------------------------------------------

def test_the_schema_documents_403_and_429_with_retry_after_on_every_task_route() -> None:
    schema = Client().get("/api/schema/", {"format": "json"}).json()
    operations = [op for path, item in schema["paths"].items() if path.startswith("/api/tasks/")
                  for op in item.values() if isinstance(op, dict) and "responses" in op]
    assert len(operations) == len(tokens.task_names()) + 1  # every enqueue and the status read
    for operation in operations:
        responses = operation["responses"]
        assert {"401", "403", "429"} <= set(responses), operation["operationId"]
        assert "Retry-After" in responses["429"].get("headers", {}), operation["operationId"]
