"""API tokens: issued once, stored as their SHA-256 digest only, each with its own scope.

A token is 256 random bits, so a plain SHA-256 is enough to make a stolen table useless (no salt or slow
hash needed: there is nothing to guess); it also lets a request find its token with one indexed lookup.

The environment's ``API_TOKEN`` (the chart's generated Secret, ``make up``'s stack.env) becomes the token
named ``environment`` at every ``migrate`` (post_migrate): every task, results readable. Changing the
variable replaces its digest (rotation); a revoked environment token stays revoked.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

#: Every issued token starts with it: recognisable in a leak scan, a log or a secret scanner.
TOKEN_PREFIX = "cst_"
#: How many characters of a token are kept in clear to tell tokens apart (the prefix and 8 more).
SHOWN_CHARACTERS = len(TOKEN_PREFIX) + 8
#: The token made from the API_TOKEN environment variable.
ENVIRONMENT_TOKEN_NAME = "environment"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def shown_part(token: str) -> str:
    return token[:SHOWN_CHARACTERS]


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def task_names() -> list[str]:
    """The tasks a token can be allowed to enqueue: the API's allow-list."""
    from apps.main.api.serializers import TASK_ARGUMENTS

    return sorted(TASK_ARGUMENTS)


def checked_tasks(tasks: Iterable[str]) -> list[str]:
    known = set(task_names())
    chosen = sorted(set(tasks))
    if unknown := [name for name in chosen if name not in known]:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; the API's tasks are {', '.join(sorted(known))}")
    return chosen


def issue(name: str, *, tasks: Iterable[str], can_read_results: bool = False, rate_limit: int | None = None,
          expires_at: datetime | None = None, created_by: str = "") -> tuple[Any, str]:
    """Create a token; returns the model and the token itself, which exists nowhere else afterwards."""
    from apps.main.models import ApiToken

    token = new_token()
    record = ApiToken(name=name, shown_part=shown_part(token), digest=digest(token), tasks=checked_tasks(tasks),
                      can_read_results=can_read_results, rate_limit=rate_limit, expires_at=expires_at,
                      created_by=created_by)
    record.full_clean()
    record.save()
    return record, token


def sync_environment_token(value: str | None, *, using: str = "default") -> str:
    """Make the token ``value`` (API_TOKEN) the ``environment`` token; returns what was done."""
    from apps.main.models import ApiToken

    if not value:
        return "none configured"
    with transaction.atomic(using=using):
        tokens = ApiToken.objects.using(using).select_for_update()
        existing = tokens.filter(name=ENVIRONMENT_TOKEN_NAME).first()
        if existing is None:
            ApiToken.objects.using(using).create(
                name=ENVIRONMENT_TOKEN_NAME, shown_part=shown_part(value), digest=digest(value), tasks=task_names(),
                can_read_results=True, created_by=f"{ENVIRONMENT_TOKEN_NAME} variable API_TOKEN")
            return "created"
        if existing.revoked_at is not None:
            return "revoked (kept revoked)"
        if existing.digest == digest(value):
            return "unchanged"
        existing.digest, existing.shown_part = digest(value), shown_part(value)
        existing.save(update_fields=["digest", "shown_part"])
        return "replaced (API_TOKEN changed)"


def sync_after_migrate(using: str = "default", apps: Any = None, **_: Any) -> None:
    """post_migrate receiver (apps.main.apps): each migrate (the chart's Job, make up, a test database)
    brings the environment token in line with API_TOKEN."""
    try:
        if apps is not None:
            apps.get_model("main", "ApiToken")
    except LookupError:  # migrated back to before the token table
        return
    outcome = sync_environment_token(settings.API_TOKEN, using=using)
    logger.info("API token %r from API_TOKEN: %s", ENVIRONMENT_TOKEN_NAME, outcome)
