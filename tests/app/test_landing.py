"""The first hour on a development stack: the landing page at ``/`` (DEBUG only; with DEBUG off it is the
JSON 404 of any unknown path) and the admin user that the local stack creates once and never resets."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.urls import Resolver404, resolve

from apps.main.management.commands.ensure_local_admin import LOCAL_ADMIN_USER, AdminState, ensure_local_admin
from portfolio_site import environment as env_names
from portfolio_site.ports import FLOWER_PORT


class PageParts(HTMLParser):
    """The links of a page, and anything it would load from elsewhere (scripts, stylesheets, images)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.loads: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])
        if tag in ("script", "link", "img", "iframe") or "src" in values:
            self.loads.append(f"<{tag} {values}>")


def page_parts(html: str) -> PageParts:
    parts = PageParts()
    parts.feed(html)
    return parts


def test_landing_page_links_every_page_of_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    # As start_celery_services.py passes them to its web process.
    monkeypatch.setenv(env_names.FLOWER_URL, "http://127.0.0.1:5601/")
    monkeypatch.setenv(env_names.WORKER_METRICS_URLS,
                       "high-priority=http://127.0.0.1:9901/metrics,default=http://127.0.0.1:9902/metrics")
    with override_settings(DEBUG=True):
        response = Client().get("/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    parts = page_parts(response.content.decode())
    assert set(parts.links) >= {
        "/admin/", "/api/docs/", "/api/schema/", "http://127.0.0.1:5601/", "/metrics",
        "http://127.0.0.1:9901/metrics", "http://127.0.0.1:9902/metrics", "/readyz",
    }
    assert parts.loads == []  # one self-contained page: no script, no stylesheet or font from anywhere
    for link in parts.links:  # every local link is a real view, not the API's catch-all 404
        if link.startswith("/"):
            assert resolve(link).url_name != "api-route-not-found", link
    assert resolve("/api/docs/").url_name == "api-docs"


def test_landing_page_links_flower_on_its_default_port_when_the_stack_names_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(env_names.FLOWER_URL, raising=False)
    monkeypatch.delenv(env_names.WORKER_METRICS_URLS, raising=False)
    with override_settings(DEBUG=True):
        links = page_parts(Client().get("/").content.decode()).links
    assert f"http://127.0.0.1:{FLOWER_PORT}/" in links
    assert not [link for link in links if link.endswith("/metrics") and link != "/metrics"]


def test_without_debug_the_root_is_the_json_404_of_any_unknown_path() -> None:
    client = Client()
    with override_settings(DEBUG=False):
        root, unknown = client.get("/"), client.get("/no-such-page")
    assert resolve("/").url_name == "landing"
    with pytest.raises(Resolver404):
        resolve("/no-such-page")
    assert (root.status_code, unknown.status_code) == (404, 404)
    assert root["Content-Type"] == unknown["Content-Type"] == "application/json"
    assert root.json() == unknown.json() == {"detail": "not found"}


@pytest.mark.django_db
@override_settings(DEBUG=True)
def test_local_admin_is_created_once_and_never_reset() -> None:
    user_model = get_user_model()
    assert ensure_local_admin("saved-password") is AdminState.CREATED
    admin = user_model.objects.get(username=LOCAL_ADMIN_USER)
    assert admin.is_superuser and admin.is_staff and admin.is_active
    assert admin.check_password("saved-password")

    assert ensure_local_admin("saved-password") is AdminState.KEPT
    # Another saved password (a database made elsewhere): reported, never applied.
    assert ensure_local_admin("another-password") is AdminState.MISMATCH
    admin.refresh_from_db()
    assert admin.check_password("saved-password")

    admin.set_password("changed-in-the-admin")
    admin.save()
    assert ensure_local_admin("saved-password") is AdminState.MISMATCH
    admin.refresh_from_db()
    assert admin.check_password("changed-in-the-admin")
    assert user_model.objects.filter(username=LOCAL_ADMIN_USER).count() == 1


@pytest.mark.django_db
def test_the_command_takes_the_password_from_the_environment_and_refuses_without_debug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(env_names.LOCAL_ADMIN_PASSWORD, "from-the-environment")
    with override_settings(DEBUG=False), pytest.raises(CommandError, match="createsuperuser"):
        call_command("ensure_local_admin")
    assert not get_user_model().objects.filter(username=LOCAL_ADMIN_USER).exists()

    with override_settings(DEBUG=True):
        assert call_command("ensure_local_admin").strip() == f"admin user {LOCAL_ADMIN_USER!r}: created"
    assert get_user_model().objects.get(username=LOCAL_ADMIN_USER).check_password("from-the-environment")
