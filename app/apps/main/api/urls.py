from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from apps.main.api.serializers import TASK_ARGUMENTS
from apps.main.api.views import TaskStatusView, UnknownTask, enqueue_view

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(permission_classes=[]), name="api-schema"),
    path("tasks/<uuid:task_id>/", TaskStatusView.as_view(), name="task-status"),
    *(path(f"tasks/{name}/", enqueue_view(name).as_view(), name=f"enqueue-{name}") for name in TASK_ARGUMENTS),
    path("tasks/<str:name>/", UnknownTask.as_view(), name="unknown-task"),
]
