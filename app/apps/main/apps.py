from django.apps import AppConfig


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
