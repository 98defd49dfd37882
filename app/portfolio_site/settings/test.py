"""The test suite: real Redis and database from the environment, short retry delays."""

from portfolio_site.settings.base import *  # noqa: F403
from portfolio_site.settings.base import DATA_DIR, env

EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = env.get("EMAIL_FILE_PATH", str(DATA_DIR / "mail"))
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
API_TOKEN = env.get(env.API_TOKEN, "test-token")
# The whole session shares the environment token's rate window; tests of the limit set their own.
API_RATE_LIMIT = env.get_int(env.API_RATE_LIMIT, 1_000_000)

# Same shape as production, a hundredth of the waiting.
RETRY_BACKOFF_MAX = 2
RETRY_POLICIES = {
    "send_notification": {"max_retries": 3, "base_delay": 0.2},
    "process_user_action": {"max_retries": 2, "base_delay": 0.1},
}
CELERY_TASK_DEFAULT_RETRY_DELAY = 0.1
BEAT_LEASE_TTL = env.get_int(env.BEAT_LEASE_TTL, 3)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Extra task modules for the fault suite's workers (tests.faults.tasks: a task that kills its process).
CELERY_IMPORTS = tuple(env.get_list("TEST_TASK_MODULES"))
