"""The local stack's admin user: created on its first start, never changed afterwards.

``start_celery_services.py`` runs it after the migrations with the password it keeps in .local/ (the
environment variable LOCAL_ADMIN_PASSWORD). It refuses to run with DEBUG off: production never creates
users (there: ``manage.py createsuperuser``).
"""

from __future__ import annotations

import enum
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from portfolio_site import environment as env

LOCAL_ADMIN_USER = "admin"


class AdminState(enum.Enum):
    CREATED = "created"
    #: It exists and the saved password logs in to the admin.
    KEPT = "kept"
    #: It exists but the saved password does not log in (changed in the admin, or a database made
    #: elsewhere), or the user may not enter the admin: left as it is, the stack says so.
    MISMATCH = "mismatch"


def ensure_local_admin(password: str, username: str = LOCAL_ADMIN_USER) -> AdminState:
    """Create the superuser ``username`` unless it exists; an existing one is only checked, never reset."""
    if not settings.DEBUG:
        raise CommandError("ensure_local_admin is for the local stack (DEBUG on); in production use createsuperuser")
    if not password:
        raise CommandError(f"{env.LOCAL_ADMIN_PASSWORD} is empty")
    user_model = get_user_model()
    user = user_model.objects.filter(**{user_model.USERNAME_FIELD: username}).first()
    if user is None:
        user_model.objects.create_superuser(username, email="", password=password)
        return AdminState.CREATED
    if user.is_active and user.is_staff and user.check_password(password):
        return AdminState.KEPT
    return AdminState.MISMATCH


class Command(BaseCommand):
    help = (f"Create the local stack's superuser {LOCAL_ADMIN_USER!r} with the password in "
            f"{env.LOCAL_ADMIN_PASSWORD} unless it exists (DEBUG only; an existing user is never changed).")

    def handle(self, *args: Any, **options: Any) -> str:
        # The password comes from the environment, never the command line: `ps` shows arguments.
        state = ensure_local_admin(env.get(env.LOCAL_ADMIN_PASSWORD) or "")
        return f"admin user {LOCAL_ADMIN_USER!r}: {state.value}"
