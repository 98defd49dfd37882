"""Local development: DEBUG, mail to the console, and the seed's log files under logs/."""

from embedded import stack_env

stack_env.load_defaults()  # a running `make up` stack, before base reads the environment

from portfolio_site.settings.base import *  # noqa: E402, F403
from portfolio_site.settings.base import BASE_DIR, LOGGING, env  # noqa: E402

DEBUG = True
EMAIL_BACKEND = env.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")

LOG_DIR = env.get(env.LOG_DIR, str(BASE_DIR.parent / "logs"))
_files = {
    "django_file": ("django.log", "INFO", None),
    "performance_file": ("performance.log", "INFO", ["task_durations"]),
    "errors_file": ("errors.log", "ERROR", None),
}
LOGGING["filters"] = {"task_durations": {"()": "apps.main.logging.TaskDurationFilter"}}
for handler, (filename, level, filters) in _files.items():
    LOGGING["handlers"][handler] = {
        "class": "apps.main.logging.DirectoryFileHandler",
        "filename": f"{LOG_DIR}/{filename}",
        "formatter": "json",
        "level": level,
        "maxBytes": 10 * 1024 * 1024,
        "backupCount": 3,
        **({"filters": filters} if filters else {}),
    }
LOGGING["root"]["handlers"] = ["stdout", *_files]
