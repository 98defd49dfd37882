from django.contrib import admin
from django.urls import include, path

from apps.main import health
from apps.main.api.errors import api_route_not_found
from apps.main.landing import landing
from apps.main.metrics.web import metrics_view

urlpatterns = [
    # Development only (DEBUG): links to the local stack's pages; else the JSON 404 below.
    path("", landing, name="landing"),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/", include("apps.main.api.urls")),
    # "/api" itself: else APPEND_SLASH would redirect it (or, for a POST with DEBUG on, raise).
    path("api", api_route_not_found, name="api-route-not-found"),
]

# Error pages when DEBUG is off: JSON with a reason, never a traceback (apps.main.api.errors).
handler400 = "apps.main.api.errors.bad_request"
handler403 = "apps.main.api.errors.permission_denied"
handler404 = "apps.main.api.errors.page_not_found"
handler500 = "apps.main.api.errors.server_error"
