"""``manage.py api_tokens create|list|revoke``: the task API's tokens (apps.main.api.tokens)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Max, Q
from django.utils import timezone

from apps.main.api import tokens

DURATION = re.compile(r"^(\d+)([dhm])$")
UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def duration(text: str) -> timedelta:
    """``90d``, ``12h`` or ``30m``."""
    match = DURATION.match(text.strip())
    if not match:
        raise ValueError(f"expected a duration such as 90d, 12h or 30m, got {text!r}")
    return timedelta(**{UNITS[match[2]]: int(match[1])})


class Command(BaseCommand):
    help = ("Issue, list and revoke the task API's bearer tokens. A token is printed once, when it is created; "
            "only its SHA-256 digest is stored.")

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="command", required=True)
        create = commands.add_parser("create", help="issue a token and print it (once)")
        create.add_argument("name", help="who or what uses it (unique)")
        scope = create.add_mutually_exclusive_group(required=True)
        scope.add_argument("--tasks", help="comma-separated short names of the tasks it may enqueue")
        scope.add_argument("--all-tasks", action="store_true", help="every task of the API's allow-list")
        scope.add_argument("--no-tasks", action="store_true", help="none (a token that only reads results)")
        create.add_argument("--read-results", action="store_true", help="may read task states and results")
        create.add_argument("--rate-limit", type=int, help="calls per window (default: API_RATE_LIMIT)")
        create.add_argument("--expires-in", help="refused after this long: 90d, 12h, 30m (default: never)")
        create.add_argument("--quiet", action="store_true", help="print the token only (for scripts)")
        listing = commands.add_parser("list", help="every token with its scope, state and last use")
        listing.add_argument("--json", dest="as_json", action="store_true", help="one JSON array")
        revoke = commands.add_parser("revoke", help="refuse a token from now on, for good")
        revoke.add_argument("token", help="its name or id")

    def handle(self, *args: Any, command: str, **options: Any) -> None:
        getattr(self, f"_{command}")(**options)

    def _create(self, *, name: str, tasks: str | None, all_tasks: bool, no_tasks: bool, read_results: bool,
                rate_limit: int | None, expires_in: str | None, quiet: bool, **_: Any) -> None:
        chosen = tokens.task_names() if all_tasks else [] if no_tasks else [t.strip() for t in tasks.split(",")]
        if rate_limit is not None and rate_limit < 1:
            raise CommandError("--rate-limit must be at least 1")
        try:
            expires_at = timezone.now() + duration(expires_in) if expires_in else None
            record, token = tokens.issue(name, tasks=[t for t in chosen if t], can_read_results=read_results,
                                         rate_limit=rate_limit, expires_at=expires_at,
                                         created_by="manage.py api_tokens")
        except (ValueError, ValidationError) as exc:
            raise CommandError(_message(exc)) from None
        if quiet:
            self.stdout.write(token)
            return
        self.stdout.write(f"Created API token {record.pk} {record.name!r}: {_scope(record)}.")
        self.stdout.write("Copy it now; it is not stored and cannot be shown again:")
        self.stdout.write(token)

    def _list(self, *, as_json: bool, **_: Any) -> None:
        from apps.main.models import ApiAuditEvent, ApiToken

        # Last used: the last call it authenticated (a 401 names a token only when it was revoked or expired).
        used = dict(ApiAuditEvent.objects.exclude(status=401).values("token").annotate(last=Max("at"))
                    .values_list("token", "last"))
        now = timezone.now()
        rows = [{
            "id": t.pk, "name": t.name, "token": f"{t.shown_part}…", "tasks": t.tasks,
            "read_results": t.can_read_results, "rate_limit": t.rate_limit,
            "state": t.refusal(now) or "active", "created_at": t.created_at, "expires_at": t.expires_at,
            "last_used_at": used.get(t.pk),
        } for t in ApiToken.objects.order_by("pk")]
        if as_json:
            self.stdout.write(json.dumps(rows, default=lambda value: value.isoformat(), indent=2))
            return
        if not rows:
            self.stdout.write("No API tokens. Issue one: manage.py api_tokens create NAME --tasks health_check")
            return
        for row in rows:
            last = row["last_used_at"].isoformat(timespec="seconds") if row["last_used_at"] else "never"
            self.stdout.write(
                f"{row['id']:>4}  {row['name']:<24} {row['token']:<14} {row['state']:<14} "
                f"tasks={','.join(row['tasks']) or '-'} results={'yes' if row['read_results'] else 'no'} "
                f"rate={row['rate_limit'] or 'default'} last used {last}")

    def _revoke(self, *, token: str, **_: Any) -> None:
        from apps.main.models import ApiToken

        query = Q(name=token) | (Q(pk=int(token)) if token.isdigit() else Q())
        record = ApiToken.objects.filter(query).first()
        if record is None:
            raise CommandError(f"no API token named {token!r} (nor with that id); see: manage.py api_tokens list")
        if record.revoked_at is not None:
            self.stdout.write(f"API token {record.pk} {record.name!r} was already revoked at {record.revoked_at}.")
            return
        record.revoked_at = timezone.now()
        record.save(update_fields=["revoked_at"])
        self.stdout.write(f"Revoked API token {record.pk} {record.name!r}: every call with it is refused (401).")


def _scope(record: Any) -> str:
    tasks = ", ".join(record.tasks) or "no task"
    rate = f"{record.rate_limit} calls per window" if record.rate_limit else "the default rate limit"
    expires = f", expires {record.expires_at.isoformat(timespec='seconds')}" if record.expires_at else ""
    return f"may enqueue {tasks}; {'may' if record.can_read_results else 'may not'} read results; {rate}{expires}"


def _message(exc: Exception) -> str:
    if isinstance(exc, ValidationError) and hasattr(exc, "message_dict"):
        return "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
    return " ".join(getattr(exc, "messages", [str(exc)]))
