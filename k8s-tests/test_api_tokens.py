"""Task-level access control on a live release: a token issued with `manage.py api_tokens` in a web pod is
limited to its scope through the web Service, and refused once revoked."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from k8s_support.podexec import run_in_pod
from k8s_support.release import ClusterReader


def manage(core: Any, reader: ClusterReader, *args: str) -> str:
    pods = reader.pods(reader.release.selector("web"))
    assert pods, "no running web pod to run manage.py api_tokens in"
    result = run_in_pod(core, reader.release.namespace, pods[0].metadata.name, "web",
                        ["python", "manage.py", "api_tokens", *args], timeout=120)
    assert result.returncode == 0, f"manage.py api_tokens {' '.join(args)}: {result.describe()}"
    return result.stdout


@pytest.fixture
def scoped_token(core: Any, reader: ClusterReader) -> Iterator[tuple[str, str]]:
    """(name, token) of a token that may enqueue health_check only and not read results."""
    name = f"k8s-tests-{uuid.uuid4().hex[:8]}"
    token = manage(core, reader, "create", name, "--tasks", "health_check", "--quiet").strip().splitlines()[-1]
    yield name, token
    manage(core, reader, "revoke", name)


def call(web_url: str, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> requests.Response:
    return requests.request(method, f"{web_url}{path}", json=body, timeout=30,
                            headers={"Authorization": f"Bearer {token}"})


def test_a_token_issued_in_the_cluster_is_held_to_its_scope_and_revocable(
    web_url: str, core: Any, reader: ClusterReader, scoped_token: tuple[str, str]
) -> None:
    name, token = scoped_token
    accepted = call(web_url, token, "POST", "/api/tasks/health_check/", {})
    assert accepted.status_code == 202, accepted.text
    out_of_scope = call(web_url, token, "POST", "/api/tasks/send_notification/",
                        {"channel": "in_app", "recipient": "u-1", "message": "hi"})
    assert out_of_scope.status_code == 403 and "send_notification" in out_of_scope.json()["detail"], out_of_scope.text
    reading = call(web_url, token, "GET", f"/api/tasks/{accepted.json()['id']}/")
    assert reading.status_code == 403 and "read task results" in reading.json()["detail"], reading.text

    listing = manage(core, reader, "list")
    assert name in listing and token not in listing  # only its first characters are ever shown
    manage(core, reader, "revoke", name)
    revoked = call(web_url, token, "POST", "/api/tasks/health_check/", {})
    assert revoked.status_code == 401, revoked.text


def test_the_environment_token_may_do_everything(task_api: Any) -> None:
    """API_TOKEN of the release's Secret became the token `environment` when the migrations ran."""
    task = task_api.submit("health_check")
    assert task_api.status(task["id"])["id"] == task["id"]
