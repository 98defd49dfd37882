from django.apps import AppConfig
from django.db.models.signals import post_migrate


class MainConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "apps.main"
    label = "main"
    verbose_name = "Background tasks"

    def ready(self) -> None:
        # Register the tasks in every Django process (web, admin, commands), not only in workers:
        # requeueing a dead letter checks that its task exists.
        from apps.main import signals, system_checks, tasks  # noqa: F401
        from apps.main.api import schema  # noqa: F401  (drf-spectacular extensions register on import)
        from apps.main.api.tokens import sync_after_migrate

        # After this app's migrations: the token table exists (also in a fresh test database).
        post_migrate.connect(sync_after_migrate, sender=self, dispatch_uid="apps.main.api.tokens.sync")
