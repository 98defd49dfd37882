"""Names of the Redis keys the app's processes share (beside Celery's own): one place to find them.

Importable without Django set up, so that tools outside the app (the fault suite) use the same names.
"""

#: The beat lease (``SET NX PX``): the one beat that holds it schedules.
BEAT_LEASE_KEY = "celery-stack:beat:lease"
#: Unix time of the newest tick of the lease holder: the exporter turns it into a metric.
BEAT_LAST_TICK_KEY = "celery-stack:beat:last-tick"
#: Redelivery count of one attempt of a task (apps.main.delivery), by task id and retry number.
REDELIVERIES_KEY = "celery-stack:redeliveries:{task_id}:{retries}"
#: Dead letters waiting for the database (apps.main.deadletter_spool), with ``:processing`` and
#: ``:unstorable`` lists beside it.
DEAD_LETTER_SPOOL_KEY = "celery-stack:deadletter-spool"
#: Set by a worker's main process when it begins a clean shutdown (SIGTERM, SIGINT: scale-down, rollout), per
#: node name; deleted when a worker of that name is ready again. The queue exporter never reports such a worker
#: as down (``celery_worker_up`` 0), only one that stopped answering without it (SIGKILL, OOM, node loss).
WORKER_STOPPED_KEY = "celery-stack:worker-stopped:{node}"
#: Requests of one API token in one rate-limit window (apps.main.api.ratelimit), by token id and window index.
API_RATE_LIMIT_KEY = "celery-stack:api-rate:{token}:{window}"
