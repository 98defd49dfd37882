from django.apps import AppConfig


class MainConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "apps.main"
    label = "main"
    verbose_name = "Background tasks"

    def ready(self) -> None:
        from apps.main import signals  # noqa: F401 — connects post_migrate seeding and logging context
