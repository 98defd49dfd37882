"""Error reports without secrets: Django's debug page (DEBUG=True), its plain-text variant and the
admins' error e-mails.

Django hides settings and META entries whose *name* looks secret (API|AUTH|TOKEN|KEY|SECRET|PASS|
SIGNATURE); ours carry their secrets in URLs (REDIS_URL, DATABASE_URL, CELERY_BROKER_URL, SENTRY_DSN,
CACHES' LOCATION), and runserver copies the whole environment into request.META. So names are matched
more broadly, and every value that holds a URL with a password has the password masked — in settings,
META, POST data, frame variables, and finally in the rendered report itself (exception messages too).
Besides, the process's own secrets (``secret_values``) are masked wherever their value shows, whatever holds
them: a local variable, a form field, an exception's message. Unlike Django's own filter, ours also works with
DEBUG on: that is when the page is shown. The logs use the same masking (apps.main.logging), and so do the
workers' answers to ``inspect conf`` (apps.main.worker_control), which Flower shows.
"""

from __future__ import annotations

import contextlib
import os
import pprint
import re
from typing import Any
from urllib.parse import urlsplit

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, QueryDict
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

SUBSTITUTE = SafeExceptionReporterFilter.cleansed_substitute

#: Names of settings, META keys, POST and GET parameters whose values are never shown.
SECRET_NAMES = re.compile(
    r"URL|URI|DSN|API|TOKEN|KEY|SECRET|PASS|PWD|AUTH|CREDENTIAL|SIGNATURE|COOKIE|PRIVATE|SALT",
    re.IGNORECASE,
)
#: Names of local variables whose text is never shown (narrower: ``key`` or ``url`` locals are common).
SECRET_VARIABLES = re.compile(r"PASS|PWD|SECRET|TOKEN|CREDENTIAL|DSN|API_?KEY|PRIVATE", re.IGNORECASE)
# Bounded repetitions: masking stays linear in the report's size whatever text a request put in it.
#: ``scheme://user:PASSWORD@host``: the password (anything up to the ``@``, ``/`` included).
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.\-]{0,30}://[^\s/?#@:'\"<>]{0,256}:)[^\s@'\"<>]{1,256}(?=@)", re.IGNORECASE
)
#: ``password=…``, ``db_password=…`` and the like in a query string or a form body.
_QUERY_SECRET = re.compile(
    r"(?P<head>\b\w{0,40}(?:password|passwd|pwd|secret|token|api_?key|access_?key|auth)\w{0,40}=)[^&\s#'\"<>]+",
    re.IGNORECASE,
)


#: Values shorter than this are not masked by value: they would hide unrelated text (and are no real secret).
MIN_SECRET_LENGTH = 8


#: secret_values() by the FLOWER_BASIC_AUTH it saw: every log record asks (apps.main.logging), the settings
#: change only under override_settings (setting_changed empties it).
_secret_values: dict[str | None, list[str]] = {}


@receiver(setting_changed, dispatch_uid="apps.main.reporting.forget_secret_values")
def _forget_secret_values(**_: Any) -> None:
    _secret_values.clear()


def secret_values() -> list[str]:
    """This process's secrets, longest first: the settings' secret key(s), API token and payload encryption keys,
    the passwords of its Redis (and Redis Sentinel), broker and database connections, and Flower's basic-auth
    passwords. Empty until the settings are loaded (a log record can be made before that)."""
    from django.conf import settings

    from portfolio_site import environment as env

    if not settings.configured:
        return []
    flower_auth = os.environ.get(env.FLOWER_BASIC_AUTH)
    if (known := _secret_values.get(flower_auth)) is None:
        known = _secret_values[flower_auth] = _collect_secret_values(settings, flower_auth)
    return known


def _collect_secret_values(settings: Any, flower_auth: str | None) -> list[str]:
    values = [getattr(settings, "SECRET_KEY", ""), *getattr(settings, "SECRET_KEY_FALLBACKS", ()),
              getattr(settings, "API_TOKEN", ""), *getattr(settings, "PAYLOAD_ENCRYPTION_KEYS", ()),
              getattr(settings, "REDIS_SENTINEL_PASSWORD", None) or ""]
    for name in ("REDIS_URL", "CELERY_BROKER_URL", "DATABASE_URL"):
        url = getattr(settings, name, None)
        if isinstance(url, str):
            with contextlib.suppress(ValueError):  # not a URL
                values.append(urlsplit(url).password or "")
    values += [database.get("PASSWORD") or "" for database in getattr(settings, "DATABASES", {}).values()]
    values += [pair.partition(":")[2] for pair in (flower_auth or "").split(",")]
    return sorted({value for value in values if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH},
                  key=len, reverse=True)


def mask_secrets(text: str) -> str:
    """``text`` with the passwords of URLs, secret query parameters and this process's secrets replaced by stars."""
    # The checks in front skip each pattern where it cannot match: every log record passes here.
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda match: match["head"] + SUBSTITUTE, text)
    if "=" in text:
        text = _QUERY_SECRET.sub(lambda match: match["head"] + SUBSTITUTE, text)
    for value in secret_values():
        text = text.replace(value, SUBSTITUTE)
    return text


class _Shown:
    """A value as the report prints it, its secrets masked (the report pprints what it is given)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class SecretHidingFilter(SafeExceptionReporterFilter):
    hidden_settings = SECRET_NAMES

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        cleansed = super().cleanse_setting(key, value)  # recurses through dicts/lists back into this method
        return mask_secrets(cleansed) if isinstance(cleansed, str) else cleansed

    def cleanse_query(self, params: QueryDict) -> QueryDict:
        cleansed = params.copy()
        for key, values in params.lists():
            cleansed.setlist(key, [self.cleanse_setting(key, value) for value in values])
        return cleansed

    def get_post_parameters(self, request: HttpRequest | None) -> Any:
        parameters = super().get_post_parameters(request)
        return self.cleanse_query(parameters) if isinstance(parameters, QueryDict) else parameters

    def get_traceback_frame_variables(self, request: HttpRequest | None, tb_frame: Any) -> list[tuple[str, Any]]:
        shown = []
        for name, value in super().get_traceback_frame_variables(request, tb_frame):
            if SECRET_VARIABLES.search(name) and isinstance(value, (str, bytes)):
                value = SUBSTITUTE
            else:
                try:
                    text = pprint.pformat(value)
                except Exception:  # a repr that fails: the report says so itself
                    text = None
                if text is not None and (masked := mask_secrets(text)) != text:
                    value = _Shown(masked)
            shown.append((name, value))
        return shown


class SecretHidingReporter(ExceptionReporter):
    """Cleanses the query parameters too (Django shows request.GET as is), and masks the finished
    report once more: an exception's message can quote a URL."""

    def get_traceback_data(self) -> dict[str, Any]:
        data = super().get_traceback_data()
        if self.request is not None and isinstance(self.filter, SecretHidingFilter):
            data["request_GET_items"] = self.filter.cleanse_query(self.request.GET).items()
        return data

    def get_traceback_html(self) -> str:
        return mask_secrets(super().get_traceback_html())

    def get_traceback_text(self) -> str:
        return mask_secrets(super().get_traceback_text())
