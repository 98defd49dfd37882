"""The Celery application: configured from Django settings (CELERY_* names), tasks autodiscovered."""

import os

from celery import Celery, signals

from apps.main import redis_transport, worker_context, worker_control  # noqa: F401 (worker_control registers)

# Before any broker connection: redis:// and sentinel:// URLs get the project's transport (apps.main.redis_transport).
redis_transport.install()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portfolio_site.settings.dev")

# Every task message this app publishes passes through apps.main.large_payloads (compression, claim-check, limit).
app = Celery("portfolio_site", amqp="apps.main.large_payloads:PayloadAMQP")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Worker-side hooks (dead letters for undecodable messages, liveness heartbeat, metrics) attach here.
app.steps["consumer"].add("apps.main.worker_steps:LivenessHeartbeat")
app.steps["consumer"].add("apps.main.worker_steps:RestoreOrphanedMessages")
app.steps["consumer"].add("apps.main.deadletter_spool:DeadLetterSpoolFlusher")
app.conf.worker_consumer = "apps.main.worker_steps:DeadLetteringConsumer"
# Before the pool forks: worker-only behaviour (the result backend waiting out a database restart).
signals.worker_init.connect(worker_context.mark_worker, weak=False)
