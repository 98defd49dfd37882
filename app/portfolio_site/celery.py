"""The Celery application: configured from Django settings (CELERY_* names), tasks autodiscovered."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portfolio_site.settings.dev")

app = Celery("portfolio_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Worker-side hooks (dead letters for undecodable messages, liveness heartbeat, metrics) attach here.
app.steps["consumer"].add("apps.main.worker_steps:LivenessHeartbeat")
app.conf.worker_consumer = "apps.main.worker_steps:DeadLetteringConsumer"
