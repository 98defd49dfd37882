from django.contrib import admin
from django.urls import include, path

from apps.main import health
from apps.main.metrics.web import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/", include("apps.main.api.urls")),
]
