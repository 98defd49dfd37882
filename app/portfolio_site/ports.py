"""Network ports every role listens on: the chart's defaults and the local stack read these."""

WEB_PORT = 8000
FLOWER_PORT = 5555
#: prometheus_client HTTP server inside each worker pod (celery-exporter's customary port).
WORKER_METRICS_PORT = 9808
#: The queue exporter's metrics endpoint.
EXPORTER_PORT = 9809
REDIS_PORT = 6379
POSTGRES_PORT = 5432
